"""Process environments from /proc, with a real child process carrying fake credentials."""

from __future__ import annotations

import builtins
import errno
import os
import secrets
import string
import subprocess
import time

import pytest

from cloudward.secrets.sources import Blob, EnvironOptions, SourceStats, process_environments, variable_at
from cloudward.secrets.sources import environ as environ_source


def fake_credentials() -> dict[str, str]:
    alphabet = string.ascii_uppercase + string.digits
    return {
        "AWS_ACCESS_KEY_ID": "AKIA" + "".join(secrets.choice(alphabet) for _ in range(16)),
        "AWS_SECRET_ACCESS_KEY": "".join(
            secrets.choice(string.ascii_letters + string.digits + "/+") for _ in range(40)
        ),
    }


@pytest.fixture
def child_with_credentials():
    creds = fake_credentials()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "MULTI": "line1\nline2", **creds}
    proc = subprocess.Popen(["sleep", "60"], env=env)
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # wait until exec has replaced the forked python
            with open(f"/proc/{proc.pid}/comm") as handle:
                if handle.read().strip() == "sleep":
                    break
            time.sleep(0.01)
        yield proc, creds
    finally:
        proc.kill()
        proc.wait()


def environ_blobs(options: EnvironOptions, stats: SourceStats | None = None) -> dict[int, Blob]:
    return {b.location["pid"]: b for b in process_environments(options, stats) if isinstance(b, Blob)}


def test_child_process_environment_is_yielded(child_with_credentials):
    proc, creds = child_with_credentials
    stats = SourceStats()
    blobs = environ_blobs(EnvironOptions(), stats)  # every process, as `--environ` does
    assert proc.pid in blobs, "child process environment not yielded"
    blob = blobs[proc.pid]
    assert blob.origin == f"pid {proc.pid} (sleep) environ"
    assert blob.target_kind == "process"
    data = blob.read()
    lines = data.decode().splitlines()
    has_key = f"AWS_ACCESS_KEY_ID={creds['AWS_ACCESS_KEY_ID']}" in lines
    has_secret = f"AWS_SECRET_ACCESS_KEY={creds['AWS_SECRET_ACCESS_KEY']}" in lines
    assert has_key and has_secret, "credentials missing from the environ blob (values not shown)"
    location = blob.location
    assert location["process"] == "sleep" and location["user"] and location["uid"] == os.getuid()
    # The location carries names and pid/user, never values (and not the command line).
    leaked = any(value in repr(location) for value in creds.values())
    assert not leaked, "a credential value leaked into the location"
    secret_line = lines.index(f"AWS_SECRET_ACCESS_KEY={creds['AWS_SECRET_ACCESS_KEY']}") + 1
    assert variable_at(location, secret_line) == "AWS_SECRET_ACCESS_KEY"
    assert variable_at(location, lines.index("line2") + 1) == "MULTI"
    assert os.getpid() not in blobs  # the scanner itself is skipped by default
    assert stats.counters["processes"] >= 1 and stats.bytes_read > 0


def test_selected_pids_and_include_self(child_with_credentials):
    proc, _ = child_with_credentials
    blobs = environ_blobs(EnvironOptions(pids=(proc.pid,)))
    assert list(blobs) == [proc.pid]
    blobs = environ_blobs(EnvironOptions(pids=(os.getpid(),), include_self=True))
    assert list(blobs) == [os.getpid()]


def test_unreadable_and_vanished_processes_are_counted_silently(monkeypatch, tmp_path):
    for pid, content in ((101, b"A=1\x00"), (102, b"B=2\x00"), (103, b""), (104, None)):
        (tmp_path / str(pid)).mkdir()
        (tmp_path / str(pid) / "comm").write_text("proc\n")
        if content is not None:
            (tmp_path / str(pid) / "environ").write_bytes(content)
    (tmp_path / "self").mkdir()  # non-numeric entries are ignored
    real_open = builtins.open

    def fake_open(path, *args, **kwargs):
        if str(path).endswith("/102/environ"):
            raise PermissionError(errno.EACCES, "Permission denied")
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(environ_source, "open", fake_open, raising=False)
    stats = SourceStats()
    items = list(process_environments(EnvironOptions(proc=str(tmp_path)), stats))
    assert [i.origin for i in items] == ["pid 101 (proc) environ"]
    assert stats.counters["permission_denied"] == 1
    assert stats.counters["empty_environ"] == 1
    assert stats.counters["exited"] == 1
    assert stats.errors == 0


def test_oversized_environment_is_truncated_and_reported(tmp_path):
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "environ").write_bytes(b"A=" + b"x" * 100 + b"\x00B=2\x00")
    items = list(process_environments(EnvironOptions(proc=str(tmp_path), max_size=50)))
    assert isinstance(items[0], Blob) and len(items[0].read()) <= 51
    assert items[0].origin == "pid 7 (?) environ"
    assert items[1].code.value == "too_large"
