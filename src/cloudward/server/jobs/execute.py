"""Running one claimed job: the subprocess, its log tail, cancellation and the scan it recorded.

The command runs as `python -m cloudward WORDS --format json --output <private temp file>` in a
new process group, with the server's store in its environment, so its scan lands in the same
store and its report tells which scan id it was. Cancellation is graceful first: SIGINT to the
group (the CLI then records what it found so far as a `cancelled` scan), then SIGTERM, then
SIGKILL. Output is read continuously into a bounded buffer; only a scrubbed tail is kept.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cloudward.server.jobs.scrub import scrub, tail

BUFFER_BYTES = 256 * 1024
TAIL_BYTES = 8 * 1024
GRACE_SECONDS = 5.0
POLL_SECONDS = 0.2
EXIT_INTERRUPTED = 130
_SCAN_ID = re.compile(rb'"scan"\s*:\s*\{\s*"id"\s*:\s*"([0-9A-Za-z_.-]{1,64})"')


@dataclass(frozen=True)
class Outcome:
    exit_code: int | None
    scan_id: str | None
    log_tail: str
    cancelled: bool
    timed_out: bool
    error: str = ""


def job_argv(words: Sequence[str], report: Path) -> list[str]:
    return [sys.executable, "-m", "cloudward", *words, "--format", "json", "--output", str(report)]


def job_environment(store_url: str, data_dir: Path, extra: Mapping[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDWARD_SERVER_")}
    env.update({"CLOUDWARD_DB_URL": store_url, "CLOUDWARD_DATA_DIR": str(data_dir), "NO_COLOR": "1",
                "TERM": "dumb", "COLUMNS": "160", "PYTHONUNBUFFERED": "1"})
    env.update(extra)
    return env


class _Collector(threading.Thread):
    """Reads the process's merged stdout/stderr until EOF, keeping the last BUFFER_BYTES."""

    def __init__(self, stream: object) -> None:
        super().__init__(daemon=True, name="job-output")
        self.stream = stream
        self.chunks: deque[bytes] = deque()
        self.size = 0
        self.lock = threading.Lock()

    def run(self) -> None:
        read = self.stream.read1 if hasattr(self.stream, "read1") else self.stream.read  # type: ignore[attr-defined]
        while True:
            chunk = read(65536)
            if not chunk:
                return
            with self.lock:
                self.chunks.append(chunk)
                self.size += len(chunk)
                while self.size > BUFFER_BYTES and len(self.chunks) > 1:
                    self.size -= len(self.chunks.popleft())

    def data(self) -> bytes:
        with self.lock:
            return b"".join(self.chunks)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def run_job(words: Sequence[str], *, env: Mapping[str, str], should_cancel: Callable[[], bool],
            timeout: float, secrets: Sequence[str] = (), cancel_every: float = 1.0) -> Outcome:
    """Run one job to the end (or its cancellation or timeout) and say what happened."""
    with tempfile.TemporaryDirectory(prefix="cloudward-job-") as workdir:
        report = Path(workdir) / "report.json"
        try:
            process = subprocess.Popen(job_argv(words, report), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                       stderr=subprocess.STDOUT, env=dict(env), cwd=workdir, start_new_session=True)
        except OSError as exc:
            return Outcome(None, None, "", False, False, error=f"cannot start the job: {exc.strerror}")
        collector = _Collector(process.stdout)
        collector.start()
        began = time.monotonic()
        last_check = began
        cancelled = timed_out = False
        escalation: list[tuple[float, signal.Signals]] = []
        while process.poll() is None:
            now = time.monotonic()
            if not escalation:
                if now - last_check >= cancel_every:
                    last_check = now
                    cancelled = should_cancel()
                timed_out = now - began > timeout
                if cancelled or timed_out:
                    _signal_group(process.pid, signal.SIGINT)
                    escalation = [(now + GRACE_SECONDS, signal.SIGTERM), (now + 2 * GRACE_SECONDS, signal.SIGKILL)]
            elif now >= escalation[0][0]:
                _signal_group(process.pid, escalation.pop(0)[1])
                if not escalation:
                    escalation = [(float("inf"), signal.SIGKILL)]
            time.sleep(POLL_SECONDS)
        # The leader is gone: whatever it left in its group goes too.
        _signal_group(process.pid, signal.SIGKILL)
        collector.join(timeout=5)
        if process.stdout is not None:
            process.stdout.close()
        scan_id = _scan_id(report)
        text = scrub(tail(collector.data(), TAIL_BYTES * 2), secrets)
        text = text[-TAIL_BYTES:]
        return Outcome(process.returncode, scan_id, text, cancelled, timed_out)


def _scan_id(report: Path) -> str | None:
    try:
        with report.open("rb") as handle:
            head = handle.read(64 * 1024)
    except OSError:
        return None
    match = _SCAN_ID.search(head)
    return match.group(1).decode() if match else None
