"""Version ordering per ecosystem and OSV range semantics."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from packaging.version import Version

from cloudward.engines.osv.versions import affected, ecosystem_base, ecosystem_release, fixed_versions, version_key


def rng(*events: dict[str, str], kind: str = "ECOSYSTEM") -> list[dict[str, object]]:
    return [{"type": kind, "events": list(events)}]


@pytest.mark.parametrize(("eco", "lo", "hi"), [
    ("Debian:12", "1:1.0-1", "2:0.1-1"),
    ("Debian", "1.0~rc1-1", "1.0-1"),
    ("Ubuntu:22.04", "2.0-1ubuntu1", "2.0-1ubuntu2"),
    ("Alpine:v3.19", "1.2.3-r0", "1.2.3-r1"),
    ("Alpine:v3.19", "1.2.3_rc1-r0", "1.2.3-r0"),
    ("Red Hat", "1.0-1.el8", "1.0-2.el8"),
    ("Rocky Linux:9", "1.9-1", "1.10-1"),
    ("PyPI", "1.0rc1", "1.0"),
    ("PyPI", "1.0", "1.0.post1"),
    ("npm", "1.0.0-beta.2", "1.0.0"),
    ("Go", "v1.2.3", "v1.10.0"),
    ("Go", "1.2.3", "1.2.4"),
    ("Maven", "1.0-alpha", "1.0"),
    ("crates.io", "0.9.9", "0.10.0"),
    ("RubyGems", "1.0.0.pre", "1.0.0"),
    ("NuGet", "1.0.0", "1.0.1"),
])
def test_ordering(eco: str, lo: str, hi: str) -> None:
    assert version_key(lo, eco) < version_key(hi, eco)


def test_ecosystem_names() -> None:
    assert ecosystem_base("Debian:12") == "Debian" and ecosystem_release("Debian:12") == "12"
    assert ecosystem_base("PyPI") == "PyPI" and ecosystem_release("PyPI") is None


def test_unparsable_version_names_version_and_ecosystem() -> None:
    with pytest.raises(ValueError, match=r"not a version!.*PyPI"):
        version_key("not a version!", "PyPI")
    with pytest.raises(ValueError, match="Nowhere"):
        version_key("1.0", "Nowhere")


def test_introduced_zero_and_fixed_exclusive() -> None:
    ranges = rng({"introduced": "0"}, {"fixed": "1.5"})
    assert affected("0.1", ranges, None, "PyPI")
    assert affected("1.4.9", ranges, None, "PyPI")
    assert not affected("1.5", ranges, None, "PyPI")  # the fixed version itself is not affected
    assert not affected("2.0", ranges, None, "PyPI")


def test_introduced_inclusive() -> None:
    ranges = rng({"introduced": "1.2"}, {"fixed": "1.5"})
    assert not affected("1.1", ranges, None, "PyPI")
    assert affected("1.2", ranges, None, "PyPI")


def test_multiple_pairs_in_one_range_unsorted() -> None:
    ranges = rng({"fixed": "2.0.3"}, {"introduced": "2.0.0"}, {"introduced": "1.0.0"}, {"fixed": "1.2.0"},
                 kind="SEMVER")
    assert affected("1.1.0", ranges, None, "npm")
    assert not affected("1.5.0", ranges, None, "npm")
    assert affected("2.0.2", ranges, None, "npm")
    assert not affected("2.0.3", ranges, None, "npm")
    assert not affected("0.9.0", ranges, None, "npm")


def test_multiple_ranges() -> None:
    ranges = rng({"introduced": "1.0"}, {"fixed": "1.1"}) + rng({"introduced": "3.0"}, {"fixed": "3.2"})
    assert affected("1.0", ranges, None, "PyPI") and affected("3.1", ranges, None, "PyPI")
    assert not affected("2.0", ranges, None, "PyPI")


def test_last_affected_inclusive() -> None:
    ranges = rng({"introduced": "1.0"}, {"last_affected": "1.5-2"})
    assert affected("1.5-2", ranges, None, "Debian")
    assert not affected("1.5-3", ranges, None, "Debian")


def test_open_ended() -> None:
    assert affected("99.0", rng({"introduced": "1.0"}), None, "PyPI")


def test_limit() -> None:
    ranges = rng({"introduced": "0"}, {"limit": "2.0"})
    assert affected("1.9", ranges, None, "PyPI")
    assert not affected("2.0", ranges, None, "PyPI")
    assert affected("5.0", rng({"introduced": "0"}, {"limit": "*"}), None, "PyPI")


def test_versions_list_and_git_ignored() -> None:
    git = rng({"introduced": "0"}, {"fixed": "deadbeef"}, kind="GIT")
    assert not affected("1.0", git, None, "PyPI")
    assert affected("1.0", git, ["0.9", "1.0"], "PyPI")
    assert not affected("1.1", git, ["0.9", "1.0"], "PyPI")
    assert fixed_versions(git + rng({"introduced": "0"}, {"fixed": "2.0"})) == ["2.0"]


def test_debian_epoch_in_range() -> None:
    ranges = rng({"introduced": "0"}, {"fixed": "1:2.4-3+deb12u1"})
    assert affected("2.9-1", ranges, None, "Debian:12")  # no epoch: 0 < 1
    assert affected("1:2.4-3", ranges, None, "Debian:12")
    assert not affected("1:2.4-3+deb12u1", ranges, None, "Debian:12")


# --- property tests ------------------------------------------------------------------------------

_ALNUM = "0123456789abcAB"
_part = st.text(alphabet=_ALNUM + ".+~", min_size=0, max_size=6)
_upstream = st.builds(lambda d, rest: d + rest, st.sampled_from("0123456789"), _part)
_revision = st.builds(lambda first, rest: first + rest, st.sampled_from(_ALNUM),
                      st.text(alphabet=_ALNUM + ".+~", max_size=4))
_debver = st.builds(
    lambda epoch, up, rev: (f"{epoch}:" if epoch is not None else "") + up + (f"-{rev}" if rev else ""),
    st.one_of(st.none(), st.integers(0, 3)), _upstream, st.one_of(st.none(), _revision))

_DPKG_LOOP = r"""
while read -r a b; do
  if dpkg --compare-versions "$a" lt "$b"; then echo -1
  elif dpkg --compare-versions "$a" eq "$b"; then echo 0
  else echo 1; fi
done < "$1"
"""


def _dpkg_compare(pairs: list[tuple[str, str]], workdir: Path) -> list[int]:
    """Ask the real dpkg, many pairs per subprocess, so thousands of pairs take seconds."""
    listing = workdir / "pairs.txt"
    listing.write_text("".join(f"{a} {b}\n" for a, b in pairs))
    out = subprocess.run(["sh", "-c", _DPKG_LOOP, "sh", str(listing)], capture_output=True, text=True, check=True)
    return [int(line) for line in out.stdout.split()]


@settings(max_examples=10, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture,
                                 HealthCheck.large_base_example, HealthCheck.filter_too_much])
@given(st.lists(st.tuples(_debver, _debver), min_size=250, max_size=250))
def test_debian_ordering_agrees_with_dpkg(tmp_path: Path, pairs: list[tuple[str, str]]) -> None:
    # nudge some pairs to be near-equal, where the tricky cases (~, +, trailing zeros) live
    pairs = pairs + [(a, a + "~") for a, _ in pairs[:50]] + [(a, a + "+1") for a, _ in pairs[50:100]]
    expected = _dpkg_compare(pairs, tmp_path)
    assert len(expected) == len(pairs)
    for (a, b), want in zip(pairs, expected, strict=True):
        ka, kb = version_key(a, "Debian"), version_key(b, "Debian")
        # by order, as the matcher compares (univers' `==` compares spellings: '0' and '00' differ there)
        got = -1 if ka < kb else (1 if kb < ka else 0)
        assert got == want, f"{a!r} vs {b!r}: dpkg says {want}, we say {got}"


_pep440 = st.builds(
    lambda rel, pre, post, dev: ".".join(map(str, rel)) + pre + post + dev,
    st.lists(st.integers(0, 12), min_size=1, max_size=4),
    st.sampled_from(["", "a1", "b2", "rc1", "rc10"]), st.sampled_from(["", ".post1", ".post2"]),
    st.sampled_from(["", ".dev0", ".dev3"]))


@given(st.lists(_pep440, min_size=3, max_size=3))
def test_pypi_matches_packaging_and_is_a_total_order(vs: list[str]) -> None:
    a, b, c = vs
    ka, kb, kc = (version_key(v, "PyPI") for v in vs)
    assert (ka < kb) == (Version(a) < Version(b))
    assert (kb < kc) == (Version(b) < Version(c))
    assert (ka == kb) == (Version(a) == Version(b))
    assert not (ka < kb and kb < ka)
    if ka < kb and kb < kc:
        assert ka < kc


_semver = st.builds(lambda x, y, z, pre: f"{x}.{y}.{z}" + pre, st.integers(0, 20), st.integers(0, 20),
                    st.integers(0, 20), st.sampled_from(["", "-alpha", "-alpha.1", "-beta.2", "-rc.1"]))


@given(st.lists(_semver, min_size=3, max_size=3))
def test_semver_antisymmetric_and_transitive(vs: list[str]) -> None:
    ka, kb, kc = (version_key(v, "npm") for v in vs)
    assert not (ka < kb and kb < ka)
    assert (ka == kb) == (not ka < kb and not kb < ka)
    if ka <= kb and kb <= kc:
        assert ka <= kc
    # semver precedence agrees with packaging on the release part
    ra, rb = (Version(v.split("-")[0]) for v in vs[:2])
    if ra != rb:
        assert (ka < kb) == (ra < rb)


def test_matching_fixed_names_the_fix_of_the_matching_range() -> None:
    from cloudward.engines.osv.versions import matching_fixed

    ranges = rng({"introduced": "1.0"}, {"fixed": "1.4"}) + rng({"introduced": "2.0"}, {"fixed": "2.3"})
    assert matching_fixed("2.1", ranges, "PyPI") == ["2.3"]
    assert matching_fixed("1.1", ranges, "PyPI") == ["1.4"]
    assert matching_fixed("9.0", ranges, "PyPI") == ["1.4", "2.3"]
