"""A real `cloudward server` (uvicorn, in its own process group) on a free loopback port, and
small HTTP helpers for the tests that talk to it."""

from __future__ import annotations

import re
import ssl
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.harness.services import Service, http_get, start_process

TOKEN = re.compile(r"cw_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")
ROLES = ("admin", "analyst", "read-only")


@dataclass
class ApiServer:
    service: Service
    base: str
    store_url: str
    backend: str
    tokens: dict[str, str] = field(default_factory=dict)  # role -> token
    verify: ssl.SSLContext | bool = True  # how a TLS server's certificate is checked (its test CA)

    def client(self, role: str | None = "admin", **kwargs: Any) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.tokens[role]}"} if role else {}
        return httpx.Client(base_url=self.base, headers=headers, timeout=30, trust_env=False, verify=self.verify,
                            **kwargs)

    def log(self) -> str:
        return self.service.log_tail(80)


def start_api(store_url: str, backend: str, *, jobs: int = 2, scheduler: bool = False,
              extra_env: dict[str, str] | None = None, extra_args: Sequence[str] = (),
              tls_ca: str | None = None, first: bool = True) -> ApiServer:
    """`python -m cloudward server --init-admin admin` on a free port; its first token is read
    from the log, then an analyst and a read-only user are made through the API itself. With
    `first=False` the store already has its users (another server made them) and no token is
    read; with `tls_ca` the server speaks HTTPS (`extra_args` carry --tls-cert/--tls-key) and is
    checked against that CA."""
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/tmp", "LANG": "C.UTF-8",
           "CLOUDWARD_DB_URL": store_url, **(extra_env or {})}
    scheme = "https" if tls_ca else "http"
    verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=tls_ca) if tls_ca else True

    def argv(service: Service) -> list[str]:
        env["CLOUDWARD_DATA_DIR"] = str(service.dir / "data")
        args = [sys.executable, "-m", "cloudward", "server", "--host", service.host, "--port", str(service.port),
                *(["--init-admin", "admin"] if first else []), "--jobs", str(jobs), "--log-level", "warning"]
        return [*args, *([] if scheduler else ["--no-scheduler"]), *extra_args]

    def ready(service: Service) -> bool:
        url = f"{scheme}://{service.host}:{service.port}/api/v1/health"
        try:
            if tls_ca:
                return httpx.get(url, verify=verify, timeout=1, trust_env=False).status_code == 200
            return http_get(url, timeout=1)[0] == 200
        except (OSError, httpx.HTTPError):
            return False

    service = start_process("cloudward-server", argv, ready=ready, env=env, timeout=60)
    base = f"{scheme}://{service.host}:{service.port}"
    if not first:
        return ApiServer(service, base, store_url, backend, verify=verify)
    found = TOKEN.search(service.log_tail(200))
    assert found, service.log_tail()
    server = ApiServer(service, base, store_url, backend, {"admin": found.group(0)}, verify=verify)
    with server.client("admin") as admin:
        for role in ("analyst", "read-only"):
            name = role.replace("-", "")
            assert admin.post("/api/v1/users", json={"name": name, "role": role}).status_code == 201
            made = admin.post("/api/v1/tokens", json={"user": name, "name": "tests"})
            assert made.status_code == 201, made.text
            server.tokens[role] = made.json()["value"]
    return server


def wait_for_job(client: httpx.Client, job_id: str, timeout: float = 120) -> dict[str, Any]:
    """Poll a job until it is final (the deadline only stops a hung test; nothing asserts on time)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("succeeded", "failed", "cancelled"):
            return job
        assert time.monotonic() < deadline, f"job still {job['status']}: {job}"
        time.sleep(0.2)


@contextmanager
def store_at(url: str) -> Iterator[Any]:
    from cloudward.store import Store

    with Store.open(url) as store:
        yield store
