"""Runtime guards (opt-in) in a real FastAPI app under uvicorn: a shell command, a file open and a
connection to the metadata service, steered by a request value, are refused in block mode (the view
raises, the client gets a 500 and nothing ran) and reported in monitor mode; unsteered calls pass.
The request rules that would stop these requests first are turned off on the guarded routes, so the
guards are the last line being tested."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cloudward.appsec.guards import GuardViolation, violation
from tests.appsec.servers import findings, start_fastapi
from tests.harness.services import Service, http_get

POLICY = """
routes:
  - path: /guarded/*
    exclusions:
      - rule: "*"
        locations: ["args:*"]
"""


def _start(tmp_path: Path, mode: str) -> Service:
    policy = tmp_path / f"policy-{mode}.yaml"
    policy.write_text(POLICY)
    files = tmp_path / "files"
    files.mkdir(exist_ok=True)
    (files / "notes.txt").write_text("hello")
    (tmp_path / "secret.txt").write_text("top secret")
    return start_fastapi(mode, policy=policy, extra_env={"APPSEC_GUARDS": "1", "APPSEC_FILES": str(files)})


@pytest.fixture(scope="module")
def tmp_module(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("guards")


@pytest.fixture(scope="module")
def blocking(tmp_module: Path) -> Iterator[Service]:
    service = _start(tmp_module, "block")
    yield service
    service.stop()


@pytest.fixture(scope="module")
def monitoring(tmp_module: Path) -> Iterator[Service]:
    service = _start(tmp_module, "monitor")
    yield service
    service.stop()


def get(service: Service, target: str) -> tuple[int, bytes]:
    return http_get(f"{service.url}{target}", timeout=5)


def test_command_steered_by_a_request_value_is_refused(blocking: Service) -> None:
    status, body = get(blocking, "/guarded/run?host=example.org")
    assert status == 200 and b"pinging example.org" in body
    status, body = get(blocking, "/guarded/run?host=x%3Bid")
    assert status == 500 and b"uid=" not in body
    assert any(f["rule_id"] == "appsec.runtime_guard" and f["evidence"]["action"] == "blocked"
               and f["location"]["location"] == "runtime:command" for f in _wait(blocking))


def test_file_open_steered_by_traversal_is_refused(blocking: Service) -> None:
    assert get(blocking, "/guarded/read?name=notes.txt")[0] == 200
    status, body = get(blocking, "/guarded/read?name=..%2Fsecret.txt")
    assert status == 500 and b"top secret" not in body


def test_metadata_connection_named_by_a_request_value_is_refused(blocking: Service) -> None:
    assert get(blocking, "/guarded/fetch?url=http%3A%2F%2F127.0.0.1%3A9%2F")[0] == 200  # not the metadata service
    status, _ = get(blocking, "/guarded/fetch?url=http%3A%2F%2F2852039166%2Flatest%2Fmeta-data%2F")
    assert status == 500


def test_monitor_mode_reports_and_lets_the_call_run(monitoring: Service) -> None:
    status, body = get(monitoring, "/guarded/run?host=x%3Becho+steered")
    assert status == 200 and b"steered" in body
    assert any(f["rule_id"] == "appsec.runtime_guard" and f["evidence"]["action"] == "monitored"
               for f in _wait(monitoring))


def _wait(service: Service) -> list[dict[str, Any]]:
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        found = findings(service)
        if any(f["rule_id"] == "appsec.runtime_guard" for f in found):
            return found
        time.sleep(0.05)
    return findings(service)


@pytest.mark.parametrize(
    ("event", "args", "fragment", "steered"),
    [
        ("os.system", ("ping 8.8.8.8; id",), "8.8.8.8; id", True),
        ("os.system", ("ping 8.8.8.8",), "8.8.8.8", False),
        ("subprocess.Popen", ("/bin/sh", ["/bin/sh", "-c", "echo a|nc x 1"], None, None), "a|nc x 1", True),
        ("os.spawn", (0, "/bin/echo", ["echo", "$(id)"], None), "$(id)", True),
        ("open", ("/srv/files/../../etc/passwd", "r", 0), "../../etc/passwd", True),
        ("open", ("/srv/files/report.pdf", "r", 0), "report.pdf", False),
        ("open", (3, "r", 0), "3", False),
        ("socket.connect", (None, ("169.254.169.254", 80)), "http://169.254.169.254/latest/", True),
        ("socket.connect", (None, ("169.254.169.254", 80)), "http://0xa9fea9fe/", True),
        ("socket.connect", (None, ("169.254.169.254", 80)), "blue shoes", False),
        ("socket.connect", (None, ("93.184.216.34", 80)), "http://93.184.216.34/", False),
    ],
)
def test_violation_decision(event: str, args: tuple[object, ...], fragment: str, steered: bool) -> None:
    assert (violation([fragment], event, args) is not None) is steered


def test_guard_violation_is_a_permission_error() -> None:
    assert issubclass(GuardViolation, PermissionError)
