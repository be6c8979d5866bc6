"""Shannon entropy: how random a candidate secret looks.

Random keys over base64 sit near 5 bits per character, hex near 4, while words, placeholders and
repeated characters fall well below; a rule's `match.entropy` threshold drops the latter.
"""

from __future__ import annotations

import math
from collections import Counter


def shannon_entropy(value: str | bytes) -> float:
    """Bits per symbol of `value`'s own symbol distribution (0.0 for an empty value)."""
    length = len(value)
    if length == 0:
        return 0.0
    total = 0.0
    for count in Counter(value).values():
        p = count / length
        total -= p * math.log2(p)
    return total
