"""The shortcuts of the judge give the verdicts the full judgement gives: the memo of request parts, the
hints that settle a value without calling a detector, and the quiet path of bodiless requests."""

from __future__ import annotations

from urllib.parse import quote

import pytest

from cloudward.appsec.engine import Inspector
from cloudward.appsec.memo import Memo
from cloudward.appsec.policy import Policy
from cloudward.appsec.request import HttpRequest

BROWSER = [("host", "shop.example"),
           ("user-agent", "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"),
           ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"),
           ("cookie", "sessionid=8f14e45fceea167a5a36dedd4bea2543; theme=dark")]
VALUES = ["blue shoes 12", "Blue Shoes", "O'Reilly", "1 OR 1=1", "' or '1'='1", "<script>alert(1)</script>",
          "../../etc/passwd", "http://169.254.169.254/latest/meta-data/", "127.0.0.1", "//evil.example/x",
          "${jndi:ldap://x/a}", "; cat /etc/passwd", "2024-01-01", "a/b", "javascript:alert(1)", "%3Cscript%3E",
          "union select", "\uff1cscript\uff1e", "caf\u00e9 cr\u00e8me", "2130706433"]
NAMES = ["q", "url", "next", "file", "host"]


def test_memo_keeps_what_is_asked_again_and_stays_bounded() -> None:
    memo: Memo[int] = Memo(4)
    memo.put("keep", 1)
    for n in range(40):
        memo.put(n, n)
        assert memo["keep"] == 1  # asked every time: moved to the newer generation
    assert memo[0] is None
    assert len(memo) <= 4 and len(memo._old) <= 4


def _request(query: str, headers: list[tuple[str, str]] = BROWSER) -> HttpRequest:
    return HttpRequest("GET", "/search", query, list(headers), client="127.0.0.1")


@pytest.mark.parametrize("name", NAMES)
def test_remembered_parts_give_the_same_verdicts(name: str) -> None:
    inspector, fresh = Inspector(), Inspector()
    policy = Policy().with_mode("block").for_request("GET", "/search")
    for value in VALUES:
        query = f"{name}={quote(value, safe='')}&page=2"
        first = inspector.inspect(_request(query), policy).detections
        again = inspector.inspect(_request(query), policy).detections  # from memory now
        alone = fresh.inspect(_request(query), policy).detections
        assert first == again
        assert [(d.rule_id, d.location) for d in first] == [(d.rule_id, d.location) for d in alone]


@pytest.mark.parametrize("name", NAMES)
def test_quiet_only_when_the_full_judgement_finds_nothing(name: str) -> None:
    inspector = Inspector()
    policy = Policy().with_mode("block").for_request("GET", "/search")
    inspector.inspect(_request(""), policy)  # path and headers judged (and remembered) once
    for value in VALUES:
        query = f"{name}={quote(value, safe='')}"
        quiet = inspector.quiet("/search", query, list(BROWSER))
        found = inspector.inspect(_request(query), policy).detections
        assert quiet == (not found), (value, found)


def test_quiet_never_vouches_for_unjudged_parts() -> None:
    inspector = Inspector()
    assert not inspector.quiet("/search", "q=shoes", list(BROWSER))  # path and headers not judged yet
    hostile = [*BROWSER[:-1], ("user-agent", "sqlmap/1.7")]
    policy = Policy().with_mode("block").for_request("GET", "/search")
    assert inspector.inspect(_request("q=shoes", hostile), policy).detections
    assert not inspector.quiet("/search", "q=shoes", hostile)  # judged, and not clean
