"""Start the appsec test apps under real servers on free loopback ports: the FastAPI app under
uvicorn, the Flask app under waitress. Shared by the tests and the benchmarks."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from tests.harness.services import Service, start_process

ROOT = Path(__file__).resolve().parents[2]


def _env(service: Service, mode: str | None, policy: Path | None, protect: bool, uploads: bool,
         extra: dict[str, str] | None) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "APPSEC_PROTECT": "1" if protect else "0",
           "APPSEC_FINDINGS": str(service.dir / "findings.jsonl"), "APPSEC_CALLS": str(service.dir / "calls.log"),
           "APPSEC_UPLOADS": "1" if uploads else "0"}
    if mode:
        env["APPSEC_MODE"] = mode
    if policy is not None:
        env["APPSEC_POLICY"] = str(policy)
    env.update(extra or {})
    return env


def start_fastapi(mode: str | None = "block", *, policy: Path | None = None, protect: bool = True,
                  uploads: bool = False, workers: int = 1, app: str = "tests.appsec.apps.fastapi_app:app",
                  extra_env: dict[str, str] | None = None) -> Service:
    holder: dict[str, Any] = {}

    def argv(service: Service) -> list[str]:
        holder["env"] = _env(service, mode, policy, protect, uploads, extra_env)
        return [sys.executable, "-m", "uvicorn", app, "--host", service.host, "--port", str(service.port),
                "--log-level", "warning", "--workers", str(workers), "--no-access-log"]

    service = Service("appsec-fastapi")
    with service.cleanup_on_error():
        service.launch(argv(service), ready=_ready, env=holder["env"])
    service.url = f"http://{service.host}:{service.port}"
    return service


def start_flask(mode: str | None = "block", *, policy: Path | None = None, protect: bool = True,
                uploads: bool = False, app: str = "tests.appsec.apps.flask_app:app",
                extra_env: dict[str, str] | None = None) -> Service:
    service = Service("appsec-flask")
    env = _env(service, mode, policy, protect, uploads, extra_env)
    with service.cleanup_on_error():
        service.launch([sys.executable, "-m", "waitress", f"--host={service.host}", f"--port={service.port}",
                        "--threads=8", app], ready=_ready, env=env)
    service.url = f"http://{service.host}:{service.port}"
    return service


def _ready(service: Service) -> bool:
    from tests.harness.services import port_open

    return port_open(service.host, service.port, timeout=0.2)


def calls(service: Service) -> list[str]:
    path = service.dir / "calls.log"
    return path.read_text().splitlines() if path.exists() else []


def findings(service: Service) -> list[dict[str, Any]]:
    path = service.dir / "findings.jsonl"
    if not path.exists():
        return []
    # the sink appends while tests read: only whole lines (newline-terminated) are findings yet
    complete = path.read_text().rpartition("\n")[0]
    return [json.loads(line) for line in complete.splitlines() if line.strip()]


# start_process is re-exported for tests that run a custom command
__all__ = ["ROOT", "calls", "findings", "start_fastapi", "start_flask", "start_process"]
