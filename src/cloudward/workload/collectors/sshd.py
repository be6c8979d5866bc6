"""The effective OpenSSH server configuration: password and root logins, empty passwords, MaxAuthTries, Match overrides.

Why: password logins and root logins over SSH are how brute-force crews (TeamTNT among them)
get in and spread, and `PasswordAuthentication no` in one file means nothing when an earlier
`Include`d drop-in says `yes` — sshd keeps the FIRST value it reads for each keyword. This
collector reads /etc/ssh/sshd_config the way sshd does: keywords case-insensitive, `Keyword value`
or `Keyword=value`, `Include` expanded in place (globs sorted, relative names under /etc/ssh,
depth and file count bounded), the first value winning, sshd's compiled-in default when a keyword
is never set. `Match` blocks do not change the global facts; each is reported on its own (subject
`sshd_match`) with its conditions, what it sets and the global value it overrides, so a rule can
see `Match User deploy` + `PasswordAuthentication yes` on a host that is key-only otherwise.

On the live root, when /usr/sbin/sshd exists, `sshd -T` (the daemon's own dump of its effective
configuration) is preferred for the global facts; if it fails (no host keys, say) the parsed
values stand and the failure is kept in `sshd_t_error`. The binary of an offline root is never
run. Subjects: `sshd` (one, key "sshd") and `sshd_match` (one per Match block).
"""

from __future__ import annotations

import fnmatch
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cloudward.workload.observation import HostContext, HostObservation

__all__ = ["DEFAULTS", "SshdConfig", "collect", "parse_sshd_config"]

MAIN = "/etc/ssh/sshd_config"
SSHDIR = "/etc/ssh"
MAX_DEPTH = 16  # sshd's own Include recursion limit
MAX_FILES = 256
MAX_FILE_BYTES = 1024 * 1024
MAX_GLOB_MATCHES = 512
SSHD_BINARY = "/usr/sbin/sshd"

# keyword (lower case) -> fact name; aliases map to the same fact.
KEYWORDS = {
    "passwordauthentication": "password_authentication",
    "kbdinteractiveauthentication": "kbd_interactive_authentication",
    "challengeresponseauthentication": "kbd_interactive_authentication",  # deprecated alias
    "permitrootlogin": "permit_root_login",
    "permitemptypasswords": "permit_empty_passwords",
    "pubkeyauthentication": "pubkey_authentication",
    "maxauthtries": "max_auth_tries",
    "usepam": "use_pam",
    "authenticationmethods": "authentication_methods",
    "permituserenvironment": "permit_user_environment",
    "hostbasedauthentication": "hostbased_authentication",
    "ignorerhosts": "ignore_rhosts",
    "x11forwarding": "x11_forwarding",
    "allowtcpforwarding": "allow_tcp_forwarding",
    "gatewayports": "gateway_ports",
    "allowusers": "allow_users",
    "allowgroups": "allow_groups",
    "denyusers": "deny_users",
    "denygroups": "deny_groups",
    "port": "port",
    "listenaddress": "listen_address",
}
# Keywords sshd accumulates rather than taking the first value of.
_ACCUMULATE = {"allow_users", "allow_groups", "deny_users", "deny_groups", "port", "listen_address"}

# OpenSSH's compiled-in defaults (servconf.c fill_default_server_options, OpenSSH 8.7+).
DEFAULTS: dict[str, Any] = {
    "password_authentication": "yes",
    "kbd_interactive_authentication": "yes",
    "permit_root_login": "prohibit-password",
    "permit_empty_passwords": "no",
    "pubkey_authentication": "yes",
    "max_auth_tries": 6,
    "use_pam": "no",
    "authentication_methods": "any",
    "permit_user_environment": "no",
    "hostbased_authentication": "no",
    "ignore_rhosts": "yes",
    "x11_forwarding": "no",
    "allow_tcp_forwarding": "yes",
    "gateway_ports": "no",
}

_GLOB_CHARS = re.compile(r"[*?\[]")


def _normalise(fact: str, args: list[str]) -> Any:
    if fact in _ACCUMULATE:
        return list(args)
    value = " ".join(args) if fact == "authentication_methods" else (args[0] if args else "")
    if fact == "max_auth_tries":
        try:
            return int(value)
        except ValueError:
            return value
    if fact == "authentication_methods":
        return value
    value = value.lower()
    if fact == "permit_root_login" and value == "without-password":
        return "prohibit-password"  # the old spelling of the same setting
    return value


def _split(line: str) -> tuple[str, list[str]] | None:
    """`Keyword value ...` or `Keyword=value`, with sshd's double quotes; None for blank/comment."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    match = re.match(r"([^\s=]+)\s*(?:=\s*|\s+|$)(.*)$", text)
    if not match:
        return None
    keyword, rest = match.group(1), match.group(2)
    return keyword, _arguments(rest)


def _arguments(text: str) -> list[str]:
    """Whitespace-separated words, double quotes grouping; a word starting with `#` ends the line."""
    args: list[str] = []
    for match in re.finditer(r'"([^"]*)"?|(\S+)', text):
        quoted, bare = match.group(1), match.group(2)
        if bare is not None and bare.startswith("#"):
            break
        args.append(quoted if quoted is not None else bare)
    return args


@dataclass
class MatchBlock:
    criteria: str
    path: str
    line: int
    settings: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)


@dataclass
class SshdConfig:
    values: dict[str, Any] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)  # fact -> "file:line"
    files: list[str] = field(default_factory=list)
    matches: list[MatchBlock] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)  # messages also reported through ctx.error
    include_limit_hit: bool = False

    def effective(self) -> dict[str, Any]:
        out = dict(DEFAULTS)
        out.update(self.values)
        return out


class _Parser:
    def __init__(self, ctx: HostContext) -> None:
        self.ctx = ctx
        self.config = SshdConfig()
        self.reading: list[str] = []  # the include chain, to catch loops

    def error(self, item: str, message: str) -> None:
        self.config.errors.append(f"{item}: {message}")
        self.ctx.error(item, message)

    def glob(self, pattern: str) -> list[str]:
        """Expand an Include pattern inside the root (sorted, like glob(3); `*` skips dotfiles)."""
        if not pattern.startswith("/"):
            pattern = f"{SSHDIR}/{pattern}"
        if not _GLOB_CHARS.search(pattern):
            return [pattern]
        paths = ["/"]
        for part in [p for p in pattern.split("/") if p]:
            nxt: list[str] = []
            for base in paths:
                prefix = base.rstrip("/")
                if not _GLOB_CHARS.search(part):
                    nxt.append(f"{prefix}/{part}")
                    continue
                try:
                    names = self.ctx.root.listdir(base)
                except OSError:
                    continue
                nxt.extend(f"{prefix}/{n}" for n in names
                           if fnmatch.fnmatchcase(n, part) and not (n.startswith(".") and not part.startswith(".")))
            paths = sorted(nxt)[:MAX_GLOB_MATCHES]
        return [p for p in paths if self._lexists(p)]

    def _lexists(self, path: str) -> bool:
        try:
            self.ctx.root.lstat(path)
        except OSError:
            return False
        return True

    def read(self, path: str, depth: int, match: MatchBlock | None) -> None:
        if path in self.reading:
            self.error(path, f"Include loop: {' -> '.join([*self.reading, path])}; the loop was not followed")
            return
        if depth > MAX_DEPTH:
            self.config.include_limit_hit = True
            self.error(path, f"Include nesting deeper than {MAX_DEPTH} (sshd refuses this too); not read")
            return
        if len(self.config.files) >= MAX_FILES:
            self.config.include_limit_hit = True
            self.error(path, f"more than {MAX_FILES} sshd configuration files; the rest were not read")
            return
        try:
            data = self.ctx.root.read_bytes(path, MAX_FILE_BYTES)
        except FileNotFoundError:
            if depth == 0:
                return
            self.error(path, "included sshd configuration file is missing")
            return
        except OSError as exc:
            self.error(path, f"cannot read sshd configuration: {exc.strerror or exc}")
            return
        if b"\x00" in data:
            self.error(path, "binary content where an sshd configuration was expected; not parsed")
            return
        self.config.files.append(path)
        self.reading.append(path)
        try:
            self._lines(path, data.decode("utf-8", errors="replace"), depth, match)
        finally:
            self.reading.pop()

    def _lines(self, path: str, text: str, depth: int, match: MatchBlock | None) -> None:
        # A Match block opened in an included file ends with that file; one opened by the includer
        # carries into the file it includes (sshd: Include inside Match is conditional inclusion).
        for number, raw in enumerate(text.splitlines(), 1):
            parsed = _split(raw)
            if parsed is None:
                continue
            keyword, args = parsed
            lower = keyword.lower()
            if lower == "match":
                # `Match all` applies to every connection, yet (like any Match) overrides the globals.
                criteria = " ".join(args)
                match = MatchBlock(criteria=criteria, path=path, line=number)
                self.config.matches.append(match)
                continue
            if lower == "include":
                for pattern in args:
                    for included in self.glob(pattern):
                        self.read(included, depth + 1, match)
                continue
            fact = KEYWORDS.get(lower)
            if fact is None or not args:
                continue  # not a keyword we track, or no value (sshd itself refuses such a line)
            value = _normalise(fact, args)
            where = f"{path}:{number}"
            target_values = match.settings if match is not None else self.config.values
            target_sources = match.sources if match is not None else self.config.sources
            if fact in _ACCUMULATE:
                target_values.setdefault(fact, []).extend(value)
                target_sources.setdefault(fact, where)
            elif fact not in target_values:
                target_values[fact] = value
                target_sources[fact] = where


def parse_sshd_config(ctx: HostContext, path: str = MAIN) -> SshdConfig:
    parser = _Parser(ctx)
    parser.read(path, 0, None)
    return parser.config


def _sshd_t(ctx: HostContext) -> tuple[dict[str, Any] | None, str]:
    """`sshd -T` on the live root only: (facts, "") or (None, why it failed)."""
    if not ctx.live or not ctx.root.is_file(SSHD_BINARY):
        return None, ""
    try:
        proc = subprocess.run([SSHD_BINARY, "-T"], capture_output=True, timeout=20, check=False,
                              stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        return None, f"sshd -T could not run: {exc}"
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", errors="replace").strip().splitlines()
        return None, f"sshd -T failed (exit {proc.returncode}): {message[-1] if message else 'no output'}"
    values: dict[str, Any] = {}
    for line in proc.stdout.decode("utf-8", errors="replace").splitlines():
        keyword, _, rest = line.strip().partition(" ")
        fact = KEYWORDS.get(keyword.lower())
        if fact is None:
            continue
        args = rest.split()
        if fact in _ACCUMULATE:
            values.setdefault(fact, []).extend(args)
        elif fact not in values:
            values[fact] = _normalise(fact, args)
    return values, ""


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    try:
        ctx.root.lstat(MAIN)
    except FileNotFoundError:
        return  # no OpenSSH server configured on this root
    except OSError as exc:
        ctx.error(MAIN, f"cannot resolve sshd_config: {exc.strerror or exc}")
        return
    config = parse_sshd_config(ctx)
    if not config.files:
        return  # unreadable main file: already reported
    parsed = config.effective()
    facts: dict[str, Any] = dict(parsed)
    sources = {name: config.sources.get(name, "default") for name in DEFAULTS}
    facts["effective_from"] = "parsed"
    live, failure = _sshd_t(ctx)
    if live is not None:
        disagree = sorted(k for k in DEFAULTS if k in live and live[k] != parsed.get(k))
        for name, value in live.items():
            if name in DEFAULTS:
                facts[name] = value
        facts["effective_from"] = "sshd -T"
        if disagree:
            facts["parsed_differs"] = disagree
    elif failure:
        facts["sshd_t_error"] = failure
    for name in ("allow_users", "allow_groups", "deny_users", "deny_groups"):
        facts[name] = config.values.get(name, [])
    facts["sources"] = sources
    facts["files"] = list(config.files)
    facts["include_limit_hit"] = config.include_limit_hit
    facts["match_blocks"] = [{"criteria": m.criteria, "where": f"{m.path}:{m.line}", "settings": dict(m.settings)}
                             for m in config.matches]
    facts["match_enables_password"] = [m.criteria for m in config.matches
                                       if m.settings.get("password_authentication") == "yes"]
    yield HostObservation("sshd", facts, path=MAIN, key="sshd")
    for block in config.matches:
        match_facts: dict[str, Any] = {"criteria": block.criteria, **block.settings,
                                       "sources": dict(block.sources),
                                       "global": {k: facts.get(k) for k in DEFAULTS}}
        yield HostObservation("sshd_match", match_facts, path=block.path, line=block.line,
                              key=f"{block.path}|Match {block.criteria}")
