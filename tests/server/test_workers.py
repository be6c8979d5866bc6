"""Distributed scans (`cloudward worker`, `server --runner celery`, `exposure scan --distributed`).

The end-to-end test runs everything for real: redis-server as the broker, PostgreSQL as the
store, two `cloudward worker` processes, a `cloudward server --runner celery`, loopback services
(an open redis, a redis with a password, an sshd offering passwords) among closed addresses. It
SIGKILLs one worker (its whole process group) while that worker provably holds a chunk — the
`CLOUDWARD_WORKER_TEST_HOLD` hook (server/distributed/execute.py) makes each chunk wait at its
start until the test releases it — and then compares the store with a local scan of the same
targets recorded into another database.

The other tests drive the same code in-process against PostgreSQL, without a broker: chunks
delivered twice, fixed findings closed once at the end, cancellation, failed chunks, a job
message redelivered; plus the parsers with hypothesis.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cloudward.core.errors import ConfigError, InputError, UsageError
from cloudward.core.finding import Finding, Target
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.core.severity import Category, Severity
from cloudward.exposure.targets import Host
from cloudward.server.distributed.assemble import merged_stats
from cloudward.server.distributed.chunks import Chunk, hosts_per_chunk, split_hosts
from cloudward.server.distributed.client import scan_words
from cloudward.server.distributed.request import KNOWN_OPTIONS, parse_exposure_words
from cloudward.server.distributed.settings import check_broker_url, check_store_url
from tests.harness.services import (
    PostgresService,
    Service,
    ServicePool,
    start_process,
    start_rabbitmq,
    start_redis,
    start_sshd,
)
from tests.server._support import start_api, wait_for_job
from tests.server.receiver import webhook_receiver
from tests.store._support import fresh_database

ROOT = Path(__file__).resolve().parents[2]

# --- the words of an exposure job --------------------------------------------------------------


@pytest.mark.parametrize("words, expected", [
    (["10.0.0.0/24"], {"targets": ("10.0.0.0/24",), "ports": "teamtnt"}),
    (["a.example", "-p", "22,80", "--timeout=2.5", "b.example"],
     {"targets": ("a.example", "b.example"), "ports": "22,80", "timeout": 2.5}),
    (["-p6379", "--rate", "100", "127.0.0.1", "--fail-on", "HIGH", "--allow-large-range"],
     {"ports": "6379", "rate": 100.0, "fail_on": "high", "allow_large_range": True}),
    (["127.0.0.1", "-p", "22", "-p", "80", "--max-open-per-host", "3"], {"ports": "80", "max_open_per_host": 3}),
    (["--", "127.0.0.1", "--distributed"], {"targets": ("127.0.0.1", "--distributed")}),
    (["127.0.0.1", "--distributed", "--concurrency", "9", "--max-hosts", "5"],
     {"concurrency": 9, "max_hosts": 5}),
])
def test_exposure_words_are_read_as_the_cli_reads_them(words: list[str], expected: dict[str, Any]) -> None:
    request = parse_exposure_words(words)
    for name, value in expected.items():
        assert getattr(request, name) == value


@pytest.mark.parametrize("words, message", [
    ([], "no targets"),
    (["127.0.0.1", "-iL", "/etc/shadow"], "option -iL cannot be used"),
    (["127.0.0.1", "-iL/etc/shadow"], "option -iL cannot be used"),
    (["127.0.0.1", "--rules=/tmp/r"], "option --rules cannot be used"),
    (["127.0.0.1", "-o", "/tmp/x"], "option -o cannot be used"),
    (["127.0.0.1", "--bogus"], "no such option '--bogus'"),
    (["127.0.0.1", "--rate", "fast"], "option --rate: 'fast' is not a number"),
    (["127.0.0.1", "--rate", "nan"], "not a finite number"),
    (["127.0.0.1", "--concurrency"], "option --concurrency requires a value"),
    (["127.0.0.1", "--max-open-per-host", "0"], "below the minimum of 1"),
    (["127.0.0.1", "--fail-on", "dire"], "unknown severity"),
    (["127.0.0.1", "--allow-large-range=yes"], "does not take a value"),
])
def test_bad_exposure_words_are_refused_naming_the_problem(words: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_exposure_words(words)


def test_every_option_of_the_cli_command_is_known_to_the_job_reader() -> None:
    """If `exposure scan` gains an option, the workers must learn to read (or refuse) it too."""
    import typer

    from cloudward.cli.app import app

    command = typer.main.get_command(app).commands["exposure"].commands["scan"]  # type: ignore[attr-defined]
    cli_options = {o for p in command.params if getattr(p, "param_type_name", "") == "option"
                   for o in [*p.opts, *p.secondary_opts]}
    assert cli_options | {"--help"} == set(KNOWN_OPTIONS)


def test_the_words_the_command_line_sends_read_back_to_the_same_request() -> None:
    words = scan_words(["127.0.0.0/30", "db.internal"], ports="22,6379", concurrency=7, rate=None, timeout=1.5,
                       max_hosts=10, allow_large_range=True, max_open_per_host=4, fail_on="high")
    request = parse_exposure_words(words)
    assert request.targets == ("127.0.0.0/30", "db.internal")
    assert (request.ports, request.concurrency, request.rate, request.timeout) == ("22,6379", 7, None, 1.5)
    assert (request.max_hosts, request.allow_large_range, request.max_open_per_host, request.fail_on) == (
        10, True, 4, "high")


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.text(max_size=30), st.sampled_from(sorted(KNOWN_OPTIONS)),
                          st.sampled_from(["-p22", "--rate=1e309", "--timeout=-1", "--", "-", "--max-hosts=9"])),
                max_size=12))
def test_exposure_word_reader_never_crashes(words: list[str]) -> None:
    try:
        request = parse_exposure_words(words)
    except UsageError:
        return
    assert request.targets and all(isinstance(t, str) for t in request.targets)


# --- settings ----------------------------------------------------------------------------------


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "rediss://:pw@cache.internal:6380/1",
                                 "amqp://user:pass@rabbit:5672//", "pyamqp://rabbit"])
def test_broker_urls_that_celery_can_use_are_accepted(url: str) -> None:
    assert check_broker_url(url) == url


@pytest.mark.parametrize("url, message", [
    ("", "no broker"), ("http://127.0.0.1:6379", "scheme must be one of"), ("redis://", "names no host"),
    ("redis://:hunter2@host:99999/0", "not a valid URL"), ("redis://host\n:1", "not a valid URL"),
])
def test_bad_broker_urls_are_refused_without_showing_a_password(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as caught:
        check_broker_url(url)
    assert "hunter2" not in str(caught.value)


def test_a_sqlite_store_is_refused_for_distributed_runs() -> None:
    assert check_store_url("postgresql+psycopg://cw@db/cw").startswith("postgresql")
    with pytest.raises(ConfigError, match="need a PostgreSQL store shared by the server and every worker"):
        check_store_url("sqlite:////tmp/cloudward.db")


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=120))
def test_broker_url_check_never_crashes(text: str) -> None:
    with contextlib.suppress(ConfigError):
        assert check_broker_url(text)


def test_worker_command_refuses_a_sqlite_store(tmp_path: Path) -> None:
    env = {**_base_env(tmp_path), "CLOUDWARD_DB_URL": f"sqlite:///{tmp_path}/cw.db",
           "CLOUDWARD_BROKER_URL": "redis://127.0.0.1:1/0"}
    done = subprocess.run([sys.executable, "-m", "cloudward", "worker"], env=env, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2
    assert "need a PostgreSQL store" in done.stderr


@pytest.mark.parametrize("args, message", [
    (["--runner", "celery", "--broker", "redis://127.0.0.1:1/0"], "need a PostgreSQL store"),
    (["--runner", "celery"], "no broker"),
    (["--runner", "threads"], "unknown job runner 'threads'"),
])
def test_server_refuses_a_runner_it_cannot_use_before_making_anyone(tmp_path: Path, args: list[str],
                                                                     message: str) -> None:
    env = {**_base_env(tmp_path), "CLOUDWARD_DB_URL": f"sqlite:///{tmp_path}/cw.db"}
    done = subprocess.run([sys.executable, "-m", "cloudward", "server", "--init-admin", "root", *args], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and message in done.stderr
    assert "cw_" not in done.stdout  # no admin token was made for a server that does not start


# --- chunks ------------------------------------------------------------------------------------


def test_hosts_are_cut_in_order_each_once_and_chunks_are_capped() -> None:
    hosts = [Host(f"10.0.{i // 256}.{i % 256}") for i in range(1000)]
    groups = list(split_hosts(hosts, 64))
    assert [h for g in groups for h in g] == hosts
    assert [len(g) for g in groups] == [64] * 15 + [40]
    assert hosts_per_chunk(1000, 64, 256) == 64
    assert hosts_per_chunk(65536, 64, 256) == 256  # a /16 makes 256 chunks of 256, not 1024 of 64


def _chunk(**changes: Any) -> Chunk:
    from cloudward.core.config import ExposureSettings

    values: dict[str, Any] = {"scan_id": "s1", "index": 1, "count": 3, "ports": (22, 6379),
                              "hosts": (Host("127.0.0.1"), Host("::1", "localhost")),
                              "settings": ExposureSettings(), "max_open_per_host": 9, "job_id": "j1"}
    values.update(changes)
    return Chunk(**values)


def test_chunk_payload_round_trips_through_json() -> None:
    chunk = _chunk()
    assert Chunk.from_payload(json.loads(json.dumps(chunk.payload()))) == chunk
    assert [h.label for h in chunk.targets()] == ["127.0.0.1", "localhost (::1)"]


@pytest.mark.parametrize("change, message", [
    ({"v": 2}, "unknown version"), ({"scan": "../x"}, "scan must be an id"), ({"index": 3}, "index must be"),
    ({"ports": [0]}, "ports must be"), ({"ports": []}, "ports must be a list"), ({"hosts": []}, "hosts must be"),
    ({"hosts": [["example.com", None]]}, "not an IP address"), ({"hosts": [["127.0.0.1", "\x1b[31m"]]}, "printable"),
    ({"settings": {"concurrency": 0}}, "settings.concurrency"), ({"max_open_per_host": True}, "max_open_per_host"),
])
def test_forged_chunk_payloads_are_refused(change: dict[str, Any], message: str) -> None:
    payload = {**_chunk().payload(), **change}
    with pytest.raises(InputError, match=message):
        Chunk.from_payload(payload)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["v", "scan", "index", "count", "hosts", "ports", "settings",
                                        "max_open_per_host", "job"]),
                       st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=20),
                                    lambda inner: st.lists(inner, max_size=4)
                                    | st.dictionaries(st.text(max_size=10), inner, max_size=4), max_leaves=12)))
def test_chunk_payload_reader_never_crashes(change: dict[str, Any]) -> None:
    with contextlib.suppress(InputError):
        Chunk.from_payload({**_chunk().payload(), **change})


def test_merged_stats_add_one_chunk_and_remember_who_did_it() -> None:
    from cloudward.server.distributed.assemble import initial_stats

    parent = initial_stats(hosts=4, ports="22", port_count=1, chunks=2, chunk_hosts=2, job_id=None, fail_on=None,
                           resolved=None)
    chunk = ScanResult(kind="exposure", stats={"ports_probed": 2, "open": 1, "closed": 1, "hosts_up": 1,
                                               "concurrency": 512}).finish()
    once = merged_stats(parent, chunk, 1, "w2@host")
    assert (once["ports_probed"], once["open"], once["closed"], once["concurrency"]) == (2, 1, 1, 512)
    assert once["distributed"]["done"] == [1] and once["distributed"]["completed_by"] == {"1": "w2@host"}
    assert parent["ports_probed"] == 0  # pure: the parent's stats are not changed
    failed = merged_stats(once, ScanResult(kind="exposure").finish(ScanStatus.FAILED), 0, "w1@host")
    assert failed["distributed"]["done"] == [0, 1] and failed["distributed"]["failed"] == [0]


# --- in-process against PostgreSQL -------------------------------------------------------------


@pytest.fixture
def stores(postgres_trust: PostgresService) -> Iterator[tuple[str, str]]:
    """Two empty databases: where the distributed scan goes, and where the local one goes."""
    with (fresh_database(postgres_trust.dsn, postgres_trust.sqlalchemy_url) as first,
          fresh_database(postgres_trust.dsn, postgres_trust.sqlalchemy_url) as second):
        yield first, second


@pytest.fixture(scope="module")
def loopback_targets() -> Iterator[tuple[str, str]]:
    """127.0.8.32/30: an open redis on .33, a redis with a password on .34, nothing on .32 and .35.
    Returns (CIDR, ports)."""
    with ServicePool() as pool:
        open_redis = pool.start(start_redis, host="127.0.8.33")
        locked = pool.start(start_redis, host="127.0.8.34", password="cloudward-test-pw")
        yield "127.0.8.32/30", f"{open_redis.port},{locked.port}"


class _Worker:
    """A WorkerContext for in-process tests: chunks it "sends" are kept in a list."""

    def __init__(self, url: str, tmp: Path) -> None:
        from cloudward.server.db import ServerDB
        from cloudward.server.distributed.execute import WorkerContext
        from cloudward.server.distributed.settings import DistributedSettings

        self.sent: list[Chunk] = []
        settings = DistributedSettings(broker_url="redis://127.0.0.1:1/0", store_url=url, data_dir=str(tmp),
                                       chunk_hosts=2)
        self.ctx = WorkerContext(settings, ServerDB.open(url), self.sent.append)

    @property
    def store(self) -> Any:
        return self.ctx.db.store

    def plan(self, words: list[str], scan_id: str = "dist1") -> Any:
        from cloudward.server.distributed.plan import plan_exposure

        return plan_exposure(self.store, parse_exposure_words(words), {}, scan_id=scan_id, chunk_hosts=2)

    def chunk(self, chunk: Chunk, node: str = "w1@test") -> Any:
        from cloudward.server.distributed.execute import run_chunk

        return run_chunk(self.ctx, chunk.payload(), node=node)

    def state(self, scan_id: str) -> tuple[Any, ...]:
        scan = self.store.get_scan(scan_id)
        return (scan.status, sorted(_members(self.store, scan_id)), [e.target for e in scan.errors],
                {k: v for k, v in scan.stats.items() if k not in ("duration",)})

    def close(self) -> None:
        self.ctx.db.close()


@pytest.fixture
def worker(stores: tuple[str, str], tmp_path: Path) -> Iterator[_Worker]:
    made = _Worker(stores[0], tmp_path)
    try:
        yield made
    finally:
        made.close()


def _members(store: Any, scan_id: str) -> set[str]:
    from cloudward.store import FindingQuery

    return {i.finding.fingerprint for i in store.list_findings(
        FindingQuery(scan_id=scan_id, status="all", include_suppressed=True))}


def _local_scan(url: str, targets: str, ports: str) -> ScanResult:
    """The same scan run locally, in-process, recorded into its own store."""
    from cloudward.core.rules import load_rules
    from cloudward.exposure.evaluate import validate_rule
    from cloudward.exposure.scanner import scan
    from cloudward.store import Store

    rules = load_rules(["cloudward.exposure"], [], validators={"exposure": validate_rule})
    result = scan([targets], ports, _settings(), rules)
    with Store.open(url) as store:
        store.record_scan(result)
    return result


def _settings() -> Any:
    from cloudward.core.config import ExposureSettings

    return ExposureSettings()


def test_chunks_merged_twice_count_once_and_equal_a_local_scan(worker: _Worker, stores: tuple[str, str],
                                                               loopback_targets: tuple[str, str]) -> None:
    from cloudward.store import Store

    targets, ports = loopback_targets
    plan = worker.plan([targets, "-p", ports])
    assert [[h.address for h in c.hosts] for c in plan.chunks] == [["127.0.8.32", "127.0.8.33"],
                                                                   ["127.0.8.34", "127.0.8.35"]]
    first, second = plan.chunks
    assert worker.chunk(first, "w1@test").status is ScanStatus.RUNNING
    after_first = worker.state("dist1")
    assert worker.chunk(first, "w2@test") is None  # redelivered: nothing merged again
    assert worker.state("dist1") == after_first
    assert after_first[3]["distributed"]["completed_by"] == {"0": "w1@test"}
    assert worker.chunk(second).status is ScanStatus.COMPLETED
    done = worker.state("dist1")
    assert worker.chunk(second) is None and worker.chunk(first) is None
    assert worker.state("dist1") == done

    local = _local_scan(stores[1], targets, ports)
    with Store.open(stores[1]) as local_store:
        local_members = _members(local_store, local.id)
        local_all = {i.finding.fingerprint for i in local_store.list_findings()}
    rules = {f.rule_id for f in local.findings}
    assert "redis.unauthenticated" in rules  # the open redis on .33 ...
    assert not any(f.target.name.startswith("127.0.8.34:") and f.rule_id == "redis.unauthenticated"
                   for f in local.findings)  # ... and not the one with a password
    assert set(done[1]) == local_members == local_all == {i.finding.fingerprint for i in worker.store.list_findings()}
    scan = worker.store.get_scan("dist1")
    assert scan.targets == local.targets and scan.finding_count == len(local_members)
    for key in ("hosts", "ports", "port_count", "ports_probed", "open", "closed", "hosts_up", "identified"):
        assert scan.stats[key] == local.stats[key], key
    assert [e.target for e in scan.errors] == [e.target for e in local.errors]


def test_a_chunk_for_other_hosts_or_ports_than_its_scan_is_refused(worker: _Worker,
                                                                    loopback_targets: tuple[str, str]) -> None:
    """Whoever can publish to the broker cannot point the workers at addresses the scan never named."""
    from dataclasses import replace

    targets, ports = loopback_targets
    real = worker.plan([targets, "-p", ports]).chunks[0]
    with pytest.raises(InputError, match=r"host 127\.0\.8\.99 is not among the targets of scan dist1"):
        worker.chunk(replace(real, hosts=(Host("127.0.8.32"), Host("127.0.8.99"))))
    with pytest.raises(InputError, match="its ports or chunk count are not those of scan dist1"):
        worker.chunk(replace(real, ports=(22,)))
    assert worker.store.get_scan("dist1").stats["distributed"]["done"] == []
    assert worker.chunk(real) is not None  # the genuine chunk goes through


def _seed_finding(store: Any, targets: str, ports: str, host: str, port: int) -> str:
    """An earlier completed scan of the same targets that saw a (made-up) open redis on host:port."""
    finding = Finding(rule_id="redis.unauthenticated", title="Redis accepts commands without authentication",
                      severity=Severity.CRITICAL, category=Category.EXPOSURE,
                      target=Target(kind="service", name=f"{host}:{port}"), location={"host": host, "port": port})
    earlier = ScanResult(kind="exposure", targets=[targets], findings=[finding], stats={"ports": ports})
    earlier.started = earlier.started.replace(year=earlier.started.year - 1)
    store.record_scan(earlier.finish())
    return finding.fingerprint


def test_the_last_chunk_closes_fixed_findings_once(worker: _Worker, loopback_targets: tuple[str, str]) -> None:
    targets, ports = loopback_targets
    gone = _seed_finding(worker.store, targets, ports, "127.0.8.32", int(ports.split(",")[0]))
    plan = worker.plan([targets, "-p", ports])
    worker.chunk(plan.chunks[0])  # .32 was scanned and is closed now, but the scan is not over
    assert worker.store.get_finding(gone).status == "open"
    worker.chunk(plan.chunks[1])
    fixed = worker.store.get_finding(gone)
    assert (fixed.status, fixed.fixed_scan_id) == ("fixed", "dist1")
    diff = worker.store.diff(after="dist1")  # what webhooks and `findings diff` read
    assert [i.finding.fingerprint for i in diff.fixed] == [gone]
    assert {i.finding.fingerprint for i in diff.new} == _members(worker.store, "dist1")


def _job(worker: _Worker, words: list[str]) -> str:
    from cloudward.server.audit import Actor
    from cloudward.server.jobs.commands import JobCommand
    from cloudward.server.jobs.runner import DatabaseJobs

    return DatabaseJobs(worker.ctx.db).submit(JobCommand(("exposure", "scan", *words)), actor=Actor("test")).id


def test_a_redelivered_job_message_resumes_and_a_foreign_one_is_ignored(worker: _Worker,
                                                                        loopback_targets: tuple[str, str]) -> None:
    from cloudward.server.distributed.execute import run_job
    from cloudward.server.distributed.plan import scan_id_for_job

    targets, ports = loopback_targets
    job_id = _job(worker, [targets, "-p", ports, "--fail-on", "high"])
    run_job(worker.ctx, job_id, task_id="t1")
    assert [c.index for c in worker.sent] == [0, 1]
    worker.chunk(worker.sent[0])
    run_job(worker.ctx, job_id, task_id="t1")  # the same message again (its worker died): resumes
    assert [c.index for c in worker.sent] == [0, 1, 1]
    run_job(worker.ctx, job_id, task_id="someone-else")  # a copy under another id: not ours
    assert len(worker.sent) == 3
    for chunk in worker.sent[1:]:
        worker.chunk(chunk)
    job = worker.ctx.jobs.status(job_id)
    assert (job.status, job.exit_code, job.scan_id) == ("succeeded", 1, scan_id_for_job(job_id))  # --fail-on high
    assert "2 chunks on 1 worker(s)" in job.log_tail


def test_cancelling_the_job_stops_its_chunks_and_closes_nothing(worker: _Worker,
                                                                 loopback_targets: tuple[str, str]) -> None:
    from cloudward.server.audit import Actor
    from cloudward.server.distributed.execute import run_job

    targets, ports = loopback_targets
    gone = _seed_finding(worker.store, targets, ports, "127.0.8.35", int(ports.split(",")[0]))
    job_id = _job(worker, [targets, "-p", ports])
    run_job(worker.ctx, job_id, task_id="t1")
    worker.chunk(worker.sent[0])
    worker.ctx.jobs.cancel(job_id, actor=Actor("test"))
    scan = worker.chunk(worker.sent[1])
    assert scan.status is ScanStatus.CANCELLED
    assert scan.stats["distributed"]["cancelled"] == [1]
    assert worker.store.get_finding(gone).status == "open"  # a cancelled scan did not look everywhere
    job = worker.ctx.jobs.status(job_id)
    assert (job.status, job.exit_code) == ("cancelled", 130)


def test_a_chunk_that_cannot_be_scanned_fails_the_scan_naming_its_hosts(worker: _Worker,
                                                                         loopback_targets: tuple[str, str]) -> None:
    from cloudward.server.distributed.execute import fail_chunk, run_job

    targets, ports = loopback_targets
    job_id = _job(worker, [targets, "-p", ports])
    run_job(worker.ctx, job_id, task_id="t1")
    worker.chunk(worker.sent[0])
    fail_chunk(worker.ctx, worker.sent[1].payload(), "chunk not scanned: the store kept failing", node="w1@test")
    fail_chunk(worker.ctx, worker.sent[1].payload(), "again", node="w1@test")  # counted once
    scan = worker.store.get_scan(worker.sent[1].scan_id)
    assert scan.status is ScanStatus.FAILED
    assert [(e.target, e.stage) for e in scan.errors] == [("127.0.8.34", "distributed"), ("127.0.8.35", "distributed")]
    assert worker.ctx.jobs.status(job_id).status == "failed"


def test_other_job_commands_run_on_the_worker_as_a_subprocess(worker: _Worker, tmp_path: Path) -> None:
    from cloudward.server.audit import Actor
    from cloudward.server.distributed.execute import run_job
    from cloudward.server.jobs.commands import parse_command
    from cloudward.server.jobs.runner import DatabaseJobs

    (tmp_path / "app").mkdir()
    (tmp_path / "app" / "settings.py").write_text("DEBUG = False\n")
    job_id = DatabaseJobs(worker.ctx.db).submit(parse_command(f"secrets scan {tmp_path / 'app'}"),
                                                actor=Actor("test")).id
    run_job(worker.ctx, job_id, task_id="t1")
    job = worker.ctx.jobs.status(job_id)
    assert (job.status, job.exit_code, worker.sent) == ("succeeded", 0, [])
    assert worker.store.get_scan(job.scan_id).kind == "secrets"
    run_job(worker.ctx, job_id, task_id="t1")  # a late copy of the message: the job is over, nothing runs
    assert worker.ctx.jobs.status(job_id).finished == job.finished


def test_a_bad_job_fails_with_the_reason_and_no_scan(worker: _Worker) -> None:
    from cloudward.server.distributed.execute import run_job

    job_id = _job(worker, ["not a host!"])
    run_job(worker.ctx, job_id, task_id="t1")
    job = worker.ctx.jobs.status(job_id)
    assert (job.status, job.exit_code, job.scan_id, worker.sent) == ("failed", 2, None, [])
    assert "not an IP address, CIDR or host name" in job.error


# --- for real: broker, workers, server, a killed worker ----------------------------------------


def _base_env(tmp: Path) -> dict[str, str]:
    return {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME": str(tmp), "LANG": "C.UTF-8",
            "CLOUDWARD_DATA_DIR": str(tmp / "data"), "PYTHONPATH": str(ROOT / "src")}


def _start_worker(pool: ServicePool, name: str, env: dict[str, str]) -> Service:
    def argv(service: Service) -> list[str]:
        return [sys.executable, "-m", "cloudward", "worker", "--concurrency", "1", "--name", name]

    return pool.start(start_process, f"worker-{name}", argv, env=env, timeout=60,
                      ready=lambda s: f"{name}@" in s.log_tail(200) and " ready." in s.log_tail(200))


def _wait(predicate: Any, what: str, timeout: float = 120) -> Any:
    """Poll until `predicate()` is truthy; the deadline only stops a hung test, nothing asserts on time."""
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"still waiting for {what}"
        time.sleep(0.05)
    return value


def _held(hold: Path) -> dict[str, int] | None:
    """{worker name: chunk it holds} once both workers hold one (files `started.<chunk>.<node>.<pid>`)."""
    held: dict[str, int] = {}
    for path in hold.glob("started.*"):
        _, index, rest = path.name.split(".", 2)
        held[rest.split("@")[0]] = int(index)
    return held if {"w1", "w2"} <= held.keys() else None


@pytest.mark.services
def test_a_worker_killed_mid_chunk_loses_and_duplicates_nothing(postgres_trust: PostgresService, services: ServicePool,
                                                                tmp_path: Path) -> None:
    from cloudward.store import Store

    broker = services.start(start_redis)
    open_redis = services.start(start_redis, host="127.0.8.10")
    locked = services.start(start_redis, host="127.0.8.11", password="cloudward-test-pw")
    sshd = services.start(start_sshd, host="127.0.8.12", password_auth=True, permit_root_login="yes")
    ports = ",".join(str(p) for p in sorted({open_redis.port, locked.port, sshd.port}))
    targets = "127.0.8.8/29"  # .8-.15: three services, five closed addresses
    hold = tmp_path / "hold"
    hold.mkdir()
    with (fresh_database(postgres_trust.dsn, postgres_trust.sqlalchemy_url) as url,
          fresh_database(postgres_trust.dsn, postgres_trust.sqlalchemy_url) as local_url,
          webhook_receiver() as receiver):
        env = {**_base_env(tmp_path), "CLOUDWARD_DB_URL": url, "CLOUDWARD_BROKER_URL": str(broker.url),
               "CLOUDWARD_WORKER_CHUNK_HOSTS": "1", "CLOUDWARD_WORKER_VISIBILITY_TIMEOUT": "5",
               "CLOUDWARD_WORKER_RESTORE_INTERVAL": "0.5", "CLOUDWARD_WORKER_TEST_HOLD": str(hold)}
        victim = _start_worker(services, "w1", env)
        _start_worker(services, "w2", env)
        api = start_api(url, "postgresql", jobs=0, extra_env={"CLOUDWARD_SERVER_RUNNER": "celery",
                                                              "CLOUDWARD_BROKER_URL": str(broker.url)})
        try:
            with api.client("admin") as admin, api.client("analyst") as analyst:
                made = admin.post("/api/v1/webhooks", json={"url": receiver.url + "/hook", "min_severity": "info"})
                assert made.status_code == 201, made.text
                command = f"exposure scan {targets} -p {ports}"
                job_id = analyst.post("/api/v1/jobs", json={"command": command}).json()["id"]
                # both workers hold a chunk: w1 is killed in the middle of its own
                lost = _wait(lambda: _held(hold), "both workers to start a chunk")["w1"]
                assert victim.pid is not None
                os.killpg(victim.pid, signal.SIGKILL)  # the worker and its pool process, at once
                (hold / "release").touch()
                job = wait_for_job(analyst, job_id, timeout=120)
            assert job["status"] == "succeeded", (job, api.log())
        finally:
            api.service.stop()
        (delivery,) = receiver.wait_for("/hook", 1)

        with Store.open(url) as store:
            scan = store.get_scan(job["scan_id"])
            members = _members(store, scan.id)
            everything = {i.finding.fingerprint for i in store.list_findings()}
        block = scan.stats["distributed"]
        assert scan.status is ScanStatus.COMPLETED
        assert block["done"] == list(range(8)) and block["failed"] == block["cancelled"] == []
        assert block["completed_by"][str(lost)].startswith("w2@")  # the lost chunk was retried elsewhere

        report = tmp_path / "local.json"
        local_env = {**_base_env(tmp_path), "CLOUDWARD_DB_URL": local_url}
        done = subprocess.run([sys.executable, "-m", "cloudward", "exposure", "scan", targets, "-p", ports,
                               "--format", "json", "--output", str(report)], env=local_env, capture_output=True,
                              text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        local = json.loads(report.read_text())
        with Store.open(local_url) as local_store:
            local_members = _members(local_store, local["scan"]["id"])
        rules = {(f["rule_id"], f["target"]["name"].split(":")[0]) for f in local["findings"]}
        assert {("redis.unauthenticated", "127.0.8.10"), ("ssh.password_authentication_enabled", "127.0.8.12")} <= rules
        assert ("redis.unauthenticated", "127.0.8.11") not in rules

        assert members == everything == local_members == {f["fingerprint"] for f in local["findings"]}
        assert scan.targets == local["scan"]["targets"] and scan.finding_count == len(local_members)
        for key in ("hosts", "ports", "ports_probed", "open", "closed", "hosts_up", "identified", "unidentified"):
            assert scan.stats[key] == local["scan"]["stats"][key], key  # a chunk counted twice would show here
        assert [e.target for e in scan.errors] == [e["target"] for e in local["scan"]["errors"]]
        sent = delivery.json()
        assert sent["scan"]["id"] == scan.id and {f["fingerprint"] for f in sent["findings"]} == members


@pytest.mark.services
@pytest.mark.parametrize("broker_kind", ["redis", "rabbitmq"])
def test_exposure_scan_distributed_from_the_command_line(postgres_trust: PostgresService, services: ServicePool,
                                                         loopback_targets: tuple[str, str], tmp_path: Path,
                                                         broker_kind: str) -> None:
    """The same distributed scan over either broker a deployment may run: redis-server, or a RabbitMQ
    node of the test's own (AMQP)."""
    broker = services.start(start_redis if broker_kind == "redis" else start_rabbitmq)
    targets, ports = loopback_targets
    with fresh_database(postgres_trust.dsn, postgres_trust.sqlalchemy_url) as url:
        env = {**_base_env(tmp_path), "CLOUDWARD_DB_URL": url, "CLOUDWARD_BROKER_URL": str(broker.url)}
        _start_worker(services, "solo", env)
        report = tmp_path / "report.json"
        done = subprocess.run([sys.executable, "-m", "cloudward", "exposure", "scan", targets, "-p", ports,
                               "--distributed", "--fail-on", "critical", "--format", "json", "--output", str(report)],
                              env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 1, done.stderr  # the open redis is critical
        document = json.loads(report.read_text())
        assert document["scan"]["status"] == "completed"
        assert document["scan"]["stats"]["distributed"]["completed_by"] == {"0": "solo@" + os.uname().nodename}
        assert any(f["rule_id"] == "redis.unauthenticated" for f in document["findings"])
        refused = subprocess.run([sys.executable, "-m", "cloudward", "exposure", "scan", targets, "--distributed",
                                  "--no-store"], env=env, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and "--no-store cannot be used with --distributed" in refused.stderr
