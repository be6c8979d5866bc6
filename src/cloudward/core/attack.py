"""MITRE ATT&CK technique ids, shipped inside the package so rules can be checked offline."""

from __future__ import annotations

import json
from functools import cache
from importlib import resources


@cache
def techniques() -> dict[str, str]:
    """Technique id -> name, from the reduced copy in `cloudward/data/attack-techniques.json`."""
    text = resources.files("cloudward.data").joinpath("attack-techniques.json").read_text("utf-8")
    data: dict[str, str] = json.loads(text)["techniques"]
    return data


def unknown_techniques(ids: list[str]) -> list[str]:
    known = techniques()
    return [i for i in ids if i not in known]
