"""False-positive filters: small pure functions, each answering one question about a candidate.

The engine asks them in order after a rule's regex (and entropy) confirmed a candidate. Filters that
*drop* a candidate say why (a short reason string, kept for `keep_suppressed` debugging); the test
fixture filter does not drop: a secret in a test fixture is still a secret someone may have pasted,
so it is reported one severity step lower and tagged `test-fixture`.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import PurePosixPath

from cloudward.core.severity import Severity

# Documentation keys that vendors print in their guides; scanners everywhere see them daily.
DOCUMENTATION_VALUES = frozenset({
    "AKIAIOSFODNN7EXAMPLE",
    "AKIAI44QH8DHBEXAMPLE",
    "ASIAIOSFODNN7EXAMPLE",
    "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    "je7MtGbClwBF/2Zp9Utk/h3yCo8nvbEXAMPLEKEY",
    # Azurite / the Azure storage emulator's fixed, public account key.
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==",
    # RFC 6749 (OAuth 2.0) examples: access token, refresh token, client credentials (Basic).
    "2YotnFZFEjr1zCsicMWpAA",
    "tGzv3JOkF0XG5Qx2TlKWIA",
    "czZCaGRSa3F0MzpnWDFmQmF0M2JW",
    "SplxlOBeZQQYbYS6WxSbIA",
    # jwt.io's and PyJWT's README tokens.
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ"
    ".SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzb21lIjoicGF5bG9hZCJ9.4twFt5NiznN84AWoo1d7KO1T_yoc0Z6XOpOVswacPZg",
})

# Substrings (case-insensitive) that mark a value as a stand-in rather than a credential. Kept to
# words a random key practically never contains (a 4-letter word appears in ~1 of 30,000 keys).
PLACEHOLDER_WORDS = (
    "example", "xxxx", "placeholder", "dummy", "changeme", "change_me", "change-me", "replaceme",
    "replace_me", "replace-me", "redacted", "your_", "your-", "yourkey", "yoursecret", "yourtoken",
    "yourpassword", "insert_", "insert-", "notreal", "not_real", "not-a-real", "fakekey", "fake_key",
    "sample_", "<secret>", "*****", "...",
)

_TEMPLATE = re.compile(
    r"""\$\{[^}]*\}?        # ${VAR}
      | \$\([^)]*\)?        # $(command)
      | \{\{.*?\}\}?        # {{ jinja }} / {{ .helm }}
      | \{%.*               # {% jinja statement
      | %\([A-Za-z_]\w*\)s  # %(name)s
      | ^<[^<>]*>?$         # <your-key>
      | ^\$[A-Za-z_]\w*$    # $VAR
      | ^%[A-Za-z_]\w*%$    # %VAR% (Windows)
      | ^\#\{.*\}$          # #{ruby}
    """,
    re.VERBOSE,
)
_REPEAT = re.compile(r"(.)\1{5,}")  # six or more of one character
_SEQUENCES = ("0123456789", "abcdefghijklmnopqrstuvwxyz", "9876543210", "zyxwvutsrqponmlkjihgfedcba")
SEQUENCE_RUN = 7


LONG_VALUE = 128
# Words a long random value (a private key, a session token) is practically never made of by chance.
LONG_VALUE_WORDS = ("example", "placeholder", "redacted", "changeme", "replaceme")


def placeholder_reason(secret: str, stopwords: tuple[str, ...] = ()) -> str | None:
    """Why `secret` looks like a placeholder or example rather than a credential, or None.

    `stopwords` are the rule's own lower-cased `allow.stopwords`; the global words always apply.
    Values longer than LONG_VALUE (keys, session tokens) get only the checks that chance cannot
    trip: real DER/base64 keys contain runs like `AAAAAAAA` and, over thousands of characters,
    short words such as `xxxx`.
    """
    if secret in DOCUMENTATION_VALUES:
        return "documentation-example"
    low = secret.lower()
    for word in stopwords:
        if word in low:
            return f"stopword:{word}"
    if len(secret) > LONG_VALUE:
        for word in LONG_VALUE_WORDS:
            if word in low:
                return f"placeholder:{word}"
        return "template" if _TEMPLATE.search(secret) else None
    for word in PLACEHOLDER_WORDS:
        if word in low:
            return f"placeholder:{word}"
    if _TEMPLATE.search(secret):
        return "template"
    if _REPEAT.search(secret):
        return "repeated-characters"
    if len(secret) >= 8 and len(set(low)) <= 3:
        return "low-variety"
    if _has_sequence(low):
        return "sequence"
    return None


def _has_sequence(low: str) -> bool:
    for sequence in _SEQUENCES:
        for start in range(len(sequence) - SEQUENCE_RUN + 1):
            if sequence[start : start + SEQUENCE_RUN] in low:
                return True
    return False


# --- what kind of file is this? ------------------------------------------------------------------

LOCK_FILES = frozenset({
    "package-lock.json", "npm-shrinkwrap.json", "yarn.lock", "pnpm-lock.yaml", "bun.lock",
    "poetry.lock", "pipfile.lock", "pdm.lock", "uv.lock", "cargo.lock", "go.sum", "composer.lock",
    "gemfile.lock", "packages.lock.json", "gradle.lockfile", "flake.lock", "mix.lock", "pubspec.lock",
    "podfile.lock", "package.resolved", "deno.lock", "conda-lock.yml",
})
_MINIFIED_SUFFIXES = (".min.js", ".min.mjs", ".min.css", ".bundle.js", ".chunk.js", ".js.map",
                      ".css.map", ".min.map")
_TEST_DIRS = frozenset({"test", "tests", "testing", "fixture", "fixtures", "testdata", "test_data",
                        "test-data", "__tests__", "__fixtures__", "__mocks__", "spec", "specs"})
_TEST_FILE = re.compile(r"(?:^test_.*\.py|_test\.(?:py|go)|\.(?:test|spec)\.[cm]?[jt]sx?)$")
# Lock-file lines that carry integrity hashes rather than credentials.
_INTEGRITY = re.compile(r"(?i)\b(?:integrity|checksum|hash|sha(?:1|256|384|512))\b|\bsha\d+-|\bh1:")


_REVISION = re.compile(r"^[^/:]*@[^/:]+:")  # `repo@<sha>:` in front of a path from git history


def path_part(origin: str) -> str:
    """The file path inside an origin: `repo@sha:src/x.py` -> `src/x.py`, `a.zip!dir/x` -> `dir/x`
    (the innermost archive member), `C:\\x\\y` -> `C:/x/y`."""
    path = origin.replace("\\", "/")
    path = path.rsplit("!", 1)[-1]
    return _REVISION.sub("", path, count=1)


def _parts(path: str) -> list[str]:
    return [p for p in path_part(path).split("/") if p]


def is_lock_file(path: str) -> bool:
    """Dependency lock files: full of integrity hashes that look random but are public."""
    parts = _parts(path)
    return bool(parts) and parts[-1].lower() in LOCK_FILES


def is_minified_path(path: str) -> bool:
    """Minified or bundled assets, where only prefixed (high-confidence) rules are worth running."""
    return path_part(path).lower().endswith(_MINIFIED_SUFFIXES)


def is_test_path(path: str) -> bool:
    """Paths under test/tests/fixtures/testdata directories, and test files by naming convention."""
    parts = _parts(path)
    if not parts:
        return False
    if any(p.lower() in _TEST_DIRS for p in parts[:-1]):
        return True
    return bool(_TEST_FILE.search(parts[-1].lower()))


def is_integrity_line(line: str) -> bool:
    """A lock-file line that records a package hash (npm `integrity`, go.sum `h1:`, `checksum`)."""
    return bool(_INTEGRITY.search(line))


def downgrade(severity: Severity) -> Severity:
    """One step lower (critical -> high ... low -> info; info stays info)."""
    order = list(Severity)
    return order[max(0, order.index(severity) - 1)]


# --- inline suppression --------------------------------------------------------------------------

IGNORE_MARKER = "cloudward:ignore"
_IGNORE = re.compile(r"cloudward:ignore(?![\w-])(?P<ids>(?:[ \t]*,?[ \t]*secret\.[a-z0-9_.]*[a-z0-9])*)")


def inline_ignored(line: str, rule_id: str) -> bool:
    """True when `line` carries `cloudward:ignore` (all rules) or `cloudward:ignore <rule_id>`
    (also `cloudward:ignore secret.a, secret.b`)."""
    if IGNORE_MARKER not in line:
        return False
    for found in _IGNORE.finditer(line):
        ids = re.findall(r"secret\.[a-z0-9_.]*[a-z0-9]", found.group("ids"))
        if not ids or rule_id in ids:
            return True
    return False


# --- path globs ----------------------------------------------------------------------------------


@lru_cache(maxsize=1024)
def glob_regex(pattern: str) -> re.Pattern[str]:
    """A path glob as a regex: `**/` any directories (or none), `**` anything, `*` and `?` within
    one path segment, `[...]` a character class. A pattern without `/` matches the file name."""
    if "/" not in pattern:
        pattern = "**/" + pattern
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if char == "*":
            out.append("[^/]*")
        elif char == "?":
            out.append("[^/]")
        elif char == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                out.append(re.escape(char))
            else:
                body = pattern[i + 1 : end].replace("\\", "\\\\")
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = end
        else:
            out.append(re.escape(char))
        i += 1
    return re.compile("".join(out) + r"\Z")


def path_matches(globs: tuple[str, ...], path: str) -> bool:
    """Does `path` (as given by the source, `/` or `\\` separated) match any glob?"""
    if not globs:
        return False
    posix = str(PurePosixPath(path_part(path))).lstrip("/")
    return any(glob_regex(g.lstrip("/")).match(posix) for g in globs)
