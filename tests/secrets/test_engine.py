"""The engine: rule validation and compilation, windowed confirmation (identical to whole-text
regexes), pairing, de-duplication, filters in context, line/column bookkeeping on hostile bytes,
and the chunk/overlap contract for streams (a multi-megabyte single line)."""

import pickle
import random
import string
from pathlib import Path

import pytest

from cloudward.cli.common import load_all_rules
from cloudward.core.errors import RuleError
from cloudward.core.rules import parse_rule_documents
from cloudward.core.severity import Severity
from cloudward.secrets.engine import (
    CompiledRules,
    Secret,
    StreamScanner,
    builtin_rules,
    compile_rules,
    load_secret_rules,
    scan_buffer,
    validate_rule,
)
from cloudward.secrets.prefilter import available_backends

ROOT = Path(__file__).resolve().parents[2]
RNG = random.Random(7)
UPPER_DIGITS = string.ascii_uppercase + "234567"
ALNUM = string.ascii_letters + string.digits


def fake(n: int, alphabet: str = ALNUM) -> str:
    """A random value free of the placeholder heuristics (no runs, no xxxx)."""
    while True:
        value = "".join(RNG.choice(alphabet) for _ in range(n))
        if not any(value[i] == value[i + 1] == value[i + 2] for i in range(n - 2)) and "xxxx" not in value.lower():
            return value


def mixed(n: int, alphabet: str = ALNUM) -> str:
    while True:
        value = fake(n, alphabet)
        if any(c.isupper() for c in value) and any(c.islower() for c in value) and any(c.isdigit() for c in value):
            return value


def aws_key_id() -> str:
    return "AKIA" + fake(16, UPPER_DIGITS)


def aws_secret() -> str:
    return mixed(40, ALNUM + "/+")


def rule(rule_id: str) -> object:
    return next(r for r in builtin_rules() if r.id == rule_id)


def one_rule(match: str, rule_id: str = "secret.test_rule", extra: str = "") -> object:
    text = f"""
id: {rule_id}
title: A test rule
severity: high
category: secret
description: A rule written by the tests.
remediation: Nothing to do, it is a test.
{extra}
match:
{match}
"""
    return parse_rule_documents(text, "test.yaml")[0]


def keys(matches):
    return [(m.rule_id, m.start, m.end, m.secret_start, m.secret_end, m.line, m.column, m.suppressed)
            for m in matches]


# --- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("match", "message"),
    [
        ("  engine: secrets\n  keywords: [abc]\n  regex: 'abc('", "does not compile"),
        ("  engine: secrets\n  regex: 'abc'", "match.keywords"),
        ("  engine: secrets\n  keywords: []\n  regex: 'abc'", "at least one keyword"),
        ("  engine: secrets\n  keywords: [a]\n  regex: 'abc'", "at least 2 characters"),
        ("  engine: secrets\n  keywords: [clé]\n  regex: 'abc'", "ASCII"),
        ("  engine: secrets\n  keywords: [abc]\n  regex: 'x*'", "matches the empty string"),
        ("  engine: secrets\n  keywords: [abc]\n  regex: 'abc'\n  entropy: 9", "match.entropy"),
        ("  engine: secrets\n  keywords: [abc]\n  regex: 'abc'\n  bogus: 1", "unknown match keys: bogus"),
        ("  engine: secrets\n  keywords: [abc]\n  regex: 'abc'\n  allow: {values: ['(']}", "allow.values"),
        ("  engine: secrets\n  keywords: [abc]\n  regex: 'abc'\n  allow: {hosts: []}", "match.allow"),
        ("  engine: secrets\n  keywords: [abc]\n  regex: 'abc'\n  span: 1", "match.span"),
        ("  engine: secrets\n  keywords: [abc]\n  regex: 'abc'\n  confidence: medium", "high or low"),
        ("  engine: secrets\n  keywords: [abc]\n  regex: 'abc'\n  requires: {within_lines: 3}", "exactly one"),
        ("  engine: secrets\n  keywords: [abc]\n  regex: 'abc'\n  requires: {rule: x, regex: y, within_lines: 1}",
         "exactly one"),
        ("  engine: secrets\n  keywords: [abc]\n  regex: 'abc'\n  requires: {regex: 'a'}", "within_lines"),
        ("  engine: secrets\n  keywords: [abc]\n  regex: 'abc'\n  decoded: {encoding: rot13, regex: a}",
         "decoded.encoding"),
        ("  engine: secrets\n  keywords: [abc]\n  regex: '(?P<secret>abc)'\n  reveal: [secret]", "reveal"),
    ],
)
def test_invalid_match_blocks_are_refused(match, message):
    with pytest.raises(ValueError, match=message):
        validate_rule(one_rule(match))


def test_rule_ids_and_category_are_checked():
    good = "  engine: secrets\n  keywords: [abc]\n  regex: 'abc'"
    validate_rule(one_rule(good))
    with pytest.raises(ValueError, match=r"start with 'secret\.'"):
        validate_rule(one_rule(good, rule_id="leak.test"))
    with pytest.raises(ValueError, match="category: secret"):
        validate_rule(parse_rule_documents(
            "id: secret.x\ntitle: xxx\nseverity: low\ncategory: malware\ndescription: 0123456789\n"
            f"remediation: 0123456789\nmatch:\n{good}\n", "t.yaml")[0])


def test_a_bad_regex_in_a_user_folder_is_a_rule_error_naming_the_file(tmp_path):
    folder = tmp_path / "rules"
    folder.mkdir()
    (folder / "broken.yaml").write_text(
        "id: secret.broken\ntitle: Broken rule\nseverity: high\ncategory: secret\n"
        "description: A broken regular expression.\nremediation: Fix the regular expression.\n"
        "match:\n  engine: secrets\n  keywords: [brk]\n  regex: 'brk[a-'\n")
    with pytest.raises(RuleError, match=r"broken\.yaml.*secret\.broken.*does not compile"):
        load_secret_rules([folder])
    with pytest.raises(RuleError, match=r"broken\.yaml"):
        load_all_rules([folder])


def test_user_rules_load_beside_the_builtin_ones(tmp_path):
    (tmp_path / "mine.yaml").write_text(
        "id: secret.acme_token\ntitle: ACME token\nseverity: high\ncategory: secret\n"
        "description: Tokens of the ACME internal API.\nremediation: Revoke it in the ACME console.\n"
        "match:\n  engine: secrets\n  keywords: [acme_]\n  regex: '(?P<secret>acme_[a-z0-9]{20})'\n")
    rules = load_secret_rules([tmp_path])
    assert "secret.acme_token" in {r.id for r in rules}
    found = CompiledRules(rules).scan(b"x = acme_" + fake(20, "abcdefghjk0123456789").encode(), "a.py")
    assert [m.rule_id for m in found] == ["secret.acme_token"]


def test_the_catalogue_has_at_least_120_secret_rules_and_loads_with_the_cli():
    secret_rules = [r for r in load_all_rules() if r.engine_name == "secrets"]
    assert len(secret_rules) >= 120
    assert len(secret_rules) == len(builtin_rules())


def test_requires_must_name_a_known_rule_and_no_cycle():
    bad = one_rule("  engine: secrets\n  keywords: [abc]\n  regex: 'abc'\n"
                   "  requires: {rule: secret.does_not_exist, within_lines: 2}")
    with pytest.raises(RuleError, match=r"secret\.does_not_exist"):
        CompiledRules([bad])
    a = one_rule("  engine: secrets\n  keywords: [abc]\n  regex: 'abc'\n  requires: {rule: secret.b, within_lines: 1}",
                 rule_id="secret.a")
    b = one_rule("  engine: secrets\n  keywords: [abc]\n  regex: 'abc'\n  requires: {rule: secret.a, within_lines: 1}",
                 rule_id="secret.b")
    with pytest.raises(RuleError, match="cycle"):
        CompiledRules([a, b])


def test_compile_cache_returns_the_same_object_for_the_same_rules():
    rules = list(builtin_rules())
    assert compile_rules(rules) is compile_rules(rules)
    assert compile_rules() is compile_rules(None)
    assert compile_rules(rules[:3]) is not compile_rules(rules[:4])


# --- windows are equivalent to whole-text regexes ---------------------------------------------------


def fixture_files() -> list[Path]:
    return sorted(p for p in (ROOT / "tests" / "rules").glob("secret.*/*") if p.is_file())


def test_windowed_scan_equals_whole_text_scan_on_every_fixture():
    compiled = compile_rules()
    for path in fixture_files():
        data = path.read_bytes()
        windowed = compiled.scan(data, path.name, keep_suppressed=True)
        whole = compiled.scan(data, path.name, keep_suppressed=True, windowed=False)
        assert keys(windowed) == keys(whole), path


def test_windowed_scan_equals_whole_text_scan_on_a_mixed_corpus():
    """Fixtures embedded between unrelated source files, as in a real repository dump. Whole-text
    mode also confirms candidates far from any keyword (which the filters then drop, e.g. as
    unpaired); the reported findings must be the same."""
    compiled = compile_rules()
    sources = sorted(p for p in (ROOT / "src" / "cloudward").rglob("*.py") if p.stat().st_size < 6000)
    parts = []
    for index, path in enumerate(fixture_files()):
        parts.append(sources[index % len(sources)].read_bytes())
        parts.append(path.read_bytes())
    data = b"\n".join(parts)
    windowed = compiled.scan(data, "corpus.txt")
    whole = compiled.scan(data, "corpus.txt", windowed=False)
    assert len(windowed) > 100
    assert keys(windowed) == keys(whole)


@pytest.mark.parametrize("backend", available_backends())
def test_every_prefilter_backend_gives_the_same_findings(backend):
    data = b"\n".join(p.read_bytes() for p in fixture_files())
    expected = keys(CompiledRules(builtin_rules(), "regex").scan(data, "corpus.txt", keep_suppressed=True))
    assert keys(CompiledRules(builtin_rules(), backend).scan(data, "corpus.txt", keep_suppressed=True)) == expected


# --- positions on hostile bytes ---------------------------------------------------------------------


def test_line_and_column_count_characters_after_multibyte_and_invalid_utf8():
    key = aws_key_id()
    data = "first line\r\n\u0441\u0435\u043a\u0440\u0435\u0442 = \u00fcn\u00efc\u00f6d\u00e9 ".encode()
    data += b"\xff\xfe " + key.encode() + b" \xc3\n"
    (match,) = compile_rules([rule("secret.aws_access_key_id")]).scan(data, "x.txt")
    assert match.line == 2
    # "<6 Cyrillic letters> = <7 accented letters> " is 17 characters, then 2 undecodable bytes and a space
    assert match.column == 17 + 2 + 1 + 1
    assert match.secret.reveal() == key.encode()


def test_invalid_utf8_inside_the_secret_line_does_not_hide_it():
    key = aws_key_id()
    data = b"\x80\x81\xfe" * 100 + b"id=" + key.encode() + b"\xff" * 50
    found = compile_rules([rule("secret.aws_access_key_id")]).scan(data, "blob.bin")
    assert [m.secret.reveal() for m in found] == [key.encode()]


def test_nul_bytes_and_binary_noise_are_fine():
    key = aws_key_id()
    data = bytes(range(256)) * 40 + b"\x00" + key.encode() + b"\x00" + bytes(range(256)) * 40
    assert len(compile_rules([rule("secret.aws_access_key_id")]).scan(data, "a.out")) == 1


# --- pairing, de-duplication, filters in context ---------------------------------------------------


def test_paired_secret_needs_its_key_id_within_five_lines():
    paired = compile_rules([rule("secret.aws_secret_access_key_paired")])
    key, secret = aws_key_id(), aws_secret()
    near = f"{key}\n" + "\n" * 4 + f"{secret}\n"
    far = f"{key}\n" + "\n" * 5 + f"{secret}\n"
    (match,) = paired.scan(near.encode(), "creds.csv")
    assert match.context["paired_rule"] == "secret.aws_access_key_id"
    assert match.context["paired"].startswith("AKIA") and key not in match.context["paired"]
    assert [m.suppressed for m in paired.scan(far.encode(), "creds.csv", keep_suppressed=True)] == ["unpaired"]


def test_requires_regex_partner_is_reported_as_context():
    kube = (ROOT / "tests/rules/secret.kubeconfig_token/positive.txt").read_bytes()
    (match,) = compile_rules([rule("secret.kubeconfig_token")]).scan(kube, "config")
    assert match.rule_id == "secret.kubeconfig_token"
    (gcp,) = compile_rules([rule("secret.gcp_service_account_key")]).scan(
        (ROOT / "tests/rules/secret.gcp_service_account_key/positive.json.txt").read_bytes(), "sa.json")
    assert gcp.context["client_email"].endswith(".iam.gserviceaccount.com")  # revealed: not a secret


def test_the_most_specific_rule_wins_overlapping_secrets():
    compiled = compile_rules()
    conn = (ROOT / "tests/rules/secret.azure_storage_connection_string/positive.txt").read_bytes()
    assert [m.rule_id for m in compiled.scan(conn, "appsettings.json")] == ["secret.azure_storage_connection_string"]
    key, secret = aws_key_id(), aws_secret()
    creds = f"[default]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n".encode()
    assert sorted(m.rule_id for m in compiled.scan(creds, "credentials")) == [
        "secret.aws_access_key_id", "secret.aws_secret_access_key"]
    sa = (ROOT / "tests/rules/secret.gcp_service_account_key/positive-compact.txt").read_bytes()
    assert [m.rule_id for m in compiled.scan(sa, "sa.json")] == ["secret.gcp_service_account_key"]


def test_minified_files_and_long_lines_run_only_high_confidence_rules():
    key = aws_key_id()
    password = mixed(16)
    line = f'var a={{password:"{password}",id:"{key}"}};'
    short = compile_rules().scan(line.encode(), "app.js")
    assert {m.rule_id for m in short} == {"secret.aws_access_key_id", "secret.generic_password"}
    minified = compile_rules().scan(line.encode(), "dist/app.min.js", keep_suppressed=True)
    assert {(m.rule_id, m.suppressed) for m in minified} == {
        ("secret.aws_access_key_id", None), ("secret.generic_password", "minified")}
    long_line = ("x=1;" * 2000 + line + "y=2;" * 2000).encode()
    found = compile_rules().scan(long_line, "app.js", keep_suppressed=True)
    assert {(m.rule_id, m.suppressed) for m in found} == {
        ("secret.aws_access_key_id", None), ("secret.generic_password", "minified")}


def test_lock_files_skip_integrity_hashes_and_generic_rules():
    key = aws_key_id()
    lock = (
        '{"packages": {"node_modules/x": {"version": "1.0.0",\n'
        f'  "integrity": "sha512-{mixed(86, ALNUM + "+/")}==",\n'
        f'  "token": "{mixed(40)}",\n'
        f'  "resolved": "https://registry.example.com/x.tgz?id={key}"}}}}}}\n'
    ).encode()
    found = compile_rules().scan(lock, "web/package-lock.json", keep_suppressed=True)
    reported = {m.rule_id for m in found if m.suppressed is None}
    assert reported == {"secret.aws_access_key_id"}
    assert ("secret.generic_token", "lock-file") in {(m.rule_id, m.suppressed) for m in found}


def test_test_fixture_paths_are_reported_one_step_lower_and_tagged():
    data = f"aws_access_key_id = {aws_key_id()}\n".encode()
    (normal,) = compile_rules().scan(data, "deploy/env")
    (fixture,) = compile_rules().scan(data, "app/tests/fixtures/env")
    assert normal.severity is Severity.HIGH and "test-fixture" not in normal.tags
    assert fixture.severity is Severity.MEDIUM and "test-fixture" in fixture.tags


def test_rule_path_allowlists_skip_matching_files():
    custom = one_rule("  engine: secrets\n  keywords: [acme_]\n  regex: 'acme_[0-9]{6}'\n"
                      "  allow: {paths: ['**/docs/**', '*.md']}")
    compiled = CompiledRules([custom])
    assert compiled.scan(b"acme_271828", "src/a.py")
    assert not compiled.scan(b"acme_271828", "proj/docs/a.txt")
    assert not compiled.scan(b"acme_271828", "README.md")


def test_allow_values_drop_matching_secrets():
    custom = one_rule("  engine: secrets\n  keywords: [acme_]\n  regex: 'acme_[0-9]{6}'\n"
                      "  allow: {values: ['^acme_0']}")
    found = CompiledRules([custom]).scan(b"acme_012345 acme_271828", "a", keep_suppressed=True)
    assert [(m.secret.reveal(), m.suppressed) for m in found] == [
        (b"acme_012345", "allow-value"), (b"acme_271828", None)]


def test_inline_ignore_on_the_same_line():
    key1, key2, key3 = aws_key_id(), aws_key_id(), aws_key_id()
    data = (f"a = '{key1}'  # cloudward:ignore\n"
            f"b = '{key2}'  # cloudward:ignore secret.aws_access_key_id\n"
            f"c = '{key3}'  # cloudward:ignore secret.generic_token\n"
            "# cloudward:ignore\n"
            f"d = '{aws_key_id()}'\n").encode()
    found = compile_rules([rule("secret.aws_access_key_id")]).scan(data, "a.py", keep_suppressed=True)
    assert [(m.line, m.suppressed) for m in found] == [
        (1, "inline-ignore"), (2, "inline-ignore"), (3, None), (5, None)]


def test_inline_ignore_on_the_begin_or_end_line_of_a_private_key():
    key = (ROOT / "tests/rules/secret.private_key_ec/positive.txt").read_text()
    lines = key.splitlines()
    ignored_end = "\n".join([*lines[:-1], lines[-1] + "  # cloudward:ignore"]) + "\n"
    compiled = compile_rules([rule("secret.private_key_ec")])
    assert compiled.scan(key.encode(), "k.pem")
    assert not compiled.scan(ignored_end.encode(), "k.pem")


# --- secrets never show themselves -----------------------------------------------------------------


def test_secret_repr_str_and_pickle_never_reveal_the_value():
    value = aws_secret()
    secret = Secret(value.encode())
    assert value not in repr(secret) and value not in str(secret)
    assert secret.masked.startswith(value[:4]) and secret.masked.endswith(value[-4:])
    with pytest.raises(TypeError, match="cannot be pickled"):
        pickle.dumps(secret)
    key, sk = aws_key_id(), aws_secret()
    matches = compile_rules().scan(f"aws_access_key_id={key}\naws_secret_access_key={sk}\n".encode(), "c")
    assert matches and all(key not in repr(m) and sk not in repr(m) for m in matches)


def test_long_secrets_mask_to_one_short_line():
    key = (ROOT / "tests/rules/secret.private_key_rsa/positive.txt").read_bytes()
    (match,) = compile_rules([rule("secret.private_key_rsa")]).scan(key, "id_rsa")
    assert len(match.secret.masked) == 32 and "\n" not in match.secret.masked


# --- streams: the chunk / overlap contract ---------------------------------------------------------


def _planted_single_line(size: int, plants: dict[int, str]) -> bytes:
    filler = b"function(a){return a+1};var b=[1,2,3].map(String);"
    data = bytearray((filler * (size // len(filler) + 1))[:size])
    for offset, text in plants.items():
        data[offset:offset + len(text)] = text.encode()
    return bytes(data)


def _boundaries(compiled, size: int, chunk: int, pieces: list[int]) -> list[int]:
    """Where consecutive scans' emit ranges meet when `size` bytes arrive in `pieces` sizes."""
    scanner = StreamScanner(compiled, "probe", chunk_size=chunk)
    seen = []
    for piece in _pieces(size, pieces):
        scanner.feed(b" " * piece)
        if scanner._emit_from and (not seen or seen[-1] != scanner._emit_from):
            seen.append(scanner._emit_from)
    return seen


def _pieces(size: int, pattern: list[int]):
    position, index = 0, 0
    while position < size:
        piece = min(pattern[index % len(pattern)], size - position)
        yield piece
        position += piece
        index += 1


@pytest.mark.parametrize("pattern", [[256 * 1024], [1, 7, 65536, 300_001, 256 * 1024, 3]])
def test_multi_megabyte_single_line_streamed_in_chunks_matches_whole_scan(pattern):
    compiled = compile_rules()
    chunk = 256 * 1024
    size = 8 * 1024 * 1024
    boundaries = _boundaries(compiled, size, chunk, pattern)
    assert len(boundaries) > 20
    plants = {10: f'"{aws_key_id()}"', size - 60: f'"{aws_key_id()}"'}
    for boundary in boundaries[:6]:
        plants[boundary - 11] = f'"{aws_key_id()}"'  # straddles the boundary
    plants[boundaries[6] - 60] = f'"{aws_key_id()}"'  # just before one
    plants[boundaries[7]] = f'"{aws_key_id()}"'  # the quote right on one
    plants[boundaries[8] - 40] = f'"dop_v1_{fake(64, "0123456789abcdef")}"'  # 71 bytes across one
    plants[boundaries[9] + 1000] = f'password:"{mixed(16)}",'  # generic: suppressed on a minified line
    data = _planted_single_line(size, plants)
    whole = compiled.scan(data, "bundle.js", keep_suppressed=True)
    assert len([m for m in whole if m.suppressed is None]) == 11
    assert [m.suppressed for m in whole if m.rule_id == "secret.generic_password"] == ["minified"]

    scanner = StreamScanner(compiled, "bundle.js", chunk_size=chunk, keep_suppressed=True)
    streamed = []
    position = 0
    for piece in _pieces(size, pattern):
        streamed += scanner.feed(data[position:position + piece])
        position += piece
    streamed += scanner.close()
    assert keys(streamed) == keys(whole)
    assert len({m.start for m in streamed}) == len(streamed)  # each match once
    assert all(m.line == 1 for m in streamed)
    assert sorted(m.column - 1 for m in streamed if m.rule_id == "secret.aws_access_key_id") == [
        o + 1 for o in sorted(o for o, t in plants.items() if "AKIA" in t)]


def test_streamed_line_numbers_are_global():
    compiled = compile_rules([rule("secret.aws_access_key_id")])
    lines = [f"line {i} " + ("filler " * 20) for i in range(60_000)]
    for n in (5, 20_000, 40_001, 59_999):
        lines[n] = f"key = {aws_key_id()}"
    data = "\n".join(lines).encode()
    whole = compiled.scan(data, "big.log")
    streamed = scan_buffer(compiled, data, "big.log", chunk_size=64 * 1024)
    assert [m.line for m in whole] == [6, 20_001, 40_002, 60_000]
    assert keys(streamed) == keys(whole)


def test_stream_scanner_refuses_feed_after_close():
    scanner = StreamScanner(compile_rules(), "x")
    scanner.feed(b"abc")
    assert scanner.close() == []
    assert scanner.close() == []
    with pytest.raises(ValueError):
        scanner.feed(b"more")
