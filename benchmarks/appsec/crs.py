"""The OWASP CRS regression corpus and a set of ordinary benign requests, replayed request by request
against (a) the cloudward-protected FastAPI app (ASGI middleware, block mode), (c) the same app with
cloudward's optional in-process CRS engine on (policy `crs:` at paranoia level 1, threshold 5: CRS v4
run by the libmodsecurity wheel inside the app, beside cloudward's own rules; `--no-crs-engine`
leaves this target out) and (b) nginx + ModSecurity v3 + CRS v4 at paranoia level 1 (anomaly scoring,
inbound threshold 5, blocking, and `tx.enforce_bodyproc_urlencoded=1` so a body without Content-Type
is read as a form, as cloudward reads it) proxying to the same app unprotected. Only 127.0.0.1 is
contacted. Each request carries an `X-Cloudward-Stage` header after its request line, so
ModSecurity's audit log tells which rules fired for it: its blocks are also counted with attack-class
rules (930-944) only, since at PL1 a body without Content-Type is blocked by protocol rules (920340 +
920640) whatever it holds.

Detection: the share of attack stages (`expect_ids` non-empty) answered 403, per class, over all of
them and over the PL1 ones (the stage expects at least one paranoia-level-1 rule).

False positives, judged the fair way (a request is a false positive only when nothing should fire):
  * corpus-benign stages: stages that expect no rule to fire (no `expect_ids`, no `log_contains`) AND
    are marked benign by the corpus itself — their `no_expect_ids` name the blocking rule 949110, or
    the test's `desc` calls the request a false positive / FP / legitimate / benign / natural English
    (the regex BENIGN_DESC). Every no_expect_ids stage of this corpus names exactly one rule, so
    "no_expect_ids lists every rule of the class" selects nothing; and a test described only as
    "negative" or "should not match" is often an attack for another rule (`'||(select(pg_sleep(15))`
    is a "negative test" of 942360), so those are not counted.
  * the benign set built here (BENIGN): form posts, JSON APIs, searches such as `O'Reilly`, `select a
    book`, `rm -rf guide`, URLs and file paths in parameters, ordinary browser headers.

The CRS-engine target's blocks are also counted with attack rules only: cloudward's own rules, or a
CRS attack-class rule (930-944) among those its `appsec.crs` finding names (found by the incident id
of each 403 answer).

Usage: .venv/bin/python benchmarks/appsec/crs.py [--concurrency 8] [--no-write] [--no-crs-engine]
Peers: benchmarks/appsec/setup (nginx, libnginx-mod-http-modsecurity). CRS: ../shared/corpora/crs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import yaml  # noqa: E402
from benchmarks._common import machine, today, write_section  # noqa: E402
from tests.appsec.servers import findings, start_fastapi  # noqa: E402
from tests.harness.services import Service, port_open  # noqa: E402

from cloudward.appsec.corpus import HEADLINE, Outcome, Stage, load_corpus, paranoia_levels, replay  # noqa: E402

CRS = ROOT.parent / "shared" / "corpora" / "crs"
CORPUS = CRS / "tests"
RULES = CRS / "rules"
LOG_LEVEL = "error"  # "warn" logs every rule that matched, for looking into one request
MODULE = Path("/usr/lib/nginx/modules/ngx_http_modsecurity_module.so")
CRS_ENGINE = "cloudward+crs"  # the third target: cloudward with its in-process CRS engine (PL1)
GAP_CLASSES = ("sqli", "xss", "rce", "lfi")
BENIGN_DESC = re.compile(r"false.?positive|\bFP\b|legit|benign|natural english", re.IGNORECASE)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# --- the benign set ---------------------------------------------------------------------------

_UA = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
_BROWSER = {"User-Agent": _UA, "Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            "Accept-Language": "en-GB,en;q=0.7,de;q=0.3", "Accept-Encoding": "gzip, deflate, br"}


def _req(method: str, uri: str, body: str = "", ctype: str = "", **headers: str) -> bytes:
    lines = [f"{method} {uri} HTTP/1.1", "Host: localhost"]
    merged = {**_BROWSER, **{k.replace("_", "-"): v for k, v in headers.items()}}
    lines += [f"{k}: {v}" for k, v in merged.items()]
    data = body.encode()
    if ctype:
        lines.append(f"Content-Type: {ctype}")
    if body or method in ("POST", "PUT", "PATCH"):
        lines.append(f"Content-Length: {len(data)}")
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


_FORM = "application/x-www-form-urlencoded"
_JSON = "application/json"
BENIGN: list[tuple[str, bytes]] = [
    ("home page", _req("GET", "/")),
    ("static asset", _req("GET", "/static/css/site.min.css?v=3.2.1")),
    ("search O'Reilly", _req("GET", "/search?q=O%27Reilly+books")),
    ("search select a book", _req("GET", "/search?q=select+a+book+from+the+shelf")),
    ("search rm -rf guide", _req("GET", "/search?q=rm+-rf+guide")),
    ("search union station", _req("GET", "/search?q=union+station+to+chicago")),
    ("search drop table tennis", _req("GET", "/search?q=drop+table+tennis+balls")),
    ("search and/or", _req("GET", "/search?q=cats+and+dogs+or+birds")),
    ("search with quotes", _req("GET", "/search?q=%22new+york%22+pizza")),
    ("search c++", _req("GET", "/search?q=c%2B%2B+templates+%26+generics")),
    ("search email", _req("GET", "/search?q=jane.doe%40example.com")),
    ("search 1=1 math", _req("GET", "/search?q=why+does+1%2B1%3D2")),
    ("search script word", _req("GET", "/search?q=movie+script+writing+tips")),
    ("search cat command", _req("GET", "/search?q=cat+food+for+seniors")),
    ("search ping pong", _req("GET", "/search?q=ping+pong+table")),
    ("search ls", _req("GET", "/search?q=ls+vs+dir")),
    ("pagination", _req("GET", "/api/v1/items?page=2&per_page=50&sort=-created_at&filter[status]=open")),
    ("date range", _req("GET", "/reports?from=2024-01-01&to=2024-03-31&tz=Europe%2FBerlin")),
    ("url param", _req("GET", "/share?url=https%3A%2F%2Fwww.example.com%2Farticles%2F42%3Fref%3Dhome")),
    ("redirect to own path", _req("GET", "/login?next=%2Faccount%2Fsettings")),
    ("callback url", _req("GET", "/oauth/callback?code=4%2F0AX4XfWj&state=af0ifjsldkj&scope=email+profile")),
    ("webhook config", _req("POST", "/hooks", json.dumps({"url": "https://hooks.slack.com/services/T000/B000/XXX",
                                                          "events": ["push", "release"]}), _JSON)),
    ("file path param", _req("GET", "/files?path=reports%2F2024%2Fq1-summary.pdf")),
    ("download name", _req("GET", "/download?file=invoice-2024-03.pdf&inline=1")),
    ("windows path", _req("POST", "/import", "source=C%3A%5CUsers%5Cjane%5CDocuments%5Cdata.csv", _FORM)),
    ("login form", _req("POST", "/login", "username=jane.doe&password=Tr0ub4dor%263&remember=on", _FORM)),
    ("signup form", _req("POST", "/signup", "name=Se%C3%A1n+O%27Brien&email=sean%40example.ie&country=IE&"
                                            "bio=I+like+hiking%2C+coffee+%26+open-source.", _FORM)),
    ("comment form", _req("POST", "/comments", "post=17&body=Great+article%21+I+tried+the+select+statement+"
                                              "and+it+worked.+Thanks+%3A-%29", _FORM)),
    ("address form", _req("POST", "/checkout", "street=12+Main+St.%2C+Apt+%234&city=Springfield&zip=62704&"
                                              "note=Leave+at+the+door+-+don%27t+ring", _FORM)),
    ("json order", _req("POST", "/api/orders", json.dumps({"customer": {"name": "O'Connor", "email": "a@b.co"},
                                                         "items": [{"sku": "BK-101", "qty": 2}],
                                                         "note": "Gift wrap, please; thanks!"}), _JSON)),
    ("json profile", _req("PUT", "/api/users/42", json.dumps({"displayName": "Ana & Bob",
                                                            "website": "https://ana.example.org/",
                                                            "about": "Data engineer (SQL, Python)."}), _JSON)),
    ("json search", _req("POST", "/api/search", json.dumps({"query": "where to buy union jack flags",
                                                          "filters": {"price": {"gte": 10, "lte": 50}}}), _JSON)),
    ("json markdown", _req("POST", "/api/notes", json.dumps({"title": "Meeting notes",
                                                           "body": "## Agenda\n- review Q1\n- *budget* & hires\n"
                                                                   "1. select vendor\n2. update roadmap"}), _JSON)),
    ("json code snippet", _req("POST", "/api/snippets", json.dumps({"lang": "python",
                                                                  "code": "for i in range(10):\n    print(i)"}),
                                _JSON)),
    ("graphql", _req("POST", "/graphql", json.dumps({"query": "query { user(id: 5) { name posts { title } } }"}),
                     _JSON)),
    ("cookie session", _req("GET", "/dashboard", Cookie="sessionid=8f14e45fceea167a5a36dedd4bea2543; "
                                                        "theme=dark; _ga=GA1.2.1234567890.1700000000")),
    ("referer", _req("GET", "/products/12", Referer="https://www.google.com/search?q=best+hiking+boots")),
    ("bearer token", _req("GET", "/api/me", Authorization="Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0."
                                                          "dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U")),
    ("mobile UA", _req("GET", "/", User_Agent="Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) "
                                             "AppleWebKit/605.1.15 (KHTML, like Gecko) Version/17.4 Mobile/15E148 "
                                             "Safari/604.1")),
    ("curl UA json", _req("GET", "/api/health", User_Agent="curl/8.5.0", Accept="application/json")),
    ("unicode search", _req("GET", "/search?q=%E6%9D%B1%E4%BA%AC+%E3%83%A9%E3%83%BC%E3%83%A1%E3%83%B3")),
    ("german text", _req("POST", "/feedback", "msg=Gr%C3%BC%C3%9Fe+aus+M%C3%BCnchen%21+Alles+gut.", _FORM)),
    ("percent sign", _req("GET", "/sale?discount=20%25&label=20%25+off+everything")),
    ("math expression", _req("GET", "/calc?expr=%283+%2B+4%29+*+5+-+2%2F1")),
    ("hashtag", _req("GET", "/tags?tag=%23python&tag=%23devops")),
    ("semicolon list", _req("GET", "/export?cols=id%3Bname%3Bemail&sep=%3B")),
    ("pipe list", _req("GET", "/filter?status=open%7Cclosed")),
    ("brackets", _req("GET", "/api/items?ids[]=1&ids[]=2&ids[]=3")),
    ("image url", _req("POST", "/avatar", json.dumps({"image_url": "https://cdn.example.com/u/42/avatar.png"}),
                       _JSON)),
    ("relative path", _req("GET", "/docs?page=guides%2Finstall%2Flinux")),
    ("version string", _req("GET", "/api/compat?client=app%2F3.14.1+(build+207)")),
    ("sql tutorial title", _req("POST", "/posts", "title=How+to+use+ORDER+BY+in+SQL&tags=sql%2Cdatabases",
                                _FORM)),
    ("html-ish text", _req("POST", "/posts", "body=Use+a+%3Cb%3Ebold%3C%2Fb%3E+word+for+emphasis", _FORM)),
    ("multipart upload", _req("POST", "/upload", "--b0und\r\nContent-Disposition: form-data; name=\"title\"\r\n\r\n"
                                                 "Holiday photos\r\n--b0und\r\nContent-Disposition: form-data; "
                                                 "name=\"file\"; filename=\"beach.jpg\"\r\nContent-Type: image/jpeg"
                                                 "\r\n\r\n\xff\xd8\xff\xe0JFIF data\r\n--b0und--\r\n",
                              "multipart/form-data; boundary=b0und")),
    ("delete item", _req("DELETE", "/api/items/42")),
    ("patch json", _req("PATCH", "/api/items/42", json.dumps({"op": "replace", "path": "/title", "value": "New"}),
                        "application/json-patch+json")),
]


# --- corpus-benign stages -------------------------------------------------------------------------

def corpus_benign(corpus: Path) -> set[tuple[str, str, int]]:
    """(file, test_id, stage index) of the stages the corpus marks benign (see the module docstring)."""
    out: set[tuple[str, str, int]] = set()
    for path in sorted(corpus.rglob("*.yaml")):
        relative = path.relative_to(corpus).as_posix()
        if "RESPONSE-" in relative:
            continue
        try:
            document = yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)
        except (yaml.YAMLError, UnicodeDecodeError):
            continue
        if not isinstance(document, dict):
            continue
        for test in document.get("tests") or []:
            if not isinstance(test, dict):
                continue
            described = bool(BENIGN_DESC.search(str(test.get("desc") or "")))
            for index, stage in enumerate(test.get("stages") or []):
                body = stage.get("stage", stage) if isinstance(stage, dict) else None
                if not isinstance(body, dict) or not isinstance(body.get("input"), dict):
                    continue
                output = body.get("output") or {}
                log = output.get("log") or {}
                if log.get("expect_ids") or output.get("log_contains"):
                    continue
                no_expect = str(log.get("no_expect_ids") or "") + str(output.get("no_log_contains") or "")
                if described or "949110" in no_expect:
                    out.add((relative, str(test.get("test_id", "?")), index))
    return out


# --- nginx + ModSecurity + CRS ------------------------------------------------------------------------

def start_modsecurity(upstream_port: int) -> Service:
    if shutil.which("nginx") is None or not MODULE.exists():
        raise SystemExit("nginx or its ModSecurity module is missing: run benchmarks/appsec/setup")
    service = Service("appsec-nginx-modsec")
    d = service.dir
    with service.cleanup_on_error():
        for sub in ("logs", "tmp", "modsec-tmp", "modsec-data"):
            (d / sub).mkdir()
        setup = (CRS / "crs-setup.conf.example").read_text()
        setup += ("\n# cloudward benchmark: paranoia level 1, blocking (anomaly scoring), inbound threshold 5\n"
                  'SecAction "id:900000,phase:1,pass,t:none,nolog,setvar:tx.blocking_paranoia_level=1"\n'
                  'SecAction "id:900110,phase:1,pass,t:none,nolog,setvar:tx.inbound_anomaly_score_threshold=5,'
                  'setvar:tx.outbound_anomaly_score_threshold=4"\n'
                  "# a body without Content-Type is parsed as a form (cloudward does the same), not left unread\n"
                  'SecAction "id:900010,phase:1,pass,t:none,nolog,setvar:tx.enforce_bodyproc_urlencoded=1"\n')
        (d / "crs-setup.conf").write_text(setup)
        rules = sorted(p for p in RULES.glob("*.conf"))
        main = [
            "SecRuleEngine On",
            "SecRequestBodyAccess On",
            'SecRule REQUEST_HEADERS:Content-Type "^(?:application(?:/soap\\+|/)|text/)xml" '
            '"id:200000,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=XML"',
            'SecRule REQUEST_HEADERS:Content-Type "^application/json" '
            '"id:200001,phase:1,t:none,t:lowercase,pass,nolog,ctl:requestBodyProcessor=JSON"',
            "SecRequestBodyLimit 13107200",
            "SecRequestBodyNoFilesLimit 131072",
            "SecRequestBodyLimitAction Reject",
            'SecRule REQBODY_ERROR "!@eq 0" "id:200002,phase:2,t:none,log,deny,status:400,'
            "msg:'Failed to parse request body.'\"",
            "SecResponseBodyAccess Off",
            f"SecTmpDir {d / 'modsec-tmp'}",
            f"SecDataDir {d / 'modsec-data'}",
            # the audit log names the rules that fired for each request (found by its X-Cloudward-Stage)
            "SecAuditEngine RelevantOnly", "SecAuditLogParts ABHZ", "SecAuditLogType Serial",
            f"SecAuditLog {d / 'logs' / 'audit.log'}",
            "SecArgumentSeparator &",
            "SecCookieFormat 0",
            "SecStatusEngine Off",
            f"Include {d / 'crs-setup.conf'}",
            *(f"Include {p}" for p in rules),
        ]
        (d / "modsecurity.conf").write_text("\n".join(main) + "\n")
        (d / "nginx.conf").write_text(f"""load_module {MODULE};
user root;
worker_processes 2;
pid {d / 'nginx.pid'};
error_log {d / 'logs' / 'error.log'} {LOG_LEVEL};
daemon off;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {d / 'tmp' / 'body'};
    proxy_temp_path {d / 'tmp' / 'proxy'};
    fastcgi_temp_path {d / 'tmp' / 'fastcgi'};
    uwsgi_temp_path {d / 'tmp' / 'uwsgi'};
    scgi_temp_path {d / 'tmp' / 'scgi'};
    client_max_body_size 20m;
    large_client_header_buffers 8 64k;
    server {{
        listen 127.0.0.1:{service.port};
        modsecurity on;
        modsecurity_rules_file {d / 'modsecurity.conf'};
        location / {{
            proxy_pass http://127.0.0.1:{upstream_port};
            proxy_set_header Host $host;
            proxy_http_version 1.1;
        }}
    }}
}}
""")
        user = "root" if __import__("os").geteuid() == 0 else None
        text = (d / "nginx.conf").read_text()
        if user is None:
            (d / "nginx.conf").write_text(text.replace("user root;\n", ""))
        service.launch(["nginx", "-p", str(d), "-c", str(d / "nginx.conf")],
                       ready=lambda s: port_open(s.host, s.port, timeout=0.2), timeout=120)
    service.url = f"http://{service.host}:{service.port}"
    return service


# --- scoring --------------------------------------------------------------------------------------

@dataclass
class Row:
    attacks: int = 0
    blocked: int = 0
    pl1_attacks: int = 0
    pl1_blocked: int = 0
    benign: int = 0
    benign_blocked: int = 0
    errors: int = 0


def tally(outcomes: list[Outcome], benign_keys: set[tuple[str, str, int]],
          levels: dict[int, int]) -> dict[str, Row]:
    rows: dict[str, Row] = defaultdict(Row)
    for outcome in outcomes:
        stage = outcome.stage
        row = rows[stage.attack_class]
        if outcome.status == 0:
            row.errors += 1
            continue
        blocked = outcome.status == 403
        if stage.is_attack:
            row.attacks += 1
            row.blocked += blocked
            if min((levels.get(i, 1) for i in stage.expect_ids), default=1) <= 1:
                row.pl1_attacks += 1
                row.pl1_blocked += blocked
        elif (stage.file, stage.test_id, stage.index) in benign_keys:
            row.benign += 1
            row.benign_blocked += blocked
    return rows


def tag(stage: Stage, index: int) -> Stage:
    """The stage with an `X-Cloudward-Stage` header after its request line (found again in the audit log)."""
    raw = stage.raw
    for eol in (b"\r\n", b"\n"):
        if eol in raw:
            line, rest = raw.split(eol, 1)
            return replace(stage, raw=line + eol + b"X-Cloudward-Stage: %d" % index + eol + rest)
    return stage


def audit_rules(path: Path) -> dict[int, tuple[int, ...]]:
    """Stage index -> the rule ids ModSecurity's audit log lists for that request."""
    out: dict[int, tuple[int, ...]] = {}
    if not path.exists():
        return out
    text = path.read_text(errors="replace")
    for entry in re.split(r"(?m)^---\w+---A--$", text):
        stage = re.search(r"(?im)^x-cloudward-stage: (\d+)", entry)
        if stage:
            ids = tuple(int(i) for i in re.findall(r'\[id "(\d+)"\]', entry))
            out[int(stage.group(1))] = out.get(int(stage.group(1)), ()) + ids
    return out


def _attack_rule(ids: tuple[int, ...]) -> bool:
    return any(930000 <= i < 945000 for i in ids)


# --- cloudward with its CRS engine ----------------------------------------------------------------

def start_crs_engine(folder: Path) -> Service:
    """The FastAPI test app with cloudward's middleware and its in-process CRS engine at PL1, threshold 5
    (the nginx target's settings), writing its findings to its own folder."""
    policy = folder / "policy.yaml"
    policy.write_text(f"mode: block\ncrs:\n  rules: {CRS}\n  paranoia: 1\n  threshold: 5\n")
    return start_fastapi("block", policy=policy)


def send_for_incident(host: str, port: int, raw: bytes, timeout: float = 10.0) -> tuple[int, str, str]:
    """Like corpus.send_raw, and also the answer's X-Cloudward-Incident: (status, incident, error)."""
    data = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            with contextlib.suppress(OSError):  # the server may answer (413, 403) before reading everything
                sock.sendall(raw)
            while b"\r\n\r\n" not in data and len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        return 0, "", type(exc).__name__
    status = re.match(rb"HTTP/\d(?:\.\d)? (\d{3})", data)
    if not status:
        return 0, "", "no HTTP status"
    incident = re.search(rb"(?im)^x-cloudward-incident: *([0-9a-f]+)", data)
    return int(status.group(1)), incident.group(1).decode() if incident else "", ""


def replay_incidents(stages: list[Stage], url: str, concurrency: int) -> list[tuple[Outcome, str]]:
    host, port = url.removeprefix("http://").rsplit(":", 1)

    def one(stage: Stage) -> tuple[Outcome, str]:
        if not stage.raw:
            return Outcome(stage, 0, "empty request"), ""
        status, incident, error = send_for_incident(host, int(port), stage.raw)
        return Outcome(stage, status, error), incident

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        return list(pool.map(one, stages))


def incident_rules(service: Service) -> dict[str, tuple[set[str], tuple[int, ...]]]:
    """Incident id -> (cloudward's own rule ids, the CRS rule ids its appsec.crs finding names)."""
    out: dict[str, tuple[set[str], tuple[int, ...]]] = {}
    for finding in findings(service):
        own, crs = out.setdefault(finding["evidence"]["incident_id"], (set(), ()))
        if finding["rule_id"] == "appsec.crs":
            ids = tuple(int(i) for i in re.findall(r"(?:^|; |: )(\d{5,7}) ", finding["evidence"].get("detail", "")))
            out[finding["evidence"]["incident_id"]] = (own, crs + ids)
        else:
            own.add(finding["rule_id"])
    return out


def pct(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def run(args: argparse.Namespace) -> dict[str, Any]:
    stages = load_corpus(CORPUS)
    levels = paranoia_levels(RULES)
    benign_keys = corpus_benign(CORPUS)
    benign_stages = [Stage("benign/built", "000000", name, 0, "benign", raw, (), (0,)) for name, raw in BENIGN]
    stages = [tag(s, i) for i, s in enumerate(stages)]
    app = start_fastapi(protect=False)
    guarded = start_fastapi("block", extra_env={"APPSEC_FINDINGS": ""})
    nginx = start_modsecurity(app.port)
    scratch = tempfile.TemporaryDirectory()
    engine = start_crs_engine(Path(scratch.name)) if args.crs_engine else None
    results: dict[str, dict[str, Any]] = {}
    crs_incidents: list[str] = []
    try:
        for name, service in (("cloudward", guarded), ("modsecurity", nginx)):
            began = time.perf_counter()
            outcomes = replay(stages, str(service.url), concurrency=args.concurrency)
            built = replay(benign_stages, str(service.url), concurrency=args.concurrency)
            results[name] = {"outcomes": outcomes, "built": built, "seconds": time.perf_counter() - began}
            print(f"{name}: {len(outcomes)} stages in {results[name]['seconds']:.0f}s", file=sys.stderr)
        if engine is not None:
            began = time.perf_counter()
            pairs = replay_incidents(stages, str(engine.url), args.concurrency)
            built = replay(benign_stages, str(engine.url), concurrency=args.concurrency)
            results[CRS_ENGINE] = {"outcomes": [o for o, _ in pairs], "built": built,
                                   "seconds": time.perf_counter() - began}
            crs_incidents = [incident for _, incident in pairs]
            print(f"{CRS_ENGINE}: {len(pairs)} stages in {results[CRS_ENGINE]['seconds']:.0f}s", file=sys.stderr)
        time.sleep(1)  # let nginx finish writing the audit log (and cloudward its findings)
        fired = audit_rules(nginx.dir / "logs" / "audit.log")
        by_incident = incident_rules(engine) if engine is not None else {}
    finally:
        if engine is not None:
            engine.stop()
        scratch.cleanup()
        nginx.stop()
        guarded.stop()
        app.stop()
    rows = {name: tally(r["outcomes"], benign_keys, levels) for name, r in results.items()}
    if engine is not None:
        # the CRS engine's blocks that cloudward's own rules or a CRS attack-class rule (930-944) took part in
        def attack(incident: str) -> bool:
            own, crs = by_incident.get(incident, (set(), ()))
            return bool(own) or _attack_rule(crs)

        attack_only_crs = [Outcome(o.stage, o.status if o.status != 403 or attack(i) else 200, o.error)
                           for o, i in zip(results[CRS_ENGINE]["outcomes"], crs_incidents, strict=True)]
        rows[CRS_ENGINE + "-attack"] = tally(attack_only_crs, benign_keys, levels)
        # blocks whose findings never reached the file (a full findings queue drops): counted as not attack
        answered = zip(results[CRS_ENGINE]["outcomes"], crs_incidents, strict=True)
        results[CRS_ENGINE]["unrecorded"] = sum(1 for o, i in answered if o.status == 403 and i not in by_incident)
    # ModSecurity blocks that an attack-class rule (930-944) took part in, not protocol rules alone
    # (920640/920340: a body without Content-Type scores 10 on its own at PL1)
    attack_only = [Outcome(o.stage, o.status if o.status != 403 or _attack_rule(fired.get(i, ())) else 200, o.error)
                   for i, o in enumerate(results["modsecurity"]["outcomes"])]
    rows["modsecurity-attack"] = tally(attack_only, benign_keys, levels)
    # request by request: which attack stages each tool alone blocked
    agree: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])  # both, cloudward only, modsec only, neither
    for ours, theirs in zip(results["cloudward"]["outcomes"], results["modsecurity"]["outcomes"], strict=True):
        if not ours.stage.is_attack or ours.status == 0 or theirs.status == 0:
            continue
        a, b = ours.status == 403, theirs.status == 403
        agree[ours.stage.attack_class][0 if a and b else 1 if a else 2 if b else 3] += 1
    # the PL1 stages of the four main classes that ModSecurity blocked and cloudward let through, by name
    pl1_gaps = [ours.stage for ours, theirs in zip(results["cloudward"]["outcomes"], results["modsecurity"]["outcomes"],
                                                   strict=True)
                if ours.stage.attack_class in GAP_CLASSES and ours.stage.is_attack and ours.status not in (0, 403)
                and theirs.status == 403 and min(levels.get(i, 1) for i in ours.stage.expect_ids) <= 1]
    built_fp = {name: [o.stage.test_id for o in r["built"] if o.status == 403] for name, r in results.items()}
    built_err = {name: sum(1 for o in r["built"] if o.status == 0) for name, r in results.items()}
    return {"rows": rows, "agree": agree, "built_fp": built_fp, "built_err": built_err, "results": results,
            "benign_keys": len(benign_keys), "stages": len(stages), "pl1_gaps": pl1_gaps}


def render(data: dict[str, Any], args: argparse.Namespace) -> str:
    rows: dict[str, dict[str, Row]] = data["rows"]
    order = {name: i for i, name in enumerate(HEADLINE)}
    classes = sorted(set(rows["cloudward"]) | set(rows["modsecurity"]), key=lambda c: (order.get(c, 99), c))
    lines = [
        "## Application security: CRS regression corpus, cloudward vs nginx + ModSecurity v3 + CRS v4 (PL1)\n",
        f"{today()} · {machine()} · `benchmarks/appsec/crs.py`: all {data['stages']:,} request stages of "
        f"`../shared/corpora/crs/tests` replayed byte for byte, one request each, against (a) the FastAPI test app "
        "under uvicorn wrapped in `cloudward.appsec.ASGIMiddleware(mode=\"block\")` and (b) nginx "
        f"{_nginx_version()} + libmodsecurity {_modsec_version()} + CRS v4 (`../shared/corpora/crs/rules`, "
        "`crs-setup.conf.example` at paranoia level 1, anomaly scoring, inbound threshold 5, blocking, and "
        "`tx.enforce_bodyproc_urlencoded=1` so a body without Content-Type is read as a form, as cloudward reads it) "
        "proxying to the "
        "same app unprotected. Blocked = answered 403.\n",
        "Detection = attack stages (`expect_ids`) blocked; PL1 = the attack stages that expect at least one "
        "paranoia-level-1 rule. False positives = corpus-benign stages blocked: stages with no `expect_ids` whose "
        "test the corpus itself calls benign (its `desc` says false positive / FP / legitimate / benign / natural "
        "English, or its `no_expect_ids` name the blocking rule 949110). Every `no_expect_ids` in this corpus names a "
        "single rule, and a test described only as \"negative\" is often an attack for another rule "
        "(`'||(select(pg_sleep(15))` is a negative test of 942360), so neither selects benign traffic "
        f"({data['benign_keys']} stages qualify).\n",
        "ModSecurity's blocks are also counted with attack-class rules only (a 930-944 rule among those its audit "
        "log lists for the request): at PL1, CRS blocks every request whose body lacks a Content-Type (920340 + "
        "920640 score 10), which is most of the corpus's body-only stages, whatever the body holds.\n",
        "| class | cloudward detection | ModSecurity PL1 detection | ModSecurity, attack rules only | "
        "cloudward PL1-stage detection | ModSecurity PL1-stage detection | "
        "both / cloudward only / ModSecurity only / neither | cloudward FP | ModSecurity FP |",
        "|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    totals = {n: Row() for n in rows}
    for cls in classes:
        c, m = rows["cloudward"].get(cls, Row()), rows["modsecurity"].get(cls, Row())
        ma = rows["modsecurity-attack"].get(cls, Row())
        for name, r in (("cloudward", c), ("modsecurity", m), ("modsecurity-attack", ma)):
            t = totals[name]
            t.attacks += r.attacks
            t.blocked += r.blocked
            t.pl1_attacks += r.pl1_attacks
            t.pl1_blocked += r.pl1_blocked
            t.benign += r.benign
            t.benign_blocked += r.benign_blocked
            t.errors += r.errors
        a = data["agree"].get(cls, [0, 0, 0, 0])
        lines.append(
            f"| {cls} | {pct(c.blocked, c.attacks)} ({c.blocked}/{c.attacks}) | {pct(m.blocked, m.attacks)} "
            f"({m.blocked}/{m.attacks}) | {pct(ma.blocked, ma.attacks)} | "
            f"{pct(c.pl1_blocked, c.pl1_attacks)} | {pct(m.pl1_blocked, m.pl1_attacks)} | "
            f"{a[0]} / {a[1]} / {a[2]} / {a[3]} | {c.benign_blocked}/{c.benign} | {m.benign_blocked}/{m.benign} |")
    c, m, ma = totals["cloudward"], totals["modsecurity"], totals["modsecurity-attack"]
    lines.append(f"| **all** | {pct(c.blocked, c.attacks)} | {pct(m.blocked, m.attacks)} | "
                 f"{pct(ma.blocked, ma.attacks)} | "
                 f"{pct(c.pl1_blocked, c.pl1_attacks)} | {pct(m.pl1_blocked, m.pl1_attacks)} | | "
                 f"{c.benign_blocked}/{c.benign} | {m.benign_blocked}/{m.benign} |")
    built = len(BENIGN)
    fp = data["built_fp"]
    lines += [
        "",
        f"Built benign set ({built} requests in `BENIGN`: form posts, JSON APIs, searches such as `O'Reilly`, "
        "`select a book`, `rm -rf guide`, URLs and file paths in parameters, browser and API headers): "
        f"cloudward blocked **{len(fp['cloudward'])}**"
        + (f" ({', '.join(fp['cloudward'])})" if fp["cloudward"] else "")
        + f", ModSecurity blocked **{len(fp['modsecurity'])}**"
        + (f" ({', '.join(fp['modsecurity'])})" if fp["modsecurity"] else "") + ".",
        "",
        f"Replay time (8 requests in flight): cloudward {data['results']['cloudward']['seconds']:.0f}s, "
        f"nginx + ModSecurity {data['results']['modsecurity']['seconds']:.0f}s. Stages without an HTTP answer "
        f"(left out of the rates): cloudward {c.errors}, ModSecurity {m.errors}.",
        "",
        f"PL1 stages of {', '.join(GAP_CLASSES)} that ModSecurity blocked and cloudward let through "
        f"({len(data['pl1_gaps'])}): " + (", ".join(f"{s.rule_id}-{s.test_id}" for s in data["pl1_gaps"]) or "none")
        + ". The corpus itself calls 941120-10/12/13 and 941390-10 false positives of CRS; 932250-9 (`ls foo bar`) "
        "and 932260-7 (`python3.10 cmd`) have the shape of searches such as `ls vs dir` and are left to pass "
        "(tests/appsec/test_crs_pl1.py).",
    ]
    if CRS_ENGINE in rows:
        lines += ["", *render_crs_engine(data, classes, totals)]
    return "\n".join(lines) + "\n"


def render_crs_engine(data: dict[str, Any], classes: list[str], totals: dict[str, Row]) -> list[str]:
    """The third target beside the other two: cloudward with its in-process CRS engine at PL1."""
    rows: dict[str, dict[str, Row]] = data["rows"]
    lines = [
        "### cloudward + its in-process CRS engine (policy `crs:`, PL1)\n",
        f"The same corpus against the same app with cloudward's middleware and its optional CRS engine on "
        f"(`crs: {{rules: ../shared/corpora/crs, paranoia: 1, threshold: 5}}`: CRS v4 run by the libmodsecurity "
        f"{_wheel_version()} wheel inside the app, beside cloudward's own rules; a request is blocked when either "
        "says so; a body that does not parse scores 5, where the nginx target's rule 200002 denies it outright). "
        "Its blocks are also counted with attack rules only: cloudward's own rules, or a CRS attack-class "
        "rule (930-944) among those its `appsec.crs` finding names.\n",
        "| class | cloudward | cloudward + CRS engine | ModSecurity PL1 | cloudward + CRS engine, attack rules only | "
        "ModSecurity, attack rules only | cloudward + CRS engine PL1-stage detection | cloudward FP | "
        "cloudward + CRS engine FP | ModSecurity FP |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    total, total_attack = Row(), Row()
    for cls in classes:
        c, m = rows["cloudward"].get(cls, Row()), rows["modsecurity"].get(cls, Row())
        e, ea = rows[CRS_ENGINE].get(cls, Row()), rows[CRS_ENGINE + "-attack"].get(cls, Row())
        ma = rows["modsecurity-attack"].get(cls, Row())
        for t, r in ((total, e), (total_attack, ea)):
            t.attacks += r.attacks
            t.blocked += r.blocked
            t.pl1_attacks += r.pl1_attacks
            t.pl1_blocked += r.pl1_blocked
            t.benign += r.benign
            t.benign_blocked += r.benign_blocked
            t.errors += r.errors
        lines.append(
            f"| {cls} | {pct(c.blocked, c.attacks)} | {pct(e.blocked, e.attacks)} ({e.blocked}/{e.attacks}) | "
            f"{pct(m.blocked, m.attacks)} | {pct(ea.blocked, ea.attacks)} | {pct(ma.blocked, ma.attacks)} | "
            f"{pct(e.pl1_blocked, e.pl1_attacks)} | {c.benign_blocked}/{c.benign} | {e.benign_blocked}/{e.benign} | "
            f"{m.benign_blocked}/{m.benign} |")
    c, m, ma = totals["cloudward"], totals["modsecurity"], totals["modsecurity-attack"]
    lines.append(f"| **all** | {pct(c.blocked, c.attacks)} | {pct(total.blocked, total.attacks)} | "
                 f"{pct(m.blocked, m.attacks)} | {pct(total_attack.blocked, total_attack.attacks)} | "
                 f"{pct(ma.blocked, ma.attacks)} | {pct(total.pl1_blocked, total.pl1_attacks)} | "
                 f"{c.benign_blocked}/{c.benign} | {total.benign_blocked}/{total.benign} | "
                 f"{m.benign_blocked}/{m.benign} |")
    fp = data["built_fp"][CRS_ENGINE]
    lines += [
        "",
        f"Built benign set ({len(BENIGN)} requests): cloudward + CRS engine blocked **{len(fp)}**"
        + (f" ({', '.join(fp)})" if fp else "") + f". Replay time: {data['results'][CRS_ENGINE]['seconds']:.0f}s; "
        f"stages without an HTTP answer: {total.errors}; blocked stages whose findings were not found by their "
        f"incident id: {data['results'][CRS_ENGINE]['unrecorded']}.",
    ]
    return lines


def _wheel_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("libmodsecurity")
    except PackageNotFoundError:
        return "?"


def _nginx_version() -> str:
    done = subprocess.run(["nginx", "-v"], capture_output=True, text=True, check=False)
    match = re.search(r"nginx/([\d.]+)", done.stderr)
    return match.group(1) if match else "?"


def _modsec_version() -> str:
    done = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "libmodsecurity3"], capture_output=True, text=True,
                          check=False)
    return done.stdout.strip() or "v3"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--no-write", action="store_true", help="print the section, do not write docs/BENCHMARKS.md")
    parser.add_argument("--json", type=Path, help="also write per-stage outcomes (status per tool) to this file")
    parser.add_argument("--no-crs-engine", dest="crs_engine", action="store_false",
                        help="leave out the third target, cloudward with its in-process CRS engine (policy `crs:`)")
    args = parser.parse_args()
    data = run(args)
    body = render(data, args)
    if args.json:
        per_stage = [{"stage": o.stage.file + "#" + o.stage.name, "class": o.stage.attack_class,
                      "attack": o.stage.is_attack, "cloudward": o.status, "modsecurity": t.status}
                     for o, t in zip(data["results"]["cloudward"]["outcomes"],
                                     data["results"]["modsecurity"]["outcomes"], strict=True)]
        if CRS_ENGINE in data["results"]:
            for entry, outcome in zip(per_stage, data["results"][CRS_ENGINE]["outcomes"], strict=True):
                entry[CRS_ENGINE] = outcome.status
        args.json.write_text(json.dumps(per_stage, indent=1) + "\n")
    if not args.no_write:
        write_section("appsec-crs", body)
    print(body)


if __name__ == "__main__":
    main()
