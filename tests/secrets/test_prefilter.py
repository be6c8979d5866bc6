"""The prefilter back-ends must be interchangeable: same hits, overlapping ones included, on a real
corpus and on anything hypothesis can think of. Hyperscan is required where its wheels exist
(Linux x86-64, where CI runs): a missing fast path there is a failure, not a skip."""

import platform
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cloudward.secrets.engine import CompiledRules, builtin_rules
from cloudward.secrets.prefilter import (
    BACKENDS,
    AhoCorasickPrefilter,
    RegexPrefilter,
    _trie_pattern,
    available_backends,
    build_prefilter,
)

ROOT = Path(__file__).resolve().parents[2]
HYPERSCAN_PLATFORM = sys.platform == "linux" and platform.machine() in ("x86_64", "AMD64")


def _backends() -> list[str]:
    names = available_backends()
    if HYPERSCAN_PLATFORM:
        assert "hyperscan" in names, "hyperscan must be installed on Linux x86-64 (pip install hyperscan)"
    assert "ahocorasick" in names, "pyahocorasick must be installed (pip install pyahocorasick)"
    return names


def reference(keywords: list[str], data: bytes) -> list[tuple[int, int]]:
    """Brute force: every (start, index) where keyword `index` occurs, ASCII case-insensitively."""
    low = data.lower()
    hits = []
    for index, keyword in enumerate(keywords):
        needle = keyword.lower().encode()
        start = low.find(needle)
        while start != -1:
            hits.append((start, index))
            start = low.find(needle, start + 1)
    return sorted(hits)


def corpus() -> bytes:
    """Every secret fixture plus the package's own source: keywords in and out of context."""
    parts = [p.read_bytes() for p in sorted((ROOT / "tests" / "rules").glob("secret.*/*")) if p.is_file()]
    parts += [p.read_bytes() for p in sorted((ROOT / "src" / "cloudward").rglob("*.py"))]
    parts.append(bytes(range(256)) * 4)  # invalid UTF-8 and every byte value
    return b"\n".join(parts)


def test_available_backends_on_this_machine():
    names = _backends()
    assert names[-1] == "regex"
    assert set(names) <= set(BACKENDS)


def test_all_backends_agree_on_the_corpus_with_the_builtin_keywords():
    keywords = list(CompiledRules(builtin_rules(), "regex").keywords)
    data = corpus()
    expected = reference(keywords, data)
    assert len(expected) > 1000
    for name in _backends():
        assert build_prefilter(keywords, name).find(data) == expected, name


def test_overlapping_and_nested_keywords_are_all_reported():
    keywords = ["secret", "secret_access", "cret", "access", "AKIA", "aki", "ss"]
    data = b"AWS_SECRET_ACCESS_KEY=x; akia AKIAAKIA; sss"
    expected = reference(keywords, data)
    for name in _backends():
        assert build_prefilter(keywords, name).find(data) == expected, name


def test_duplicate_keywords_keep_their_own_indexes():
    keywords = ["token", "TOKEN", "tok"]
    for name in _backends():
        assert build_prefilter(keywords, name).find(b"a Token") == [(2, 0), (2, 1), (2, 2)], name


def test_empty_inputs():
    for name in _backends():
        assert build_prefilter(["abc"], name).find(b"") == []
    assert build_prefilter([], "auto").find(b"abc") == []


def test_bad_keywords_and_backends_are_refused():
    with pytest.raises(ValueError, match="ASCII"):
        RegexPrefilter(["clé"])
    with pytest.raises(ValueError, match="non-empty"):
        AhoCorasickPrefilter([""])
    with pytest.raises(ValueError, match="unknown prefilter"):
        build_prefilter(["x"], "bogus")


def test_environment_selects_the_backend(monkeypatch):
    monkeypatch.setenv("CLOUDWARD_SECRETS_PREFILTER", "regex")
    assert build_prefilter(["abc"]).name == "regex"
    monkeypatch.delenv("CLOUDWARD_SECRETS_PREFILTER")
    assert build_prefilter(["abc"]).name == available_backends()[0]


def test_trie_pattern_prefers_the_longest_keyword():
    assert _trie_pattern(["ab", "abc", "b"]) == "(?:ab(?:c)?|b)"


# A small alphabet makes overlaps, prefixes and case variants likely.
_alphabet = st.sampled_from(list("abAB_-.:x\n\xff"))
_keyword = st.text(alphabet=st.sampled_from(list("abAB_-.:x")), min_size=1, max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keywords=st.lists(_keyword, min_size=1, max_size=8),
       text=st.lists(_alphabet, max_size=200).map("".join))
def test_property_every_backend_equals_brute_force(keywords, text):
    data = text.encode("latin-1")
    expected = reference(keywords, data)
    for name in _backends():
        assert build_prefilter(keywords, name).find(data) == expected, name
