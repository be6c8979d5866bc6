"""Real-time FIM (workload/fim_watch.py + `cloudward host fim watch`), tested for real with inotify:
the watcher in-process (to force a queue overflow deterministically) and the CLI as a subprocess
(reading its JSON lines as they come, with deadlines, never sleeps as assertions)."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudward.workload.fim import DEFAULT_PATHS, snapshot
from cloudward.workload.fim_watch import FimWatcher, WatchEvent
from cloudward.workload.root import HostRoot
from tests.harness.hostroot import build_clean_root, write

CLI = shutil.which("cloudward", path=str(Path(sys.executable).parent)) or "cloudward"
DEADLINE = 120.0  # seconds to wait for an expected line: generous, never part of an assertion


def _changes_until(events: Iterator[WatchEvent], wanted: set[str], seen: dict[str, WatchEvent],
                   kinds: list[str] | None = None) -> None:
    """Consume events until every path in `wanted` has been reported (or the deadline passes)."""
    deadline = time.monotonic() + DEADLINE
    while not wanted <= seen.keys() and time.monotonic() < deadline:
        event = next(events)
        if kinds is not None:
            kinds.append(event.kind)
        if event.kind == "change" and event.change is not None:
            seen[event.change.path] = event


def _watch(root: Path, stop_after: float = DEADLINE * 2):
    baseline = snapshot(HostRoot(root))
    watcher = FimWatcher(HostRoot(root), DEFAULT_PATHS, baseline)
    started = time.monotonic()
    events = watcher.events(stop=lambda: time.monotonic() - started > stop_after, poll_ms=50)
    kinds: list[str] = []
    for event in events:
        kinds.append(event.kind)
        if event.kind == "ready":
            break
    return watcher, events, kinds


def test_watcher_reports_changes_new_directories_and_rename_over(tmp_path: Path) -> None:
    root = build_clean_root(tmp_path / "root")
    write(root, "/etc/hosts", "127.0.0.1 localhost\n")
    watcher, events, _kinds = _watch(root)
    try:
        write(root, "/etc/crontab", (root / "etc/crontab").read_text() + "* * * * * root echo x\n")
        # An editor's save: write a temporary file, rename it over the original.
        write(root, "/etc/.hosts.swp", "127.0.0.1 localhost\n192.0.2.1 mirror\n")
        os.replace(root / "etc/.hosts.swp", root / "etc/hosts")
        # Directories that did not exist when the watch started, filled right away.
        write(root, "/etc/cron.d/sub/deeper/job", "* * * * * root true\n")
        write(root, "/root/.ssh/authorized_keys", "ssh-ed25519 AAAA fixture\n", 0o600)
        write(root, "/etc/ld.so.preload", "/tmp/x.so\n")
        (root / "bin/ls").unlink()
        wanted = {"/etc/crontab", "/etc/hosts", "/etc/cron.d/sub", "/etc/cron.d/sub/deeper",
                  "/etc/cron.d/sub/deeper/job", "/root/.ssh", "/root/.ssh/authorized_keys", "/etc/ld.so.preload",
                  "/bin/ls"}
        seen: dict[str, WatchEvent] = {}
        _changes_until(events, wanted, seen)
        assert wanted <= seen.keys(), f"missing: {wanted - seen.keys()}"
        assert seen["/bin/ls"].change.change == "removed"  # type: ignore[union-attr]
        assert seen["/etc/ld.so.preload"].change.change == "added"  # type: ignore[union-attr]
        assert seen["/etc/hosts"].change.changed == ("content",)  # type: ignore[union-attr]
        # Deleted and recreated (same content as the baseline): back to normal, then changed again.
        (root / "etc/passwd").unlink()
        write(root, "/etc/passwd", (root / "etc/group").read_text())
        seen.clear()
        _changes_until(events, {"/etc/passwd"}, seen)
        assert seen["/etc/passwd"].change.change in ("modified", "removed")  # type: ignore[union-attr]
        deadline = time.monotonic() + DEADLINE
        while seen["/etc/passwd"].change.change != "modified" and time.monotonic() < deadline:  # type: ignore[union-attr]
            event = next(events)
            if event.kind == "change" and event.change is not None and event.change.path == "/etc/passwd":
                seen["/etc/passwd"] = event
        assert seen["/etc/passwd"].change.change == "modified"  # type: ignore[union-attr]
    finally:
        events.close()
        watcher.close()


def test_queue_overflow_rescans_and_loses_nothing(tmp_path: Path) -> None:
    """20,000 new files while the watcher is not reading: the kernel queue (16,384 events by default)
    overflows; the watcher rescans and still reports every one of them."""
    root = build_clean_root(tmp_path / "root")
    watcher, events, kinds = _watch(root)
    try:
        limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
        count = limit + 4000
        burst = root / "etc/cron.d"
        for i in range(count):  # the generator is paused: nobody drains the queue meanwhile
            (burst / f"job-{i:05d}").write_text(f"* * * * * root echo {i}\n")
        wanted = {f"/etc/cron.d/job-{i:05d}" for i in range(count)}
        seen: dict[str, WatchEvent] = {}
        _changes_until(events, wanted, seen, kinds)
        assert not wanted - seen.keys(), f"{len(wanted - seen.keys())} changes lost"
        assert watcher.rescans >= 2  # the start, and at least one overflow
        after_ready = kinds[kinds.index("ready") + 1:]
        while "rescan" not in after_ready:  # the rescan is announced once it has compared everything
            after_ready.append(next(events).kind)
    finally:
        events.close()
        watcher.close()


# --- the CLI, as a user runs it ------------------------------------------------------------------


def _env(tmp_path: Path) -> dict[str, str]:
    env = {**os.environ, "CLOUDWARD_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    env.pop("CLOUDWARD_DB_URL", None)
    return env


class Watch:
    """`cloudward host fim watch ROOT --format jsonl` in a subprocess, its stdout lines on a queue."""

    def __init__(self, tmp_path: Path, root: Path, *args: str) -> None:
        self.proc = subprocess.Popen([CLI, "host", "fim", "watch", str(root), "--format", "jsonl", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(tmp_path),
                                     cwd=tmp_path)
        self.lines: queue.Queue[dict] = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(json.loads(line))

    def until(self, predicate, deadline: float = DEADLINE) -> list[dict]:
        """Lines read until `predicate(line)` is true for one of them (or the deadline)."""
        got = []
        end = time.monotonic() + deadline
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            got.append(line)
            if predicate(line):
                break
        return got

    def stop(self, sig: int) -> tuple[int, str]:
        self.proc.send_signal(sig)
        code = self.proc.wait(timeout=DEADLINE)
        self.reader.join(timeout=DEADLINE)
        assert self.proc.stderr is not None
        return code, self.proc.stderr.read()


@pytest.fixture
def baselined(tmp_path: Path) -> Path:
    root = build_clean_root(tmp_path / "root")
    done = subprocess.run([CLI, "host", "fim", "baseline", str(root)], capture_output=True, text=True,
                          env=_env(tmp_path), cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    return root


def test_cli_watch_streams_findings_and_stops_with_130_on_ctrl_c(tmp_path: Path, baselined: Path) -> None:
    root = baselined
    watch = Watch(tmp_path, root)
    try:
        assert watch.until(lambda line: line["type"] == "ready")[-1]["type"] == "ready"
        write(root, "/etc/ld.so.preload", "/usr/local/lib/.libprocesshider.so\n")
        lines = watch.until(lambda line: line.get("location", {}).get("path") == "/etc/ld.so.preload")
        finding = lines[-1]
        assert finding["type"] == "finding" and finding["rule_id"] == "host.fim.ld_so_preload_changed"
        assert finding["severity"] == "critical" and finding["evidence"]["change"] == "added"
        write(root, "/etc/cron.d/.x", "* * * * * root echo fixture\n")
        lines = watch.until(lambda line: line.get("location", {}).get("path") == "/etc/cron.d/.x")
        assert lines[-1]["rule_id"] == "host.fim.cron_changed"
    finally:
        code, stderr = watch.stop(signal.SIGINT)
    assert code == 130, stderr
    # What the watch found is in the store, the scan marked cancelled.
    listed = subprocess.run([CLI, "findings", "list", "--format", "json"], capture_output=True, text=True,
                            env=_env(tmp_path), cwd=tmp_path, timeout=300)
    assert "host.fim.ld_so_preload_changed" in listed.stdout and "host.fim.cron_changed" in listed.stdout


def test_cli_watch_sigterm_is_a_clean_stop(tmp_path: Path, baselined: Path) -> None:
    watch = Watch(tmp_path, baselined, "--no-store")
    assert watch.until(lambda line: line["type"] == "ready")[-1]["type"] == "ready"
    code, stderr = watch.stop(signal.SIGTERM)
    assert code == 0, stderr
    assert "fim watch: 0 changes" in stderr


def test_cli_watch_max_events_and_duration(tmp_path: Path, baselined: Path) -> None:
    root = baselined
    watch = Watch(tmp_path, root, "--max-events", "2", "--no-store")
    assert watch.until(lambda line: line["type"] == "ready")[-1]["type"] == "ready"
    for name in ("a", "b", "c"):
        write(root, f"/etc/sudoers.d/{name}", "x ALL=(ALL) ALL\n", 0o440)
    assert watch.proc.wait(timeout=DEADLINE) == 0
    watch.reader.join(timeout=DEADLINE)
    paths = set()
    while not watch.lines.empty():
        line = watch.lines.get()
        if line["type"] == "finding":
            paths.add(line["location"]["path"])
    assert 1 <= len(paths) <= 2
    timed = subprocess.run([CLI, "host", "fim", "watch", str(root), "--duration", "1", "--no-store"],
                           capture_output=True, text=True, env=_env(tmp_path), cwd=tmp_path, timeout=300)
    assert timed.returncode == 0, timed.stderr
    # The three sudoers files changed before this watch started: reported by its start-up comparison.
    assert timed.stdout.count("host.fim.sudoers_changed") == 3


def test_cli_watch_burst_of_changes_loses_none(tmp_path: Path, baselined: Path) -> None:
    """10,000 changes (new files and rewrites) while the CLI watches: every path is reported."""
    root = baselined
    for i in range(2000):
        write(root, f"/etc/cron.d/pre-{i:05d}", "old\n")
    done = subprocess.run([CLI, "host", "fim", "baseline", str(root)], capture_output=True, text=True,
                          env=_env(tmp_path), cwd=tmp_path, timeout=300)
    assert done.returncode == 0, done.stderr
    watch = Watch(tmp_path, root, "--no-store")
    try:
        assert watch.until(lambda line: line["type"] == "ready")[-1]["type"] == "ready"
        wanted = set()
        for i in range(8000):
            (root / f"etc/cron.d/new-{i:05d}").write_text(f"* * * * * root echo {i}\n")
            wanted.add(f"/etc/cron.d/new-{i:05d}")
        for i in range(2000):
            (root / f"etc/cron.d/pre-{i:05d}").write_text(f"new content {i}\n")
            wanted.add(f"/etc/cron.d/pre-{i:05d}")
        reported: set[str] = set()
        rescans = 0

        def progress(line: dict) -> bool:
            nonlocal rescans
            if line["type"] == "finding":
                reported.add(line["location"]["path"])
            rescans += line["type"] == "rescan"
            return wanted <= reported

        watch.until(progress, deadline=DEADLINE * 3)
        assert not wanted - reported, f"{len(wanted - reported)} of {len(wanted)} changes not reported"
    finally:
        code, stderr = watch.stop(signal.SIGINT)
    assert code == 130, stderr[-2000:]


def test_cli_watch_without_baseline_is_a_usage_error(tmp_path: Path) -> None:
    root = build_clean_root(tmp_path / "root")
    done = subprocess.run([CLI, "host", "fim", "watch", str(root), "--duration", "1"], capture_output=True, text=True,
                          env=_env(tmp_path), cwd=tmp_path, timeout=300)
    assert done.returncode == 2
    assert "host fim baseline" in done.stderr
