"""Which files of an image the content scanners read, and the two scanners: secrets and malware.

Why a path policy: an image is mostly its distribution (documentation, headers, locales, shared
libraries, the language runtime's standard library). Reading those costs most of the time and
yields only the test keys and sample tokens their upstreams ship, never a secret of the image's
owner. What the owner adds (/app, /srv, /opt, /etc, /root, /home, /usr/local/bin, ...) is read.
Malware (YARA and hash indicators, judged by the shared content rules) is looked for more widely,
since a dropper hides exactly where nobody reads.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from cloudward.container.scan import ContentScanner
from cloudward.container.squash import FileEntry
from cloudward.core.finding import Finding, Target
from cloudward.engines.content import ContentJudge

__all__ = ["malware_candidate", "malware_scanner", "secret_candidate", "secret_scanner"]

SECRET_MAX_BYTES = 10 * 1024 * 1024
MALWARE_MAX_BYTES = 32 * 1024 * 1024

_DISTRO_TREES = re.compile(
    r"^/(?:usr/share/(?:doc|man|info|locale|i18n|zoneinfo|perl5?|mime|common-licenses|X11|icons|fonts|"
    r"terminfo|bash-completion|zsh|vim|gtk-doc|help|javascript)/"
    r"|usr/include/|usr/src/|var/lib/dpkg/|var/lib/apt/|var/cache/|var/lib/rpm/|usr/lib/sysimage/"
    r"|lib/apk/|usr/lib/jvm/|usr/lib/locale/|proc/|sys/|dev/)")
_RUNTIME_LIBS = re.compile(
    r"^/(?:usr/|usr/local/|opt/[^/]+/)?lib(?:64)?/(?:python\d[\d.]*|ruby|perl5?|node_modules/npm|go)/")
_NOT_TEXT = (".so", ".a", ".o", ".pyc", ".pyo", ".png", ".jpg", ".jpeg", ".gif", ".ico", ".webp", ".woff", ".woff2",
             ".ttf", ".otf", ".mo", ".gz", ".xz", ".bz2", ".zst", ".zip", ".whl", ".jar", ".class", ".wasm",
             ".mp3", ".mp4", ".pdf")
_MALWARE_SKIP = (".h", ".hpp", ".c", ".html", ".htm", ".css", ".md", ".rst", ".mo", ".po", ".pyc", ".png", ".jpg",
                 ".jpeg", ".gif", ".svg", ".ico", ".woff", ".woff2", ".ttf", ".otf", ".txt.gz", ".pdf")


def _distro_tree(path: str) -> bool:
    return _DISTRO_TREES.match(path) is not None


def secret_candidate(entry: FileEntry) -> bool:
    """Files the image's owner may have put a credential in: text outside the distribution's trees."""
    if entry.size == 0 or entry.size > SECRET_MAX_BYTES:
        return False
    path = entry.path
    if _distro_tree(path) or _RUNTIME_LIBS.match(path) or "/site-packages/" in path or "/dist-packages/" in path:
        return False
    if "/node_modules/" in path:
        return False
    return not path.lower().endswith(_NOT_TEXT)


def malware_candidate(entry: FileEntry) -> bool:
    """Executables anywhere, and any other file outside the distribution's documentation trees."""
    if entry.size == 0 or entry.size > MALWARE_MAX_BYTES:
        return False
    if entry.mode & 0o111:
        return not entry.path.startswith(("/proc/", "/sys/", "/dev/"))
    if _distro_tree(entry.path) or _RUNTIME_LIBS.match(entry.path):
        return False
    return not entry.path.lower().endswith(_MALWARE_SKIP)


def _where(entry: FileEntry) -> dict[str, Any]:
    return {"path": entry.path, "layer": entry.layer_index, "layer_digest": entry.layer_digest}


SecretScan = Callable[[bytes, str, Mapping[str, Any]], list[Finding]]


def secret_scanner(scan_bytes: SecretScan, version: str) -> ContentScanner:
    """Adapt the secret scanner's public `scan_bytes(data, origin, location)` to image files: the
    in-image path is the origin (its path filters apply), the finding belongs to the image."""

    def scan(data: bytes, entry: FileEntry, target: Target) -> list[Finding]:
        if data[:4] == b"\x7fELF":
            return []
        found = scan_bytes(data, entry.path, _where(entry))
        return [f.retargeted(target, f"{entry.path}\x1f{f.key}") for f in found]

    return ContentScanner(name="secret", version=version, wants=secret_candidate, scan=scan)


def malware_scanner(judge: ContentJudge) -> ContentScanner:
    """YARA and hash indicators over candidate files, judged by the shared content rules."""

    def scan(data: bytes, entry: FileEntry, target: Target) -> list[Finding]:
        return judge.bytes_findings(data, entry.path, target, _where(entry), executable=bool(entry.mode & 0o111))

    return ContentScanner(name="malware", version=judge.version, wants=malware_candidate, scan=scan)
