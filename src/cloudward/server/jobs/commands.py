"""Which command lines a job may run, parsed without a shell.

A job is `cloudward <capability command> [arguments]`, split by shlex into words that become the
subprocess's argument list as they are: nothing is ever interpreted by a shell, so `;`, `$(...)`,
pipes and globs are plain characters of an argument. The first words must name an allow-listed
scan command. Options the server sets itself (report format and file, store, config) and options
that would read or write arbitrary server files or carry a secret on the command line (rule
folders, IOC and target lists, baselines, registry passwords) are refused, naming the option.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from cloudward.core.errors import UsageError

MAX_COMMAND_CHARS = 4096
MAX_WORDS = 256

# Each entry: the words that name the command. Longest match wins.
ALLOWED: tuple[tuple[str, ...], ...] = (
    ("exposure", "scan"),
    ("secrets", "scan"),
    ("image", "scan"),
    ("host", "audit"),
    ("conformity", "scan", "aws"),
    ("iac", "scan"),
    ("storage", "scan"),
    ("audit",),
)

# option -> why it is refused
DENIED: dict[str, str] = {
    "--output": "the server writes the report itself",
    "-o": "the server writes the report itself",
    "--format": "the server chooses the report format",
    "-f": "the server chooses the report format",
    "--no-store": "a job's scan is always recorded",
    "--config": "jobs use the server's settings",
    "--rules": "it would load rule files from the server's disk",
    "--yara-rules": "it would load rule files from the server's disk",
    "--iocs": "it would load files from the server's disk",
    "--baseline": "it would read a file from the server's disk",
    "--input-list": "it would read a file from the server's disk",
    "-iL": "it would read a file from the server's disk",
    "--password": "a secret on a command line would be stored and shown (use CLOUDWARD_REGISTRY_PASSWORD)",
    "--help": "it runs no scan",
    "--distributed": "the server's runner decides where a job runs (cloudward server --runner celery)",
    "--broker": "the server's runner decides where a job runs (cloudward server --runner celery)",
    "--": "the server appends its own options",
}


@dataclass(frozen=True)
class JobCommand:
    """A validated job: `words` follow `cloudward`; `text` is how it is shown (normalised)."""

    words: tuple[str, ...]

    @property
    def text(self) -> str:
        return shlex.join(self.words)

    @property
    def name(self) -> str:
        """The command part, e.g. `exposure scan`."""
        for allowed in sorted(ALLOWED, key=len, reverse=True):
            if self.words[:len(allowed)] == allowed:
                return " ".join(allowed)
        return self.words[0]


def parse_command(text: str) -> JobCommand:
    """`exposure scan 10.0.0.0/16 -p teamtnt` -> JobCommand; UsageError naming what is wrong."""
    if not isinstance(text, str) or not text.strip():
        raise UsageError("a job needs a command, e.g. 'exposure scan 10.0.0.0/24 -p teamtnt'")
    if len(text) > MAX_COMMAND_CHARS:
        raise UsageError(f"command is {len(text)} characters long (at most {MAX_COMMAND_CHARS})")
    if any((ord(c) < 32 and c not in " \t") or c == "\x7f" for c in text):
        raise UsageError("command contains control characters")
    try:
        words = shlex.split(text)
    except ValueError as exc:
        raise UsageError(f"cannot parse command {text[:80]!r}: {exc}") from None
    if words and words[0] == "cloudward":
        words = words[1:]
    if not words:
        raise UsageError("a job needs a command after 'cloudward'")
    if len(words) > MAX_WORDS:
        raise UsageError(f"command has {len(words)} words (at most {MAX_WORDS})")
    command = next((a for a in sorted(ALLOWED, key=len, reverse=True) if tuple(words[:len(a)]) == a), None)
    if command is None:
        allowed = ", ".join(" ".join(a) for a in ALLOWED)
        raise UsageError(f"{' '.join(words[:3])[:80]!r} is not a command a job may run (allowed: {allowed})")
    for word in words[len(command):]:
        refused = _refused(word)
        if refused is not None:
            option, why = refused
            raise UsageError(f"option {option} is not allowed in a job: {why}")
    return JobCommand(tuple(words))


def _refused(word: str) -> tuple[str, str] | None:
    if word == "--":
        return "--", DENIED["--"]
    if word.startswith("--"):
        name = word.split("=", 1)[0]
        return (name, DENIED[name]) if name in DENIED else None
    if word.startswith("-") and len(word) > 1:
        for option, why in DENIED.items():
            if not option.startswith("--") and word.startswith(option):
                return option, why
    return None
