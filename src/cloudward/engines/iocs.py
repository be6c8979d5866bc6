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

__all__ = ["KINDS", "Indicator", "Iocs", "load_iocs"]

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

# kind -> what its value is
KINDS = {
    "domain": "a DNS name (matches itself and its subdomains)",
    "ip": "an IPv4/IPv6 address or network",
    "sha256": "a file's SHA-256",
    "key_comment": "the comment field of an SSH public key planted by an actor",
    "process_name": "a process or binary name used by an actor or a miner",
    "pool_port": "a TCP port typical of mining pools",
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
    _domain_re: re.Pattern[str] | None = None

    def add(self, indicator: Indicator) -> None:
        self.indicators.append(indicator)
        value = indicator.value.lower() if indicator.kind != "path" else indicator.value
        self._by_kind.setdefault(indicator.kind, {})[value] = indicator
        if indicator.kind == "ip":
            self._networks.append((ipaddress.ip_network(indicator.value, strict=False), indicator))
        if indicator.kind == "domain":
            self._domain_re = None

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

    def find_in_text(self, text: str) -> list[Indicator]:
        """Domains and IPs of the list mentioned anywhere in `text` (a script, a cron line, a URL)."""
        hits: dict[tuple[str, str], Indicator] = {}
        domains = self._by_kind.get("domain", {})
        if domains:
            if self._domain_re is None:
                alternatives = "|".join(sorted((re.escape(d) for d in domains), key=len, reverse=True))
                # A listed name starts after a dot (a subdomain) or a non-name character, and ends where
                # no label character follows, nor a dot that starts another label: `teamtnt.red.example`
                # is a domain under `.example`, `notteamtnt.red` another domain. (No `([\w-]+\.)*`
                # prefix group: it made the search backtrack on every word of large files.)
                self._domain_re = re.compile(rf"(?<![\w-])({alternatives})(?![\w-]|\.[\w-])", re.IGNORECASE)
            for match in self._domain_re.finditer(text):
                ind = domains[match.group(1).lower()]
                hits[(ind.kind, ind.value)] = ind
        if self._networks:
            for match in re.finditer(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])", text):
                found = self.match_ip(match.group(1))
                if found is not None:
                    hits[(found.kind, found.value)] = found
        return list(hits.values())


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
    for indicator in _parse(yaml.safe_load(text), "builtin:iocs.yaml"):
        iocs.add(indicator)
    for path in extra:
        try:
            data = yaml.safe_load(path.read_text("utf-8"))
        except (OSError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read IOC file: {exc}") from None
        for indicator in _parse(data, str(path)):
            iocs.add(indicator)
    return iocs
