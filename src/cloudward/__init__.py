"""cloudward: find and close the cloud gaps that crews such as TeamTNT exploit.

Kept import-free on purpose: `cloudward --version` must stay fast, so heavy modules load lazily.
"""

__version__ = "0.1.0"
