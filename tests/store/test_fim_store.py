"""FIM baselines in the store (SQLite and PostgreSQL): saved with their entries, replaced whole on
re-baseline, kept per root and name, removed with their entries, and hostile text stored safely."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import func, select

from cloudward.core.errors import UsageError
from cloudward.store import FindingQuery, Store
from cloudward.store.models import FimEntryRow
from tests.store._support import T0

ENTRIES = {
    "/etc/passwd": {"type": "file", "size": 10, "mode": 0o644, "uid": 0, "gid": 0,
                    "mtime_ns": 1_795_833_036_177_220_936, "sha256": "ab" * 32, "immutable": False,
                    "append_only": False},
    "/root/.ssh/authorized_keys": {"type": "file", "size": 90, "mode": 0o600, "uid": 0, "gid": 0,
                                   "mtime_ns": 1, "sha256": "cd" * 32, "keys": ["SHA256:abc"],
                                   "immutable": None, "append_only": None},
    "/bin": {"type": "symlink", "size": 7, "mode": 0o777, "uid": 0, "gid": 0, "mtime_ns": 2, "target": "usr/bin"},
}


def test_baseline_round_trip(store: Store) -> None:
    store.clock = lambda: T0
    saved = store.save_fim_baseline("/", ENTRIES, paths=["/etc/passwd", "~/.ssh/authorized_keys"],
                                    authorized_keys={"SHA256:abc"})
    assert saved.entry_count == 3 and saved.name == "default" and saved.created == T0
    loaded = store.get_fim_baseline("/")
    assert loaded is not None
    assert loaded.entries == ENTRIES  # big integers (mtime in ns), None and nested lists survive
    assert loaded.paths == ["/etc/passwd", "~/.ssh/authorized_keys"]
    assert loaded.authorized_keys == ["SHA256:abc"]
    header = store.get_fim_baseline("/", entries=False)
    assert header is not None and header.entries == {} and header.entry_count == 3


def test_rebaseline_replaces_the_entries(store: Store) -> None:
    store.clock = lambda: T0
    store.save_fim_baseline("/", ENTRIES, paths=["/etc"])
    store.clock = lambda: T0 + timedelta(hours=1)
    store.save_fim_baseline("/", {"/etc/hosts": {"type": "file"}}, paths=["/etc/hosts"])
    loaded = store.get_fim_baseline("/")
    assert loaded is not None and loaded.entries == {"/etc/hosts": {"type": "file"}}
    assert loaded.created == T0 + timedelta(hours=1)
    assert len(store.list_fim_baselines()) == 1
    with store.engine.connect() as conn:  # the old entries went with their header
        assert conn.execute(select(func.count()).select_from(FimEntryRow)).scalar() == 1


def test_baselines_are_per_root_and_name(store: Store) -> None:
    store.save_fim_baseline("/", ENTRIES, paths=["/etc"])
    store.save_fim_baseline("/mnt/snap", {"/etc/hosts": {"type": "file"}}, paths=["/etc/hosts"])
    store.save_fim_baseline("/", {}, paths=[], name="before-upgrade")
    assert [(b.root, b.name) for b in store.list_fim_baselines()] == [
        ("/", "before-upgrade"), ("/", "default"), ("/mnt/snap", "default")]
    assert store.get_fim_baseline("/mnt/other") is None
    assert store.get_fim_baseline("/", "nope") is None
    assert store.delete_fim_baseline("/", "before-upgrade")
    assert not store.delete_fim_baseline("/", "before-upgrade")
    assert len(store.get_fim_baseline("/").entries) == 3  # type: ignore[union-attr]


def test_hostile_names_and_many_entries(store: Store) -> None:
    # A NUL cannot reach a path on Linux, but attributes come from hostile files: keep both backends equal.
    entries = {f"/usr/bin/tool-{i}": {"type": "file", "sha256": f"{i:064x}"} for i in range(5000)}
    entries["/etc/cron.d/\\xff-odd"] = {"type": "file", "target": "a\x00b"}
    store.save_fim_baseline("/", entries, paths=["/usr/bin"])
    loaded = store.get_fim_baseline("/")
    assert loaded is not None and len(loaded.entries) == 5001
    assert loaded.entries["/usr/bin/tool-4999"]["sha256"] == f"{4999:064x}"
    assert "\\xff-odd" in "".join(loaded.entries)


def test_a_baseline_needs_a_name(store: Store) -> None:
    with pytest.raises(UsageError):
        store.save_fim_baseline("/", {}, paths=[], name=" ")


def test_a_0001_store_with_data_upgrades_to_0002(store_url: str) -> None:
    """A store made by the previous release (schema 0001, a scan recorded) gains the FIM tables."""
    from alembic import command

    from cloudward.store.engine import _alembic_config, create_store_engine, current_revision, head_revision
    from tests.store._support import exposure, scan

    engine = create_store_engine(store_url)
    try:
        with engine.begin() as conn:
            command.upgrade(_alembic_config(conn), "0001")
        assert current_revision(engine) == "0001"
    finally:
        engine.dispose()
    with Store.open(store_url) as opened:  # migrates to head
        assert current_revision(opened.engine) == head_revision()  # 0002 and every later revision
        opened.record_scan(scan([exposure("10.0.0.1")], hours=0))
        opened.save_fim_baseline("/", ENTRIES, paths=["/etc"])
        assert len(opened.list_findings()) == 1 and opened.get_fim_baseline("/") is not None


def _fim_finding(root: str, path: str):
    from cloudward.core.finding import Finding, Target

    return Finding(rule_id="host.fim.cron_changed", title="t", severity="high", category="compromise",
                   target=Target(kind="host", name=f"root:{root}"), location={"root": root, "path": path},
                   key=f"fim_change\x1f{path}")


@pytest.mark.parametrize(("kind", "closes"), [("fim", True), ("fim-watch", False)])
def test_what_a_later_scan_closes(store: Store, kind: str, closes: bool) -> None:
    """A complete `fim check` closes the changes it no longer sees; a watch (partial by nature) never does."""
    from tests.store._support import scan

    partial = {"partial": True} if kind == "fim-watch" else {}
    first = scan([_fim_finding("/", "/etc/cron.d/x")], hours=0, targets=["/"], kind=kind,
                 stats=dict(partial))
    store.record_scan(first)
    store.record_scan(scan([], hours=1, targets=["/"], kind=kind, stats=dict(partial)))
    [item] = store.list_findings(FindingQuery(status="all"))
    assert item.status == ("fixed" if closes else "open")
