"""One error hierarchy, so the CLI can map every failure to the documented exit code.

Exit codes (ARCHITECTURE.md): 0 clean, 1 findings at or above --fail-on, 2 usage or input error,
3 scan error.
"""

from __future__ import annotations


class CloudwardError(Exception):
    """Base of every error cloudward raises on purpose."""

    exit_code = 3


class UsageError(CloudwardError):
    """The user asked for something that cannot be done as asked (bad option, bad target)."""

    exit_code = 2


class InputError(CloudwardError):
    """An input (file, archive, response) is malformed; the message names the input."""

    exit_code = 2


class ConfigError(UsageError):
    """cloudward.toml or a CLOUDWARD_* variable is invalid."""


class RuleError(InputError):
    """A rule file is invalid, or two rules share an id."""


class ScanError(CloudwardError):
    """A scan could not run at all (as opposed to one target failing, which is recorded)."""


class StoreError(CloudwardError):
    """The findings store cannot be opened or migrated."""
