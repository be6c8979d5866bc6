"""`cloudward network` commands of this part (registered on the groups of cli/network.py)."""

from __future__ import annotations
