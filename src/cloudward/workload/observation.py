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

    def packages(self) -> PackageIndex:
        from cloudward.workload.packages import load_package_index

        return self.shared("packages", lambda: load_package_index(self.root))


Collector = Callable[[HostContext], Iterable[HostObservation]]
