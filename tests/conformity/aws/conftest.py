"""A moto server over HTTP on a loopback port (one per session), planted with a weak and a hardened
account in two regions (tests/conformity/aws/accounts.py), and small HTTP proxies in front of it
that throttle or deny chosen API calls."""

from __future__ import annotations

import http.client
import os
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tests.conformity.aws import accounts
from tests.harness.services import start_process

MOTO = Path(sys.executable).parent / "moto_server"
MOTO_ENV = {"MOTO_IAM_LOAD_MANAGED_POLICIES": "true", "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": accounts.HOME}


@pytest.fixture(scope="session")
def aws_creds() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in CREDS.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/cloudward-test-config")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/cloudward-test-credentials")
        yield


@pytest.fixture(scope="session")
def moto_endpoint(aws_creds: None) -> Iterator[str]:
    assert MOTO.exists(), "moto_server is missing: run scripts/setup (moto[server] is a dev dependency)"
    with start_process("moto-conformity", lambda s: [str(MOTO), "-H", s.host, "-p", str(s.port)],
                       env={**os.environ, **MOTO_ENV}) as service:
        endpoint = f"http://{service.host}:{service.port}"
        accounts.plant_weak(endpoint)
        accounts.plant_hardened(endpoint)
        yield endpoint


def run_scan(endpoint: str, account: str, regions: tuple[str, ...] = accounts.REGIONS,
             services: list[str] | None = None, **session: Any) -> Any:
    """The library path of `conformity scan aws`: session, collectors, link, rules -> ScanResult."""
    from cloudward.cli.common import load_all_rules
    from cloudward.conformity.aws.collectors import COLLECTORS
    from cloudward.conformity.aws.scan import Judge, collect_account, to_result
    from cloudward.conformity.aws.session import SessionOptions, open_session

    opened = open_session(SessionOptions(endpoint_url=endpoint, region=accounts.HOME,
                                         assume_role=f"arn:aws:iam::{account}:role/audit", **session))
    scan = collect_account(opened, list(regions), services or list(COLLECTORS))
    return to_result(scan, Judge(load_all_rules()))


@pytest.fixture(scope="session")
def weak(moto_endpoint: str) -> Any:
    return run_scan(moto_endpoint, accounts.WEAK)


@pytest.fixture(scope="session")
def hardened(moto_endpoint: str) -> Any:
    return run_scan(moto_endpoint, accounts.HARDENED)


# --- a proxy that answers chosen requests itself and forwards the rest -----------------------------

Decide = Callable[[str, str, dict[str, str], bytes], "tuple[int, dict[str, str], bytes] | None"]


class Proxy:
    def __init__(self, upstream: str, decide: Decide) -> None:
        host, _, port = upstream.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.decide = decide
        self.answered = 0
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _any(self) -> None:
                length = int(self.headers.get("Content-Length", 0) or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items()}
                answer = proxy.decide(self.command, self.path, headers, body)
                if answer is not None:
                    with proxy.lock:
                        proxy.answered += 1
                    status, extra, payload = answer
                else:
                    conn = http.client.HTTPConnection(*proxy.upstream, timeout=30)
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    payload = resp.read()
                    status = resp.status
                    extra = {k: v for k, v in resp.getheaders()
                             if k.lower() not in ("content-length", "transfer-encoding", "connection")}
                    conn.close()
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Proxy:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def signing_service(headers: dict[str, str]) -> str:
    """The service name in a SigV4 credential scope (…/date/region/SERVICE/aws4_request)."""
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    scope = auth.split("Credential=", 1)[-1].split(",", 1)[0].split("/")
    return scope[3] if len(scope) >= 5 else ""
