"""Suricata classtypes and how a signature's severity is decided.

The classtype names and priorities are the ones Suricata ships in `classification.config` (the
Snort-era list plus the names Emerging Threats added), so rules written for Suricata load here
unchanged. A user can add their own with a file in the same `config classification:` format.

Severity, in this order:
1. `metadata: signature_severity X` (the Emerging Threats convention): Critical -> critical,
   Major -> high, Minor -> medium, Informational / Audit -> info; cloudward's own severity names
   (High, Medium, Low, Info) are accepted too;
2. the rule's `priority` keyword, else its classtype's priority: 1 -> high, 2 -> medium, 3 -> low,
   4 and above -> info;
3. no classtype and no priority: low (Suricata's default priority is 3).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cloudward.core.severity import Severity


@dataclass(frozen=True)
class Classtype:
    name: str
    description: str
    priority: int


_BUILTIN = """
not-suspicious,Not Suspicious Traffic,3
unknown,Unknown Traffic,3
bad-unknown,Potentially Bad Traffic,2
attempted-recon,Attempted Information Leak,2
successful-recon-limited,Information Leak,2
successful-recon-largescale,Large Scale Information Leak,2
attempted-dos,Attempted Denial of Service,2
successful-dos,Denial of Service,2
attempted-user,Attempted User Privilege Gain,1
unsuccessful-user,Unsuccessful User Privilege Gain,1
successful-user,Successful User Privilege Gain,1
attempted-admin,Attempted Administrator Privilege Gain,1
successful-admin,Successful Administrator Privilege Gain,1
rpc-portmap-decode,Decode of an RPC Query,2
shellcode-detect,Executable code was detected,1
string-detect,A suspicious string was detected,3
suspicious-filename-detect,A suspicious filename was detected,2
suspicious-login,An attempted login using a suspicious username was detected,2
system-call-detect,A system call was detected,2
tcp-connection,A TCP connection was detected,4
trojan-activity,A Network Trojan was detected,1
unusual-client-port-connection,A client was using an unusual port,2
network-scan,Detection of a Network Scan,3
denial-of-service,Detection of a Denial of Service Attack,2
non-standard-protocol,Detection of a non-standard protocol or event,2
protocol-command-decode,Generic Protocol Command Decode,3
web-application-activity,Access to a potentially vulnerable web application,2
web-application-attack,Web Application Attack,1
misc-activity,Misc activity,3
misc-attack,Misc Attack,2
icmp-event,Generic ICMP event,3
inappropriate-content,Inappropriate Content was Detected,1
policy-violation,Potential Corporate Privacy Violation,1
default-login-attempt,Attempt to login by a default username and password,2
sdf,Sensitive Data,2
targeted-activity,Targeted Malicious Activity was Detected,1
exploit-kit,Exploit Kit Activity Detected,1
external-ip-check,Device Retrieving External IP Address Detected,2
domain-c2,Domain Observed Used for C2 Detected,1
pup-activity,Possibly Unwanted Program Detected,2
credential-theft,Successful Credential Theft Detected,1
social-engineering,Possible Social Engineering Attempted,2
coin-mining,Crypto Currency Mining Activity Detected,2
command-and-control,Malware Command and Control Activity Detected,1
"""

_LINE = re.compile(r"^\s*config\s+classification\s*:\s*([^,]+),([^,]*),\s*(\d+)\s*$")


def _parse_table(text: str, source: str, require_prefix: bool) -> dict[str, Classtype]:
    table: dict[str, Classtype] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line if require_prefix else f"config classification: {line}")
        if match is None:
            raise ValueError(f"{source}:{number}: not a `config classification: name,description,priority` line")
        name = match.group(1).strip()
        table[name] = Classtype(name, match.group(2).strip(), int(match.group(3)))
    return table


BUILTIN_CLASSTYPES = _parse_table(_BUILTIN, "builtin classification", require_prefix=False)


def load_classification(path: Path) -> dict[str, Classtype]:
    """Suricata's classification.config format; ValueError names the file and line."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: cannot read classification file: {exc}") from None
    return _parse_table(text, str(path), require_prefix=True)


_SIGNATURE_SEVERITY = {
    "critical": Severity.CRITICAL, "major": Severity.HIGH, "minor": Severity.MEDIUM,
    "informational": Severity.INFO, "audit": Severity.INFO,
    # cloudward's own names, for a level the ET words do not have (low)
    "high": Severity.HIGH, "medium": Severity.MEDIUM, "low": Severity.LOW, "info": Severity.INFO,
}


def severity_of(priority: int | None, signature_severity: str | None) -> Severity:
    if signature_severity:
        found = _SIGNATURE_SEVERITY.get(signature_severity.strip().lower())
        if found is not None:
            return found
    if priority is None:
        return Severity.LOW
    if priority <= 1:
        return Severity.HIGH
    if priority == 2:
        return Severity.MEDIUM
    if priority == 3:
        return Severity.LOW
    return Severity.INFO
