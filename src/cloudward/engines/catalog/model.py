"""What the catalogers report: packages, the distro they belong to, and per-file errors.

Why a separate module: the SBOM writers and the vulnerability matcher consume these types without
importing any parser, and frozen dataclasses make packages hashable for de-duplication.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["CatalogError", "CatalogResult", "Distro", "Package"]


class CatalogError(ValueError):
    """The one error a parser raises on malformed input; the runner records one error per message (per file)."""

    def __init__(self, *messages: str) -> None:
        super().__init__("; ".join(messages))
        self.messages = list(messages)


@dataclass(frozen=True)
class Distro:
    """The operating system as os-release declares it (`ID`, `VERSION_ID`, `PRETTY_NAME`, `VERSION_CODENAME`)."""

    id: str
    version_id: str | None = None
    pretty_name: str | None = None
    codename: str | None = None


@dataclass(frozen=True, order=True)
class Package:
    """One installed package; `source_name` is what Debian/Alpine advisories are keyed by."""

    name: str
    version: str
    type: str
    purl: str
    ecosystem: str | None = None
    source_name: str | None = None
    source_version: str | None = None
    locations: tuple[str, ...] = ()
    licenses: tuple[str, ...] = ()


@dataclass
class CatalogResult:
    """Everything found in one file view: the distro, sorted unique packages, and errors naming files."""

    distro: Distro | None
    packages: list[Package] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
