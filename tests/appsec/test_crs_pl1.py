"""The CRS paranoia-level-1 stages of SQLi, XSS, RCE and LFI that ModSecurity blocked and cloudward let
through (benchmarks/appsec/crs.py), and the PL2 shapes added beside them: for every new pattern, decoder
or code check, a request it must catch and a look-alike it must let pass.

Left out on purpose (each a PL1 stage CRS itself calls a false positive, or one no rule can tell from
ordinary text): 941120 tests 10/12/13 (`...onabcd=` inside webhook signatures and JWTs, "expected (rare)
false positive"), 941390 test 10 (`import (` in English, "known false positive"), 932250 test 9 (`ls foo
bar`, the shape of the search `ls vs dir`) and 932260 test 7 (`python3.10 cmd`, the shape of a search for
`python3.10 tutorial`)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.appsec.decode import variants
from cloudward.appsec.detectors import is_sqli, is_xss
from tests.appsec.conftest import Judge, catches_and_passes, q, rules_of

# (rule, attack value, benign look-alike) — each judged as a query parameter `q`
PAIRS = [
    # SQLi, PL1: a function name, `=` and a parenthesis; a quoted JSON document compared with a path
    ("appsec.sqli", "encode=(", "encode the file (quickly)"),
    ("appsec.sqli", "'{\"a\":2,\"c\":[4,5,{\"f\":7}]}' < '$.c[2].f' = 7", "'{\"a\": 2}' is the JSON we send"),
    ("appsec.sqli", "'{\"a\":2}' > '$.a'", "{a} > {b} in the 'docs'"),
    # SQLi, PL2 shapes
    ("appsec.sqli", "xp_dirtree", "xp_points"),
    ("appsec.sqli", "OPENROWSET", "open row set"),
    ("appsec.sqli", 'FROM ack_variable WHERE name="cron_last";', "from home where the heart is"),
    ("appsec.sqli", "SELECT (CASE", "select (in case you need it)"),
    ("appsec.sqli", ") when 234 then", "(see notes) when ready, then go"),
    ("appsec.sqli", "xor 2 <", "xor gate"),
    ("appsec.sqli", "or 'a' <", "or 'a' is fine"),
    ("appsec.sqli", "AND 7639=(", "and x = y"),
    ("appsec.sqli", "|| langcode == '", "|| langcode"),
    ("appsec.sqli", "x'|email--", "the 'x' key -- press it"),
    ("appsec.sqli", "x' mod id--", "it's mod day -- yes"),
    ("appsec.sqli", "42<=>42", "why does 1+1=2"),
    ("appsec.sqli", "1 is not 2", "1 is not enough"),
    ("appsec.sqli", "'1'='1", "'a' and 'b'"),
    ("appsec.sqli", "select 0x616263", "select 0 items"),
    ("appsec.sqli", "something LIKE '", "I like 'Dune'"),
    ("appsec.sqli", "DROP sampletable;--", "drop me a line; thanks"),
    ("appsec.sqli", "DELETE FROM users;--", "delete from my list please"),
    ("appsec.sqli", "HAVING 1=", "having 1 cat"),
    ("appsec.sqli", ") AS orders FROM", "as seen from the hill"),
    ("appsec.sqli", "date]=(", "the date (in UTC) of the event"),
    ("appsec.sqli", "length||(", "length in cm (approx.)"),
    ("appsec.sqli", ";update users", "; update the docs"),
    ("appsec.sqli", "' UNION A", 'Die "Union von Europa"'),
    ("appsec.sqli", ";SET @OLD_SQL_MODE", "set @john as admin"),
    ("appsec.sqli", "name=(select", "name = select one"),
    ("appsec.sqli", "from `db_miwf`.`sys_refindex` limit", "Copy the bits from `src` to `dst`."),
    ("appsec.sqli", "FROM termine GROUP BY tag1", "away from termine group"),
    ("appsec.sqli", "VALUES ('192.168.0.1', 'test')", "values (and ethics)"),
    ("appsec.sqli", "OR 1# ", "or 1 more"),
    # SQL keywords split by comments (judged on the value as sent, before comments are blanked)
    ("appsec.sqli", "DR/**/OP/*bypass deny listing*/sampletable", "see /* note */ below"),
    ("appsec.sqli", "SELECT/*avoid-spaces*/password/**/FROM/**/Members", "a /* b */ c"),
    # XSS, PL1: an external entity declaration, a tag in US-ASCII with the 8th bit set
    ("appsec.xss", "foo!ENTITY % bar SYSTEM", "entity system design"),
    ("appsec.xss", "\xbctest\xbetest(\xa2XSS\xa2)\xbc/test\xbe", "\xbc cup and \xbe cup"),
    # XSS, PL2: a comment closed at the start of a value, a tag left open after a quoted attribute
    ("appsec.xss", "-->", "a --> b"),
    ("appsec.xss", '<a href="test"', '<a href="https://www.youtube.com/watch?v='),
    ("appsec.xss", "<img alt='x'", "x<y z"),
    # RCE, PL1: a command escaped with a backslash at the start of a value
    ("appsec.cmdi_escaped", "\\ls", "docs\\ls"),
    ("appsec.cmdi_escaped", "\\curl http://x", "\\lsof-notes"),
]


@pytest.mark.parametrize(("rule", "attack", "benign"), PAIRS, ids=[f"{r}:{a[:20]}" for r, a, _ in PAIRS])
def test_new_pattern_catches_attack_and_passes_look_alike(judge: Judge, rule: str, attack: str, benign: str) -> None:
    catches_and_passes(judge, rule, attack, benign)


def test_vite_module_path_is_lfi(judge: Judge) -> None:  # 930130: the Vite dev server's /@id/ and /@fs/
    assert "appsec.lfi" in rules_of(judge("import", path="/@id/__x00__"))
    assert "appsec.lfi" in rules_of(judge(path="/@fs/srv/app/.env"))
    assert judge(path="/users/@idle/profile") == []
    assert judge(path="/@idris/docs") == []


@pytest.mark.parametrize("name", ["config.yml ", "config-prod.json", "settings.local.php", "wp-config_php.txt",
                                  "secrets.yaml", "mtrr", "acpi", "uploads/kallsyms"])
def test_upload_named_after_a_config_file_or_proc_interface(judge: Judge, name: str) -> None:  # 932180
    assert "appsec.upload_config_file" in rules_of(judge(headers=[("x-filename", name)]))


@pytest.mark.parametrize("name", ["my-config.yml", "configuration.pdf", "acpi-notes.txt", "settings-guide.md",
                                  "mtrr-benchmark.csv"])
def test_upload_with_config_in_its_name_passes(judge: Judge, name: str) -> None:
    assert judge(headers=[("x-filename", name)]) == []


def test_multipart_upload_of_config_yml(judge: Judge) -> None:
    body = (b'--B\r\nContent-Disposition: form-data; name="config"; filename="config.yml"\r\n'
            b"Content-Type: text/yaml\r\n\r\n... Some content ...\r\n--B--\r\n")
    found = judge(body=body, content_type="multipart/form-data; boundary=B", method="POST")
    assert "appsec.upload_config_file" in rules_of(found)
    clean = body.replace(b'filename="config.yml"', b'filename="holiday.jpg"')
    assert judge(body=clean, content_type="multipart/form-data; boundary=B", method="POST") == []


def test_form_encoding_inside_an_xml_attribute(judge: Judge) -> None:  # 942240: `+` for blanks, `%XX` escapes
    def post(attribute: str) -> list[tuple[str, str]]:
        body = f'<?xml version="1.0"?><root><a probe="{attribute}"></a></root>'.encode()
        return judge(body=body, content_type="application/xml", method="POST")

    assert "appsec.sqli" in rules_of(post("%22+WAITFOR+DELAY+%27%0A"))
    assert post("c%2B%2B+templates+%26+generics") == []


def test_backslash_escapes_of_high_bit_markup_in_a_form(judge: Judge) -> None:  # 941310: `\xbc` written out
    body = b"test=\\xbctest\\xbetest(\\xa2XSS\\xa2)\\xbc/test\\xbe"
    assert "appsec.xss" in rules_of(judge(body=body, content_type="application/x-www-form-urlencoded",
                                          method="POST"))
    benign = b"test=\\xbc+cup+of+sugar"
    assert judge(body=benign, content_type="application/x-www-form-urlencoded", method="POST") == []


def test_entity_declaration_in_the_user_agent(judge: Judge) -> None:  # 941130
    assert "appsec.xss" in rules_of(judge(headers=[("user-agent", "foo!ENTITY % bar SYSTEM")]))
    assert judge(headers=[("user-agent", "EntitySystem/2.1 (bar)")]) == []


def test_plus_form_only_for_values_mixing_plus_and_escapes() -> None:
    assert '" WAITFOR' in " ".join(variants("%22+WAITFOR"))
    assert variants("a+b") == ["a+b"]  # no escape: `+` is a plus (or already a blank, decoded by the parser)
    assert all(" " not in v for v in variants("c%2B%2Bx"))


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from("ab%2B+/*'\"() -=;"), max_size=80))
def test_decoders_and_comment_check_are_total_and_bounded(text: str) -> None:
    forms = variants(text)
    assert forms[0] == text
    assert all(len(form) <= len(text) for form in forms)  # decoding only ever shrinks
    result = is_sqli(text)
    assert result is None or isinstance(result, str)


# corpus-benign stages no longer blocked: an XML declaration opening a value, `; time` followed by prose,
# and sentences libinjection reads as SQL by their first tokens
def test_xml_declaration_is_not_xss_but_what_follows_it_is(judge: Judge) -> None:  # 933100 tests 31/32/37/60
    assert judge(q('<?xml version="1.0" encoding="UTF-8"?><order><id>12345</id></order>')) == []
    assert "appsec.xss" in rules_of(judge(q('<?xml version="1.0"?><svg onload=alert(1)>')))
    assert is_xss('<?xml version="1.0"?><script>alert(1)</script>')
    assert not is_xss('<?xml version="1.0" standalone="yes"?>')


def test_time_after_a_semicolon_needs_a_command(judge: Judge) -> None:  # 932235 test 20, 932236 test 45
    assert judge(q("hello; time he came")) == []
    assert "appsec.cmdi" in rules_of(judge(q("; time sh -c id")))


@pytest.mark.parametrize("text", [
    "Left (WA, RR), following wood edge south for half a mile to Pangfield Farm (564719).",
    "One quarter (24%) of people have had an affair and cheated on a partner at some point",
])
def test_long_prose_is_not_sqli_by_its_first_tokens(judge: Judge, text: str) -> None:  # 942151 tests 13/14
    assert is_sqli(text) is None
    assert judge(q(text)) == []


@pytest.mark.parametrize("text", [
    "1 and (1)=(1) and these words follow after it to look like a sentence",
    "1 or sleep(5) and these words follow after it to look like a sentence",
    "1' or (1)=(1) and these words follow after it to look like a sentence",
])
def test_long_values_with_sql_logic_stay_sqli(judge: Judge, text: str) -> None:
    assert is_sqli(text) is not None
    assert "appsec.sqli" in rules_of(judge(q(text)))



def test_plain_style_declarations_are_not_xss(judge: Judge) -> None:  # 941140 tests 11/13
    assert judge(q("style=color:red;background:white")) == []
    assert not is_xss("style=a:b;a:b;a:b;a:b")
    for attack in ("style=x:expression(alert(1))", "style=background:url(javascript:alert(1))",
                   'style=color:red" onmouseover="alert(1)'):
        assert "appsec.xss" in rules_of(judge(q(attack)))
