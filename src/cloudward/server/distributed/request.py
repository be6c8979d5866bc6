"""The words of an `exposure scan` job, read the way the CLI reads them, without running the CLI.

A worker plans a distributed scan in-process, so it cannot hand the words to `cloudward exposure
scan` as a subprocess does; and the server layer does not import the CLI. So this reads the same
options with click's rules: positional targets anywhere, `--name value`, `--name=value`, `-p value`
and `-pVALUE`, the last of a repeated option winning, a value taken whole even when it starts with
`-`. A test holds this table to the CLI's own list of options, so the two cannot drift apart.
Options that read files or choose outputs are refused, naming the option.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from cloudward.core.errors import UsageError
from cloudward.core.severity import Severity

MAX_WORDS = 100_000
MAX_WORD_CHARS = 4096


@dataclass(frozen=True)
class ExposureRequest:
    """What `exposure scan WORDS` asks for; None leaves a setting to the worker's configuration."""

    targets: tuple[str, ...] = ()
    ports: str = "teamtnt"
    concurrency: int | None = None
    rate: float | None = None
    timeout: float | None = None
    max_hosts: int | None = None
    allow_large_range: bool = False
    max_open_per_host: int = 256
    fail_on: str | None = None

    def overrides(self) -> dict[str, Any]:
        """ExposureSettings fields the request sets (the CLI's `_exposure_settings` does the same)."""
        values = {"concurrency": self.concurrency, "rate": self.rate, "probe_timeout": self.timeout,
                  "max_hosts": self.max_hosts}
        return {k: v for k, v in values.items() if v is not None}


def _int(option: str, text: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise UsageError(f"option {option}: {text[:40]!r} is not a whole number") from None


def _float(option: str, text: str) -> float:
    try:
        value = float(text.strip())
    except ValueError:
        raise UsageError(f"option {option}: {text[:40]!r} is not a number") from None
    if value != value or value in (float("inf"), float("-inf")):
        raise UsageError(f"option {option}: {text[:40]!r} is not a finite number")
    return value


def _positive(option: str, text: str) -> int:
    value = _int(option, text)
    if value < 1:
        raise UsageError(f"option {option}: {value} is below the minimum of 1")
    return value


def _severity(option: str, text: str) -> str:
    try:
        return Severity.parse(text).value
    except ValueError as exc:
        raise UsageError(f"option {option}: {exc}") from None


# spelling -> (field, converter); a None converter marks a flag
_VALUED: dict[str, tuple[str, Callable[[str, str], Any]]] = {
    "--ports": ("ports", lambda _o, t: t),
    "-p": ("ports", lambda _o, t: t),
    "--concurrency": ("concurrency", _int),
    "--rate": ("rate", _float),
    "--timeout": ("timeout", _float),
    "--max-hosts": ("max_hosts", _int),
    "--max-open-per-host": ("max_open_per_host", _positive),
    "--fail-on": ("fail_on", _severity),
}
_FLAGS: dict[str, str] = {
    "--allow-large-range": "allow_large_range",
    "--distributed": "",  # how the scan runs, not what it scans
}
REFUSED: dict[str, str] = {
    "-iL": "the workers would read the file from their own disks; list the targets instead",
    "--input-list": "the workers would read the file from their own disks; list the targets instead",
    "--rules": "workers judge with the built-in exposure rules",
    "--format": "the report is written by whoever asked for the scan",
    "-f": "the report is written by whoever asked for the scan",
    "--output": "the report is written by whoever asked for the scan",
    "-o": "the report is written by whoever asked for the scan",
    "--no-store": "a distributed scan is assembled in the store",
    "--config": "workers use their own settings",
    "--broker": "the broker is chosen by the runner",
    "--help": "it runs no scan",
}
KNOWN_OPTIONS = frozenset({*_VALUED, *_FLAGS, *REFUSED})


def parse_exposure_words(words: Sequence[str]) -> ExposureRequest:
    """The words after `exposure scan` -> ExposureRequest; UsageError naming what is wrong."""
    if len(words) > MAX_WORDS:
        raise UsageError(f"exposure scan has {len(words)} words (at most {MAX_WORDS})")
    values: dict[str, Any] = {}
    targets: list[str] = []
    items = list(words)
    index = 0
    options_done = False
    while index < len(items):
        word = items[index]
        index += 1
        if not isinstance(word, str) or len(word) > MAX_WORD_CHARS:
            raise UsageError("exposure scan: every word must be text of at most 4096 characters")
        if options_done or not word.startswith("-") or word == "-":
            targets.append(word)
            continue
        if word == "--":
            options_done = True
            continue
        name, attached = _split(word)
        if name in REFUSED:
            raise UsageError(f"option {name} cannot be used in a distributed exposure scan: {REFUSED[name]}")
        if name in _FLAGS:
            if attached is not None:
                raise UsageError(f"option {name} does not take a value")
            if _FLAGS[name]:
                values[_FLAGS[name]] = True
            continue
        if name not in _VALUED:
            raise UsageError(f"exposure scan: no such option {name[:60]!r}")
        if attached is None:
            if index >= len(items):
                raise UsageError(f"option {name} requires a value")
            attached = items[index]
            index += 1
        attribute, convert = _VALUED[name]
        values[attribute] = convert(name, attached)
    if not targets:
        raise UsageError("no targets: give IP addresses, CIDRs or host names")
    return replace(ExposureRequest(**values), targets=tuple(targets))


def _split(word: str) -> tuple[str, str | None]:
    """`--name=value` / `-pVALUE` / `--name` -> (option, attached value or None)."""
    if word.startswith("--"):
        name, sep, value = word.partition("=")
        return name, value if sep else None
    # click reads one-letter options with their value glued on; -iL is the one two-letter short option
    if word.startswith("-iL"):
        return "-iL", word[3:] or None
    return word[:2], word[2:] or None
