"""The clamd client against a real clamd (test signatures: EICAR by MD5, a marker by body), over its
unix socket and TCP on loopback; and against fake daemons that misbehave."""

from __future__ import annotations

import io
import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudward.cli.app import app
from cloudward.storage.clamd import Clamd, ClamdError
from tests.harness.services import CLAMD_MARKER, Service, free_port, start_clamd

EICAR = (b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")


def test_eicar_over_unix_socket_and_tcp(clamd_server: Service) -> None:
    for address in (f"unix:{clamd_server.socket}", f"tcp://127.0.0.1:{clamd_server.port}"):  # type: ignore[attr-defined]
        client = Clamd(address)
        client.ping()
        assert client.version().startswith("ClamAV")
        verdict = client.scan_bytes(EICAR)
        assert verdict.infected and verdict.signature == "Cloudward.Test.EICAR.UNOFFICIAL"
        clean = client.scan_bytes(b"just a text file\n")
        assert not clean.infected and clean.error is None


def test_body_signature_in_the_middle_of_a_streamed_file(clamd_server: Service) -> None:
    data = b"A" * (3 * 1024 * 1024) + CLAMD_MARKER + b"B" * (2 * 1024 * 1024)
    verdict = Clamd(str(clamd_server.socket), chunk_size=64 * 1024).scan_stream(io.BytesIO(data))  # type: ignore[attr-defined]
    assert verdict.infected and verdict.signature == "Cloudward.Test.Marker.UNOFFICIAL"


@pytest.fixture(scope="module")
def small_clamd() -> Iterator[Service]:
    with start_clamd(stream_max="1M") as service:
        yield service


def test_stream_above_the_limit_is_a_verdict_error_and_the_rest_is_not_pulled(small_clamd: Service) -> None:
    pulled = []

    def chunks() -> Iterator[bytes]:
        for i in range(40):  # 40 MiB offered, clamd stops at 1 MiB
            pulled.append(i)
            yield b"x" * (1024 * 1024)

    verdict = Clamd(str(small_clamd.socket)).scan_stream(chunks())  # type: ignore[attr-defined]
    assert not verdict.infected and verdict.error and "limit" in verdict.error.lower()
    assert len(pulled) < 40


def test_closed_port_names_the_address() -> None:
    port = free_port()
    with pytest.raises(ClamdError, match=f"127.0.0.1:{port}"):
        Clamd(f"127.0.0.1:{port}", timeout=2).ping()


def test_bad_address_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="tcp://host:port"):
        Clamd("not an address")


def _fake(reply: bytes, endless: bool = False) -> tuple[int, threading.Thread]:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)

    def serve() -> None:
        conn, _ = server.accept()
        with conn, server:
            conn.recv(65536)
            try:
                if endless:
                    for _ in range(200):
                        conn.sendall(b"A" * 4096)
                else:
                    conn.sendall(reply)
            except OSError:
                pass

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return server.getsockname()[1], thread


@pytest.mark.parametrize(("reply", "endless", "match"), [
    (b"hello, not clamd\n", False, "unexpected answer"),
    (b"", False, "empty answer"),
    (b"", True, "longer than"),
])
def test_misbehaving_daemon(reply: bytes, endless: bool, match: str) -> None:
    port, thread = _fake(reply, endless)
    with pytest.raises(ClamdError, match=match):
        Clamd(f"127.0.0.1:{port}", timeout=5).scan_bytes(b"data")
    thread.join(5)


def test_storage_scan_with_clamd(clamd_server: Service, tmp_path: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "eicar.com").write_bytes(EICAR)
    (root / "notes.txt").write_text("nothing to see\n")
    (tmp_path / "cloudward.toml").write_text(f'data_dir = "{tmp_path / "data"}"\n')
    result = CliRunner().invoke(app, ["storage", "scan", str(root), "--clamd", f"unix:{clamd_server.socket}",  # type: ignore[attr-defined]
                                      "--no-store", "-f", "json", "--config", str(tmp_path / "cloudward.toml")])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert [(f["rule_id"], f["location"]["key"]) for f in doc["findings"]] == [("content.malware.clamav", "eicar.com")]
    assert doc["findings"][0]["evidence"]["signature"] == "Cloudward.Test.EICAR.UNOFFICIAL"


def test_unreachable_clamd_is_a_usage_error(tmp_path: Path) -> None:
    from cloudward.core.errors import UsageError

    result = CliRunner().invoke(app, ["storage", "scan", str(tmp_path), "--clamd", f"127.0.0.1:{free_port()}",
                                      "--no-store"])
    assert isinstance(result.exception, UsageError)
