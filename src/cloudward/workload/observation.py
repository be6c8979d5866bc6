"""What a host collector saw: one subject (an sshd config, a cron line, a process …) and its facts.

Collectors only describe; rules judge. Keeping facts free of verdicts means a user can write a new
YAML rule over an existing subject without touching Python, and each collector is testable on its
own against a fixture root.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from cloudward.engines.iocs import Iocs
    from cloudward.workload.packages import PackageIndex
    from cloudward.workload.root import HostRoot

T = TypeVar("T")

__all__ = ["Collector", "HostContext", "HostObservation"]


@dataclass(frozen=True, slots=True)
class HostObservation:
    subject: str
    facts: Mapping[str, Any]
    path: str | None = None  # inner path on the audited root, e.g. /etc/cron.d/x
    line: int | None = None
    # What tells two observations of one subject apart across audits (a user name, a PID's exe …);
    # defaults to the path. Never a line number: findings must survive edits above them.
    key: str = ""


@dataclass(slots=True)
class HostContext:
    """What every collector gets: the root, shared data, and a place to report per-item errors."""

    root: HostRoot
    iocs: Iocs
    error: Callable[[str, str], None]  # (item, message): recorded on the scan, the audit goes on
    processes: bool = True  # live checks (/proc) only apply when the root is `/`
    options: dict[str, Any] = field(default_factory=dict)
    _shared: dict[str, Any] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.root.live

    def shared(self, name: str, build: Callable[[], T]) -> T:
        """Data several collectors need (the package index, the user list), built once per audit."""
        if name not in self._shared:
            self._shared[name] = build()
        value: T = self._shared[name]
        return value

    def read_config(self, path: str, limit: int) -> str | None:
        """A text configuration file, or None: absent (silently), or unreadable, larger than
        `limit` or binary (each reported as an error naming the file, and not parsed)."""
        try:
            data = self.root.read_bytes(path, limit + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self.error(path, f"cannot read: {exc.strerror or exc}")
            return None
        if len(data) > limit:
            self.error(path, f"larger than {limit} bytes; not parsed")
            return None
        if b"\x00" in data:
            self.error(path, "binary content where a text configuration was expected; not parsed")
            return None
        return data.decode("utf-8", errors="replace")

    def packages(self) -> PackageIndex:
        from cloudward.workload.packages import load_package_index

        return self.shared("packages", lambda: load_package_index(self.root))


Collector = Callable[[HostContext], Iterable[HostObservation]]
