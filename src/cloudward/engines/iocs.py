"""Indicators of compromise as data, shared by every capability that meets them.

Why one file: the same actor domain shows up in a cron line on a host (workload), in a DNS query
or HTTP Host header (network) and in a script inside a bucket (storage). `cloudward/data/iocs.yaml`
lists each indicator with its kind, source and date, so a defender can tell where it came from
and drop stale ones; users add their own file with the same shape (`load_iocs(extra=...)`).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's safe loader: the built-in list is large

__all__ = ["KINDS", "Indicator", "Iocs", "load_iocs"]

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
EMPTY_MD5 = "d41d8cd98f00b204e9800998ecf8427e"

# kind -> what its value is
KINDS = {
    "domain": "a DNS name (matches itself and its subdomains)",
    "ip": "an IPv4/IPv6 address or network",
    "sha256": "a file's SHA-256",
    "md5": "a file's MD5 (older reports and ClamAV .hdb lists give only this)",
    "key_comment": "the comment field of an SSH public key planted by an actor",
    "process_name": "a process or binary name used by an actor or a miner",
    "pool_port": "a TCP port typical of mining pools",
    "pool_domain": "a mining pool's DNS name (matches itself and its subdomains)",
    "path": "a file path an actor drops or touches",
    "module_name": "the name of a kernel module (LKM rootkit) used by an actor",
}


@dataclass(frozen=True, slots=True)
class Indicator:
    kind: str
    value: str
    source: str
    date: str
    note: str = ""


@dataclass(slots=True)
class Iocs:
    indicators: list[Indicator] = field(default_factory=list)
    _by_kind: dict[str, dict[str, Indicator]] = field(default_factory=dict)
    _networks: list[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, Indicator]] = field(default_factory=list)
    _domain_automaton: Any = None

    def add(self, indicator: Indicator) -> None:
        self.indicators.append(indicator)
        value = indicator.value.lower() if indicator.kind != "path" else indicator.value
        self._by_kind.setdefault(indicator.kind, {})[value] = indicator
        if indicator.kind == "ip":
            self._networks.append((ipaddress.ip_network(indicator.value, strict=False), indicator))
        if indicator.kind == "domain":
            self._domain_automaton = None

    def values(self, kind: str) -> set[str]:
        return set(self._by_kind.get(kind, {}))

    def get(self, kind: str, value: str) -> Indicator | None:
        return self._by_kind.get(kind, {}).get(value.lower() if kind != "path" else value)

    def match_ip(self, text: str) -> Indicator | None:
        try:
            address = ipaddress.ip_address(text.strip("[]"))
        except ValueError:
            return None
        return next((ind for net, ind in self._networks if address in net), None)

    def match_domain(self, name: str) -> Indicator | None:
        """The indicator for `name` or any parent domain of it."""
        labels = name.lower().rstrip(".").split(".")
        for i in range(len(labels) - 1):
            found = self.get("domain", ".".join(labels[i:]))
            if found is not None:
                return found
        return None

    def _domains(self) -> Any:
        if self._domain_automaton is None:
            import ahocorasick

            automaton = ahocorasick.Automaton()
            for name in self._by_kind.get("domain", {}):
                automaton.add_word(name, name)
            automaton.make_automaton()
            self._domain_automaton = automaton
        return self._domain_automaton

    def find_in_text(self, text: str) -> list[Indicator]:
        """Domains and IPs of the list mentioned anywhere in `text` (a script, a cron line, a URL)."""
        hits: dict[tuple[str, str], Indicator] = {}
        domains = self._by_kind.get("domain", {})
        if domains:
            lowered = text.lower()
            for end, name in self._domains().iter(lowered):
                start = end - len(name) + 1
                if _bounded(lowered, start, end + 1):
                    ind = domains[name]
                    hits[(ind.kind, ind.value)] = ind
        if self._networks:
            for match in _IPV4.finditer(text):
                start, end = match.span()
                if (start > 0 and text[start - 1] in _IP_CHARS) or (end < len(text) and text[end] in _IP_CHARS):
                    continue  # part of a longer dotted number (a version string, an OID)
                found = self.match_ip(match.group(0))
                if found is not None:
                    hits[(found.kind, found.value)] = found
        return list(hits.values())


# No lookbehind: with one, `re` cannot skip ahead to digits and tries every position (boundaries
# are checked on each match instead).
_IPV4 = re.compile(r"\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}")
_IP_CHARS = frozenset("0123456789.")


def _name_char(char: str) -> bool:
    return char.isalnum() or char in "_-"


def _bounded(text: str, start: int, end: int) -> bool:
    """A listed name at text[start:end] starts after a dot (a subdomain) or a non-name character,
    and ends where no name character follows, nor a dot that starts another label:
    `teamtnt.red.example` is a domain under `.example`, `notteamtnt.red` another domain.
    (A multi-pattern automaton plus this check, not one big regex: the regex tried the whole
    alternation at every position of every file and dominated the host audit.)"""
    if start > 0 and _name_char(text[start - 1]):
        return False
    if end < len(text):
        if _name_char(text[end]):
            return False
        if text[end] == "." and end + 1 < len(text) and _name_char(text[end + 1]):
            return False
    return True


def _parse(data: Any, source: str) -> Iterable[Indicator]:
    if not isinstance(data, Mapping) or not isinstance(data.get("indicators"), list):
        raise ValueError(f"{source}: an IOC file is a mapping with an `indicators` list")
    for n, item in enumerate(data["indicators"], 1):
        if not isinstance(item, Mapping):
            raise ValueError(f"{source}: indicator {n} is not a mapping")
        kind, value = item.get("kind"), item.get("value")
        if kind not in KINDS:
            raise ValueError(f"{source}: indicator {n}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
        if not isinstance(value, (str, int)) or str(value) == "":
            raise ValueError(f"{source}: indicator {n}: value is required")
        if not item.get("source") or not item.get("date"):
            raise ValueError(f"{source}: indicator {n} ({value}): source and date are required")
        if kind == "sha256":
            digest = str(value).lower()
            if not re.fullmatch(r"[0-9a-f]{64}", digest):
                raise ValueError(f"{source}: indicator {n}: not a SHA-256 hex digest: {value!r}")
            if digest == EMPTY_SHA256:
                raise ValueError(f"{source}: indicator {n}: {value} is the SHA-256 of an empty file and would "
                                 "match every empty file")
        if kind == "md5":
            digest = str(value).lower()
            if not re.fullmatch(r"[0-9a-f]{32}", digest):
                raise ValueError(f"{source}: indicator {n}: not an MD5 hex digest: {value!r}")
            if digest == EMPTY_MD5:
                raise ValueError(f"{source}: indicator {n}: {value} is the MD5 of an empty file and would "
                                 "match every empty file")
        if kind == "pool_port" and not (str(value).isdigit() and 0 < int(str(value)) < 65536):
            raise ValueError(f"{source}: indicator {n}: not a TCP port: {value!r}")
        if kind == "ip":
            try:
                ipaddress.ip_network(str(value), strict=False)
            except ValueError:
                raise ValueError(f"{source}: indicator {n}: not an IP address or network: {value!r}") from None
        yield Indicator(kind=kind, value=str(value), source=str(item["source"]), date=str(item["date"]),
                        note=str(item.get("note", "")))


def load_iocs(extra: Iterable[Path] = ()) -> Iocs:
    """The shipped indicator list plus the user's files (ValueError names a malformed file)."""
    iocs = Iocs()
    text = resources.files("cloudward.data").joinpath("iocs.yaml").read_text("utf-8")
    for indicator in _parse(yaml.load(text, Loader=_LOADER), "builtin:iocs.yaml"):  # noqa: S506 (a safe loader)
        iocs.add(indicator)
    for path in extra:
        try:
            data = yaml.load(path.read_text("utf-8"), Loader=_LOADER)  # noqa: S506 (a safe loader)
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read IOC file: {exc}") from None
        for indicator in _parse(data, str(path)):
            iocs.add(indicator)
    return iocs
