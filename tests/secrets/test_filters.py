"""The false-positive filters are small pure functions: each is pinned down here on its own."""

import pytest

from cloudward.core.severity import Severity
from cloudward.secrets.entropy import shannon_entropy
from cloudward.secrets.filters import (
    DOCUMENTATION_VALUES,
    downgrade,
    glob_regex,
    inline_ignored,
    is_integrity_line,
    is_lock_file,
    is_minified_path,
    is_test_path,
    path_matches,
    path_part,
    placeholder_reason,
)

# --- placeholders ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("AKIAIOSFODNN7EXAMPLE", "documentation-example"),
        ("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "documentation-example"),
        ("AKIAXXXXXXXXXXXXXXXX", "placeholder:xxxx"),
        ("sk_live_your_key_here", "placeholder:your_"),
        ("my-Placeholder-Value-123", "placeholder:placeholder"),
        ("${AWS_SECRET_ACCESS_KEY}", "template"),
        ("{{ vault_password }}", "template"),
        ("<api-key>", "template"),
        ("$API_TOKEN", "template"),
        ("%DB_PASSWORD%", "template"),
        ("%(password)s", "template"),
        ("$(cat /run/secrets/token)", "template"),
        ("aaaaaaaaaaaaaaaaaaaa", "repeated-characters"),
        ("abababababababab", "low-variety"),
        ("key-1234567890-zz", "sequence"),
        ("abcdefghijklmnop", "sequence"),
    ],
)
def test_placeholders_are_recognised(value, reason):
    assert placeholder_reason(value) == reason


@pytest.mark.parametrize(
    "value",
    [
        "Zr8Qm2vTx9LpK4nW7cYb1HsJd6FgA3eU5oIq0Rt",  # 40 random base64-ish chars
        "ghp_Xq7ZK2mWb9LcT4vN8rPy3HsJd6FgA1eU5oIq",
        "9f86d081884c7d659a2feaa0c55ad015",
        "S3cure!Pass#2024",
    ],
)
def test_random_values_are_not_placeholders(value):
    assert placeholder_reason(value) is None


def test_rule_stopwords_apply_case_insensitively():
    assert placeholder_reason("MyTestingToken123456", ("testing",)) == "stopword:testing"
    assert placeholder_reason("MyTestingToken123456") is None


def test_long_values_only_get_checks_chance_cannot_trip():
    """DER/base64 keys contain runs like AAAAAAAA and, over thousands of characters, short words
    such as xxxx; those must not make a real key a 'placeholder'."""
    body = "b3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQAAAAAAAAABAAAAMwAAAAtzc2gtZW" * 3 + "xxxx"
    assert placeholder_reason(body) is None
    assert placeholder_reason(body + "EXAMPLE") == "placeholder:example"


def test_documentation_values_include_the_azurite_key():
    assert any(v.startswith("Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1") for v in DOCUMENTATION_VALUES)


# --- file kinds ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["package-lock.json", "web/yarn.lock", "poetry.lock", "Cargo.lock", "go.sum", "a/b/Pipfile.lock",
     "repo@0123abcd:pnpm-lock.yaml", "image.tar!app/composer.lock"],
)
def test_lock_files(path):
    assert is_lock_file(path)


@pytest.mark.parametrize("path", ["package.json", "go.mod", "lock.py", "locks/yarn.lock.bak"])
def test_not_lock_files(path):
    assert not is_lock_file(path)


def test_integrity_lines_in_lock_files():
    assert is_integrity_line('      "integrity": "sha512-Zr8Qm2vTx9LpK4nW7cYb1HsJd6FgA3eU5oIq0Rt=="')
    assert is_integrity_line("golang.org/x/net v0.1.0 h1:Zr8Qm2vTx9LpK4nW7cYb1HsJd6FgA3eU5oIq0Rt=")
    assert is_integrity_line('checksum = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"')
    assert not is_integrity_line('  resolved "https://user:tok@registry.example.com/x.tgz"')


@pytest.mark.parametrize("path", ["dist/app.min.js", "vendor.bundle.js", "main.4f3a.chunk.js", "app.js.map",
                                  "site.min.css"])
def test_minified_paths(path):
    assert is_minified_path(path)
    assert not is_minified_path(path.replace(".min", "").replace(".bundle", "x").replace(".chunk", "x")
                                .replace(".map", ".txt"))


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("tests/data/creds.txt", True),
        ("src/test/resources/app.yml", True),
        ("pkg/testdata/key.pem", True),
        ("spec/fixtures/token.json", True),
        ("web/__tests__/api.js", True),
        ("app/test_settings.py", True),
        ("handler_test.go", True),
        ("src/api.spec.ts", True),
        ("repo@0123abc:services/fixtures/aws.txt", True),
        ("src/app.py", False),
        ("contest/app.py", False),
        ("tests.py", False),
        ("attestation/x.go", False),
    ],
)
def test_test_paths(path, expected):
    assert is_test_path(path) is expected


def test_path_part_strips_revisions_and_archives():
    assert path_part("repo@0123abc:src/app.py") == "src/app.py"
    assert path_part("image.tar!layer.tar!etc/passwd") == "etc/passwd"
    assert path_part("C:\\proj\\x.py") == "C:/proj/x.py"


def test_downgrade_is_one_step_and_floors_at_info():
    assert downgrade(Severity.CRITICAL) is Severity.HIGH
    assert downgrade(Severity.HIGH) is Severity.MEDIUM
    assert downgrade(Severity.MEDIUM) is Severity.LOW
    assert downgrade(Severity.LOW) is Severity.INFO
    assert downgrade(Severity.INFO) is Severity.INFO


# --- inline suppression ----------------------------------------------------------------------------


def test_inline_ignore_all_rules():
    assert inline_ignored('token = "abc"  # cloudward:ignore', "secret.generic_token")
    assert inline_ignored("key: x // cloudward:ignore because test", "secret.gcp_api_key")


def test_inline_ignore_named_rules_only():
    line = "k = 'x'  # cloudward:ignore secret.generic_token, secret.jwt"
    assert inline_ignored(line, "secret.generic_token")
    assert inline_ignored(line, "secret.jwt")
    assert not inline_ignored(line, "secret.aws_access_key_id")
    assert not inline_ignored("k = 'x'  # cloudward:ignore secret.generic_token_x", "secret.generic_token")


def test_no_marker_no_ignore():
    assert not inline_ignored("k = 'x'  # nosec", "secret.generic_token")
    assert not inline_ignored("k = 'x'  # cloudward:ignorant", "secret.generic_token")
    assert not inline_ignored("k = 'x'  # cloudward:ignore-me", "secret.generic_token")


# --- globs -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "path", "expected"),
    [
        ("**/testdata/**", "pkg/testdata/a/b.txt", True),
        ("**/testdata/**", "testdata/b.txt", True),
        ("**/testdata/**", "pkg/testdatax/b.txt", False),
        ("*.md", "docs/README.md", True),
        ("docs/*.md", "docs/README.md", True),
        ("docs/*.md", "docs/sub/README.md", False),
        ("docs/**/*.md", "docs/sub/deep/README.md", True),
        ("vendor/**", "vendor/x/y.go", True),
        ("config/?.yaml", "config/a.yaml", True),
        ("config/[ab].yaml", "config/c.yaml", False),
        ("config/[!ab].yaml", "config/c.yaml", True),
    ],
)
def test_globs(glob, path, expected):
    assert path_matches((glob,), path) is expected
    assert glob_regex(glob) is glob_regex(glob)  # compiled once


# --- entropy ---------------------------------------------------------------------------------------


def test_entropy():
    assert shannon_entropy("") == 0.0
    assert shannon_entropy("aaaa") == 0.0
    assert shannon_entropy("ab") == pytest.approx(1.0)
    assert shannon_entropy("0123456789abcdef") == pytest.approx(4.0)
    assert shannon_entropy(b"0123456789abcdef") == pytest.approx(4.0)
    assert shannon_entropy("AKIAIOSFODNN7EXAMPLE") < shannon_entropy("Zr8Qm2vTx9LpK4nW7cYb1HsJd6FgA3eU5oIq0Rt")
