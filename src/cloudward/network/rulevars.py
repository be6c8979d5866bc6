"""Rule headers' addresses and ports, and the `$VARIABLES` they may name.

`AddressSet` / `PortSet` are what a header's address and port fields mean: an include list (or
any) minus an exclude list, Suricata's reading of `[10.0.0.0/8,!10.1.0.0/16]`. `RuleVars` holds the
`$HOME_NET`-style variables (suricata.yaml's defaults unless a vars file overrides them) and
`Resolver` expands them, refusing cycles and runaway nesting. Errors are ValueErrors whose message
names the offending text; the rule parser turns them into rule errors.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ANY_ADDRESS", "ANY_PORT", "AddressSet", "PortSet", "Resolver", "RuleVars"]

MAX_VAR_DEPTH = 16
MAX_LIST_ITEMS = 4096

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class AddressSet:
    """`include` minus `exclude`; `include is None` means any address."""

    include: tuple[IPNetwork, ...] | None = None
    exclude: tuple[IPNetwork, ...] = ()

    @property
    def is_any(self) -> bool:
        return self.include is None and not self.exclude

    def contains(self, address: IPAddress) -> bool:
        if self.include is not None and not any(address in net for net in self.include):
            return False
        return not any(address in net for net in self.exclude)


ANY_ADDRESS = AddressSet()


@dataclass(frozen=True)
class PortSet:
    """`include` minus `exclude`, as inclusive ranges; `include is None` means any port."""

    include: tuple[tuple[int, int], ...] | None = None
    exclude: tuple[tuple[int, int], ...] = ()

    @property
    def is_any(self) -> bool:
        return self.include is None and not self.exclude

    def contains(self, port: int) -> bool:
        if self.include is not None and not any(lo <= port <= hi for lo, hi in self.include):
            return False
        return not any(lo <= port <= hi for lo, hi in self.exclude)


ANY_PORT = PortSet()

# Suricata's suricata.yaml defaults, so community rules that name these variables load unchanged.
DEFAULT_ADDRESS_GROUPS = {
    "HOME_NET": "[192.168.0.0/16,10.0.0.0/8,172.16.0.0/12]",
    "EXTERNAL_NET": "!$HOME_NET",
    **{name: "$HOME_NET" for name in ("HTTP_SERVERS", "SMTP_SERVERS", "SQL_SERVERS", "DNS_SERVERS",
                                      "TELNET_SERVERS", "DC_SERVERS", "DNP3_SERVER", "DNP3_CLIENT",
                                      "MODBUS_CLIENT", "MODBUS_SERVER", "ENIP_CLIENT", "ENIP_SERVER")},
    "AIM_SERVERS": "$EXTERNAL_NET",
}
DEFAULT_PORT_GROUPS = {
    "HTTP_PORTS": "80", "SHELLCODE_PORTS": "!80", "ORACLE_PORTS": "1521", "SSH_PORTS": "22",
    "DNP3_PORTS": "20000", "MODBUS_PORTS": "502", "FILE_DATA_PORTS": "[$HTTP_PORTS,110,143]",
    "FTP_PORTS": "21", "GENEVE_PORTS": "6081", "VXLAN_PORTS": "4789", "TEREDO_PORTS": "3544",
}
_VAR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass
class RuleVars:
    """`$NAME` values for addresses and ports (Suricata's `vars: address-groups / port-groups`)."""

    addresses: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_ADDRESS_GROUPS))
    ports: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PORT_GROUPS))

    @classmethod
    def load(cls, path: Path) -> RuleVars:
        """A YAML file shaped like suricata.yaml's `vars:` section (with or without the `vars` key);
        its values override the defaults. ValueError names the file."""
        import yaml

        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
            raise ValueError(f"{path}: cannot read rule variables: {exc}") from None
        return cls.from_mapping(data, str(path))

    @classmethod
    def from_mapping(cls, data: Any, source: str = "vars") -> RuleVars:
        if isinstance(data, Mapping) and isinstance(data.get("vars"), Mapping):
            data = data["vars"]
        if not isinstance(data, Mapping):
            raise ValueError(f"{source}: rule variables must be a mapping with address-groups and/or port-groups")
        unknown = set(data) - {"address-groups", "port-groups"}
        if unknown:
            raise ValueError(f"{source}: unknown variable section(s) {', '.join(sorted(map(str, unknown)))} "
                             "(expected address-groups, port-groups)")
        result = cls()
        for section, target in (("address-groups", result.addresses), ("port-groups", result.ports)):
            groups = data.get(section) or {}
            if not isinstance(groups, Mapping):
                raise ValueError(f"{source}: {section} must be a mapping of NAME: value")
            for name, value in groups.items():
                if not isinstance(name, str) or not _VAR_NAME.match(name):
                    raise ValueError(f"{source}: {section}: invalid variable name {name!r}")
                if isinstance(value, list):
                    value = "[" + ",".join(str(v) for v in value) + "]"
                if not isinstance(value, (str, int)):
                    raise ValueError(f"{source}: {section}: {name} must be a string")
                target[name] = str(value)
        return result


def _split_list(text: str, what: str) -> list[str]:
    """`[a,[b,c],!d]` (brackets included) -> ["a", "[b,c]", "!d"]."""
    inner = text[1:-1]
    items: list[str] = []
    depth = 0
    current: list[str] = []
    for char in inner:
        if char == "[":
            depth += 1
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced ']' in {what} {text!r}")
        if char == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    if depth != 0:
        raise ValueError(f"unbalanced '[' in {what} {text!r}")
    items.append("".join(current).strip())
    if any(not item for item in items):
        raise ValueError(f"empty item in {what} list {text!r}")
    if len(items) > MAX_LIST_ITEMS:
        raise ValueError(f"{what} list has more than {MAX_LIST_ITEMS} items")
    return items


class Resolver:
    """Parses address and port expressions, expanding variables (with cycle and depth checks)."""

    def __init__(self, variables: RuleVars) -> None:
        self.vars = variables
        self._address_cache: dict[str, AddressSet] = {}
        self._port_cache: dict[str, PortSet] = {}

    # ---- addresses
    def address(self, text: str) -> AddressSet:
        cached = self._address_cache.get(text)
        if cached is None:
            cached = self._address(text.strip(), ())
            self._address_cache[text] = cached
        return cached

    def _address(self, text: str, seen: tuple[str, ...]) -> AddressSet:
        if not text:
            raise ValueError("empty address")
        if text.startswith("!"):
            return self._negate_address(self._address(text[1:].strip(), seen), text)
        if text.lower() == "any":
            return ANY_ADDRESS
        if text.startswith("$"):
            name = text[1:]
            value = self._var(name, self.vars.addresses, seen, "address")
            return self._address(value.strip(), (*seen, name))
        if text.startswith("["):
            if not text.endswith("]"):
                raise ValueError(f"unbalanced '[' in address {text!r}")
            include: list[IPNetwork] = []
            any_included = False
            exclude: list[IPNetwork] = []
            positives = 0
            for item in _split_list(text, "address"):
                if item.startswith("!"):
                    target = self._address(item[1:].strip(), seen)
                    if target.include is None and not target.exclude:
                        raise ValueError(f"'!any' in address {text!r} matches nothing")
                    if target.exclude and target.include is None:  # a negated negation: positive again
                        include.extend(target.exclude)
                        positives += 1
                    elif target.exclude:
                        raise ValueError(f"cannot negate the mixed address list {item!r}")
                    else:
                        exclude.extend(target.include or ())
                    continue
                part = self._address(item, seen)
                positives += 1
                if part.include is None:
                    any_included = True
                else:
                    include.extend(part.include)
                exclude.extend(part.exclude)
            if positives == 0 or any_included:
                return AddressSet(None, tuple(exclude))
            return AddressSet(tuple(include), tuple(exclude))
        return AddressSet(self._networks(text))

    @staticmethod
    def _negate_address(target: AddressSet, text: str) -> AddressSet:
        if target.include is None and not target.exclude:
            raise ValueError(f"address {text!r} (not any) matches nothing")
        if target.include is None:
            return AddressSet(target.exclude, ())
        if target.exclude:
            raise ValueError(f"cannot negate the mixed address list {text!r}")
        return AddressSet(None, target.include)

    @staticmethod
    def _networks(text: str) -> tuple[IPNetwork, ...]:
        try:
            if "-" in text and "/" not in text:
                first_text, last_text = (p.strip() for p in text.split("-", 1))
                first, last = ipaddress.ip_address(first_text), ipaddress.ip_address(last_text)
                if isinstance(first, ipaddress.IPv4Address) and isinstance(last, ipaddress.IPv4Address):
                    return tuple(ipaddress.summarize_address_range(first, last))
                if isinstance(first, ipaddress.IPv6Address) and isinstance(last, ipaddress.IPv6Address):
                    return tuple(ipaddress.summarize_address_range(first, last))
                raise ValueError("mixed address families")
            return (ipaddress.ip_network(text, strict=False),)
        except (ValueError, TypeError):
            raise ValueError(f"invalid address {text!r}") from None

    # ---- ports
    def port(self, text: str) -> PortSet:
        cached = self._port_cache.get(text)
        if cached is None:
            cached = self._port(text.strip(), ())
            self._port_cache[text] = cached
        return cached

    def _port(self, text: str, seen: tuple[str, ...]) -> PortSet:
        if not text:
            raise ValueError("empty port")
        if text.startswith("!"):
            target = self._port(text[1:].strip(), seen)
            if target.include is None and not target.exclude:
                raise ValueError(f"port {text!r} (not any) matches nothing")
            if target.include is None:
                return PortSet(target.exclude, ())
            if target.exclude:
                raise ValueError(f"cannot negate the mixed port list {text!r}")
            return PortSet(None, target.include)
        if text.lower() == "any":
            return ANY_PORT
        if text.startswith("$"):
            name = text[1:]
            value = self._var(name, self.vars.ports, seen, "port")
            return self._port(value.strip(), (*seen, name))
        if text.startswith("["):
            if not text.endswith("]"):
                raise ValueError(f"unbalanced '[' in port {text!r}")
            include: list[tuple[int, int]] = []
            exclude: list[tuple[int, int]] = []
            any_included = False
            positives = 0
            for item in _split_list(text, "port"):
                part = self._port(item, seen)
                if item.startswith("!") and part.include is None:
                    exclude.extend(part.exclude)
                    continue
                positives += 1
                if part.include is None:
                    any_included = True
                else:
                    include.extend(part.include)
                exclude.extend(part.exclude)
            if positives == 0 or any_included:
                return PortSet(None, tuple(exclude))
            return PortSet(tuple(include), tuple(exclude))
        match = re.fullmatch(r"(\d*)\s*(:?)\s*(\d*)", text)
        if match is None or (not match.group(1) and not match.group(3)):
            raise ValueError(f"invalid port {text!r}")
        lo_text, colon, hi_text = match.groups()
        lo = int(lo_text) if lo_text else 0
        hi = (int(hi_text) if hi_text else 65535) if colon else lo
        if lo > 65535 or hi > 65535 or lo > hi:
            raise ValueError(f"invalid port or port range {text!r}")
        return PortSet(((lo, hi),))

    @staticmethod
    def _var(name: str, table: dict[str, str], seen: tuple[str, ...], kind: str) -> str:
        if name in seen:
            raise ValueError(f"{kind} variable ${name} refers to itself ({' -> '.join((*seen, name))})")
        if len(seen) >= MAX_VAR_DEPTH:
            raise ValueError(f"{kind} variables nest deeper than {MAX_VAR_DEPTH}")
        value = table.get(name)
        if value is None:
            raise ValueError(f"undefined {kind} variable ${name}")
        return value
