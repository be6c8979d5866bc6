"""The clamd client against a real clamd (test signatures: EICAR by MD5, a marker by body), over its
unix socket and TCP on loopback; and against fake daemons that misbehave."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cloudward.cli.app import app
from cloudward.storage.clamd import MAX_REPLY, Clamd, ClamdError, ClamdVerdict
from tests.harness.services import CLAMD_MARKER, ClamdService, free_port, start_clamd

EICAR = (b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*")


def test_eicar_over_unix_socket_and_tcp(clamd_server: ClamdService) -> None:
    for address in (clamd_server.unix_address, clamd_server.tcp_address, f"127.0.0.1:{clamd_server.port}"):
        client = Clamd(address)
        client.ping()
        assert client.version().startswith("ClamAV")
        verdict = client.scan_bytes(EICAR)
        assert verdict.infected and verdict.signature == "Cloudward.Test.EICAR.UNOFFICIAL"
        clean = client.scan_bytes(b"just a text file\n")
        assert not clean.infected and clean.error is None


def test_body_signature_in_the_middle_of_a_streamed_file(clamd_server: ClamdService) -> None:
    data = b"A" * (3 * 1024 * 1024) + CLAMD_MARKER + b"B" * (2 * 1024 * 1024)
    read_sizes: list[int] = []

    class Reader(io.BytesIO):
        def read(self, size: int | None = -1, /) -> bytes:
            read_sizes.append(-1 if size is None else size)
            return super().read(size)

    verdict = Clamd(str(clamd_server.socket), chunk_size=64 * 1024).scan_stream(Reader(data))
    assert verdict.infected and verdict.signature == "Cloudward.Test.Marker.UNOFFICIAL"
    assert set(read_sizes) == {64 * 1024}  # pulled chunk by chunk, never read whole


BLOB = b"a blob the second clamd knows by MD5 only\n"


@pytest.fixture(scope="module")
def small_clamd() -> Iterator[ClamdService]:
    """StreamMaxLength 1M, and an extra signature file passed through `signatures`."""
    extra = f"{hashlib.md5(BLOB).hexdigest()}:{len(BLOB)}:Cloudward.Test.Extra\n"
    with start_clamd({"extra.hdb": extra}, stream_max="1M") as service:
        yield service


def test_extra_signature_files(small_clamd: ClamdService) -> None:
    verdict = Clamd(small_clamd.unix_address).scan_bytes(BLOB)
    assert verdict.infected and verdict.signature == "Cloudward.Test.Extra.UNOFFICIAL"


def test_stream_at_the_limit_is_still_scanned(small_clamd: ClamdService) -> None:
    verdict = Clamd(small_clamd.unix_address).scan_bytes(b"x" * (1024 * 1024))
    assert verdict == ClamdVerdict(infected=False)


@pytest.mark.parametrize("transport", ["unix", "tcp"])
def test_stream_above_the_limit_is_a_verdict_error_and_the_rest_is_not_pulled(
        small_clamd: ClamdService, transport: str) -> None:
    pulled = []

    def chunks() -> Iterator[bytes]:
        for i in range(40):  # 40 MiB offered, clamd stops at 1 MiB
            pulled.append(i)
            yield b"x" * (1024 * 1024)

    address = small_clamd.unix_address if transport == "unix" else small_clamd.tcp_address
    verdict = Clamd(address).scan_stream(chunks())
    assert not verdict.infected and verdict.error and "limit" in verdict.error.lower()
    assert len(pulled) < 40


def test_closed_port_names_the_address() -> None:
    port = free_port()
    with pytest.raises(ClamdError, match=f"127.0.0.1:{port}"):
        Clamd(f"127.0.0.1:{port}", timeout=2).ping()


def test_bad_address_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="tcp://host:port"):
        Clamd("not an address")


def _fake(reply: bytes, endless: bool = False, trickle: bool = False) -> tuple[int, threading.Thread]:
    """A "clamd" on a loopback port that answers `reply`, or a line without end: 800 KiB at once
    (`endless`) or a byte every 50 ms (`trickle`)."""
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
                elif trickle:
                    for _ in range(200):
                        conn.sendall(b"A")
                        time.sleep(0.05)
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
    (b"", True, f"longer than {MAX_REPLY} bytes"),
])
def test_misbehaving_daemon(reply: bytes, endless: bool, match: str) -> None:
    port, thread = _fake(reply, endless)
    with pytest.raises(ClamdError, match=match) as err:
        Clamd(f"127.0.0.1:{port}", timeout=5).scan_bytes(b"data")
    assert f"127.0.0.1:{port}" in str(err.value)
    thread.join(5)


def test_a_trickled_answer_is_bounded_in_time() -> None:
    port, thread = _fake(b"", trickle=True)  # each byte well within the timeout, the line never ends
    began = time.monotonic()
    with pytest.raises(ClamdError, match="no answer within 1s"):
        Clamd(f"127.0.0.1:{port}", timeout=1).ping()
    assert time.monotonic() - began < 3
    thread.join(15)


def test_storage_scan_with_clamd(clamd_server: ClamdService, tmp_path: Path) -> None:
    root = tmp_path / "files"
    root.mkdir()
    (root / "eicar.com").write_bytes(EICAR)
    (root / "notes.txt").write_text("nothing to see\n")
    (tmp_path / "cloudward.toml").write_text(f'data_dir = "{tmp_path / "data"}"\n')
    result = CliRunner().invoke(app, ["storage", "scan", str(root), "--clamd", clamd_server.unix_address,
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
