"""File integrity monitoring (workload/fim.py): snapshots of fixture roots, diffs, the facts rules
judge, the rules' coverage of every kind of change, and hostile roots."""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cloudward.cli.common import load_all_rules
from cloudward.core.severity import Severity
from cloudward.workload.evaluate import compile_rules, evaluate
from cloudward.workload.fim import (
    DEFAULT_PATHS,
    Change,
    authorized_keys_fingerprints,
    category,
    change_observation,
    compare,
    diff,
    expand_paths,
    file_state,
    run_check,
    snapshot,
)
from cloudward.workload.root import HostRoot
from tests.harness.hostroot import build_clean_root, write


@pytest.fixture(scope="module")
def host_rules():
    return load_all_rules().engine("host")


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build_clean_root(tmp_path / "root")


def _check(root: Path, baseline, rules, paths=DEFAULT_PATHS):
    return run_check(HostRoot(root), baseline, paths, rules)


def _by_rule(result) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for finding in result.findings:
        out.setdefault(finding.rule_id, []).append(finding.location["path"])
    return out


def test_snapshot_records_the_attributes(root: Path) -> None:
    os.symlink("/usr/bin/true-ish", root / "usr/local/bin/tool")
    entries = snapshot(HostRoot(root))
    passwd = entries["/etc/passwd"]
    assert passwd["type"] == "file" and passwd["mode"] == 0o644 and passwd["uid"] == os.getuid()
    assert passwd["size"] == (root / "etc/passwd").stat().st_size
    import hashlib

    assert passwd["sha256"] == hashlib.sha256((root / "etc/passwd").read_bytes()).hexdigest()
    assert passwd["mtime_ns"] == (root / "etc/passwd").stat().st_mtime_ns
    assert entries["/etc/shadow"]["mode"] == 0o640
    assert entries["/usr/bin/sudo"]["mode"] == 0o4755
    assert entries["/usr/local/bin/tool"] == {**entries["/usr/local/bin/tool"], "type": "symlink",
                                              "target": "/usr/bin/true-ish"}
    assert entries["/etc/cron.d"]["type"] == "dir"
    # Every home's authorized_keys (from /etc/passwd) is covered.
    assert "/home/admin/.ssh/authorized_keys" in entries
    # Flags: known (bool) on filesystems that have them, None (unknown) elsewhere, never an error.
    assert passwd["immutable"] in (True, False, None)
    assert "error" not in passwd


def test_symlinked_binary_directory_is_one_entry_not_followed(tmp_path: Path) -> None:
    root = build_clean_root(tmp_path / "root")
    shutil.rmtree(root / "bin")
    os.symlink("usr/bin", root / "bin")  # merged /usr, as on Debian 12
    entries = snapshot(HostRoot(root))
    assert entries["/bin"]["type"] == "symlink" and entries["/bin"]["target"] == "usr/bin"
    assert not [p for p in entries if p.startswith("/bin/")]
    assert "/usr/bin/curl" in entries


def test_absolute_symlinks_stay_inside_the_root(tmp_path: Path) -> None:
    root = build_clean_root(tmp_path / "root")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret").write_text("host file")
    # An absolute symlink to a directory of the *auditing* machine: inside the root it is dangling.
    os.symlink(str(outside), root / "etc/cron.d/escape")
    entries = snapshot(HostRoot(root))
    assert entries["/etc/cron.d/escape"]["type"] == "symlink"
    assert not [p for p in entries if "secret" in p]


def test_authorized_keys_fingerprints_match_ssh_keygen(root: Path, tmp_path: Path) -> None:
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "fixture@test", "-f", str(key)], check=True)
    expected = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], check=True, capture_output=True,
                              text=True).stdout.split()[1]
    write(root, "/root/.ssh/authorized_keys", 'from="10.0.0.1" ' + (tmp_path / "k.pub").read_text(), 0o600)
    entries = snapshot(HostRoot(root))
    assert entries["/root/.ssh/authorized_keys"]["keys"] == [expected]
    admin = subprocess.run(["ssh-keygen", "-lf", str(root / "home/admin/.ssh/authorized_keys")], check=True,
                           capture_output=True, text=True).stdout.split()[1]
    assert authorized_keys_fingerprints(entries) == {expected, admin}  # the clean root's admin key too


def test_categories() -> None:
    assert category("/etc/ld.so.preload") == "preload"
    assert category("/etc/ld.so.conf.d/x.conf") == "loader"
    assert category("/etc/shadow") == "auth"
    assert category("/etc/sudoers.d/90-cloud") == "sudo"
    assert category("/home/a/.ssh/authorized_keys2") == "ssh_keys"
    assert category("/etc/ssh/sshd_config.d/50.conf") == "sshd"
    assert category("/etc/ssh/ssh_host_rsa_key") == "ssh"
    assert category("/var/spool/cron/crontabs/root") == category("/etc/cron.daily/x") == "cron"
    assert category("/etc/systemd/system/x.service") == "systemd"
    assert category("/usr/local/sbin/x") == category("/bin/ps") == "binary"
    assert category("/etc/profile.d/a.sh") == category("/etc/environment") == "profile"
    assert category("/etc/rc.local") == "boot"
    assert category("/etc/resolv.conf") == "resolver"
    assert category("/etc/motd") == "other"
    assert category("/usr/binary-not-a-dir") == "other"


def test_expand_paths_homes_and_depths(root: Path) -> None:
    write(root, "/etc/passwd", "root:x:0:0::/root:/bin/sh\nbob:x:1001:1001::/srv/bob:/bin/sh\ngarbage line\n")
    (root / "home/carol").mkdir(parents=True)  # a home not in passwd is covered too
    tops = dict(expand_paths(HostRoot(root), ["~/.ssh/authorized_keys", "/usr/bin", "/etc/cron.d/"]))
    assert {"/root/.ssh/authorized_keys", "/srv/bob/.ssh/authorized_keys", "/home/carol/.ssh/authorized_keys",
            "/home/admin/.ssh/authorized_keys"} <= set(tops)
    assert tops["/usr/bin"] == 1 and tops["/etc/cron.d"] > 1


def test_unchanged_root_gives_nothing(root: Path, host_rules) -> None:
    baseline = snapshot(HostRoot(root))
    os.utime(root / "etc/passwd", ns=(1, 2))  # touch alone is not a change
    result = _check(root, baseline, host_rules)
    assert result.findings == [] and result.stats["changes"] == 0
    assert result.kind == "fim" and result.status.value == "completed"


def test_teamtnt_style_changes_are_found(root: Path, host_rules) -> None:
    baseline = snapshot(HostRoot(root))
    write(root, "/etc/ld.so.preload", "/usr/local/lib/.libprocesshider.so\n")
    write(root, "/etc/cron.d/.systemd-update", "*/5 * * * * root echo cloudward-fixture\n")
    write(root, "/bin/ps", b"#!/bin/sh\n# trojaned ps stand-in\n", 0o755)
    write(root, "/etc/sudoers.d/99-x", "x ALL=(ALL) NOPASSWD: ALL\n", 0o440)
    (root / "usr/bin/python3").chmod(0o4755)
    (root / "etc/shadow").chmod(0o644)
    (root / "bin/ls").unlink()
    write(root, "/etc/systemd/system/dbus-helper.service", "[Service]\nExecStart=/tmp/x\n")
    write(root, "/etc/resolv.conf", "nameserver 192.0.2.53\n")
    result = _check(root, baseline, host_rules)
    found = _by_rule(result)
    assert found["host.fim.ld_so_preload_changed"] == ["/etc/ld.so.preload"]
    assert found["host.fim.cron_changed"] == ["/etc/cron.d/.systemd-update"]
    assert found["host.fim.binary_replaced"] == ["/bin/ps"]
    assert found["host.fim.sudoers_changed"] == ["/etc/sudoers.d/99-x"]
    assert found["host.fim.setuid_gained"] == ["/usr/bin/python3"]
    assert "/etc/shadow" in found["host.fim.permissions_changed"]
    assert found["host.fim.file_removed"] == ["/bin/ls"]
    assert found["host.fim.systemd_unit_changed"] == ["/etc/systemd/system/dbus-helper.service"]
    assert found["host.fim.resolver_changed"] == ["/etc/resolv.conf"]
    preload = next(f for f in result.findings if f.rule_id == "host.fim.ld_so_preload_changed")
    assert preload.severity is Severity.CRITICAL and preload.evidence["change"] == "added"
    ps = next(f for f in result.findings if f.rule_id == "host.fim.binary_replaced")
    assert ps.evidence["changed"] == ["content"] and ps.evidence["before"]["sha256"] != ps.evidence["after"]["sha256"]


def test_authorized_key_added_names_the_new_fingerprint(root: Path, tmp_path: Path, host_rules) -> None:
    keys = []
    for name in ("a", "b"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(tmp_path / name)], check=True)
        keys.append((tmp_path / f"{name}.pub").read_text())
    write(root, "/root/.ssh/authorized_keys", keys[0], 0o600)
    baseline = snapshot(HostRoot(root))
    write(root, "/root/.ssh/authorized_keys", keys[0] + keys[1], 0o600)
    result = _check(root, baseline, host_rules)
    finding = next(f for f in result.findings if f.rule_id == "host.fim.authorized_keys_changed")
    added = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "b.pub")], capture_output=True, text=True,
                           check=True).stdout.split()[1]
    assert finding.evidence["keys_added"] == [added] and finding.evidence["keys_removed"] == []
    assert finding.severity is Severity.HIGH


def test_timestomped_binary(root: Path, host_rules) -> None:
    baseline = snapshot(HostRoot(root))
    target = root / "usr/bin/curl"
    before = target.stat()
    target.write_bytes(b"replaced")
    os.utime(target, ns=(before.st_atime_ns, before.st_mtime_ns))  # touch -r: the old mtime back
    found = _by_rule(_check(root, baseline, host_rules))
    assert found["host.fim.timestomped"] == ["/usr/bin/curl"]
    assert found["host.fim.binary_replaced"] == ["/usr/bin/curl"]


def test_type_and_link_target_changes(root: Path, host_rules) -> None:
    os.symlink("/lib/systemd/system/ssh.service", root / "etc/systemd/system/sshd.service")
    baseline = snapshot(HostRoot(root))
    (root / "etc/systemd/system/sshd.service").unlink()
    os.symlink("/tmp/evil.service", root / "etc/systemd/system/sshd.service")
    (root / "usr/bin/wget").unlink()
    os.symlink("/tmp/.x/wget", root / "usr/bin/wget")
    changes = {c.path: c for c in diff(baseline, snapshot(HostRoot(root)))}
    assert changes["/etc/systemd/system/sshd.service"].changed == ("link_target",)
    assert changes["/usr/bin/wget"].changed[0] == "type"
    found = _by_rule(_check(root, baseline, host_rules))
    assert "/etc/systemd/system/sshd.service" in found["host.fim.systemd_unit_changed"]
    assert "/usr/bin/wget" in found["host.fim.binary_replaced"]


def test_flags_are_compared_only_when_known() -> None:
    base = {"type": "file", "sha256": "a", "mode": 0o644, "uid": 0, "gid": 0, "immutable": False, "append_only": False}
    assert compare(base, {**base, "immutable": True}) == ("flags",)
    assert compare(base, {**base, "immutable": None, "append_only": None}) == ()
    assert compare({**base, "error": "open: Permission denied", "sha256": None}, {**base, "sha256": "b"}) == ()
    big = {**base, "sha256": None, "hash_skipped": "large", "size": 5, "mtime_ns": 1}
    assert compare(big, {**big, "mtime_ns": 2}) == ("content",)  # unhashed: mtime is all there is


def test_immutable_flag_gained_is_reported(tmp_path: Path, host_rules) -> None:
    """On a filesystem with inode flags (ext4, xfs, btrfs; not tmpfs/overlay), chattr +i is seen."""
    root = build_clean_root(tmp_path / "root")
    baseline = snapshot(HostRoot(root))
    if baseline["/etc/crontab"]["immutable"] is None:
        # The flags are unknown here: the same change must then give no finding (never a guess).
        result = _check(root, baseline, host_rules)
        assert "host.fim.immutable_flag_set" not in _by_rule(result)
        observation = change_observation(Change("/etc/crontab", "modified", ("flags",),
                                                {**baseline["/etc/crontab"], "immutable": False},
                                                {**baseline["/etc/crontab"], "immutable": True}))
        fired = evaluate(observation, compile_rules(host_rules), _target())
        assert "host.fim.immutable_flag_set" in {f.rule_id for f in fired}
        return
    subprocess.run(["chattr", "+i", str(root / "etc/crontab")], check=True)
    try:
        found = _by_rule(_check(root, baseline, host_rules))
    finally:
        subprocess.run(["chattr", "-i", str(root / "etc/crontab")], check=True)
    assert found["host.fim.immutable_flag_set"] == ["/etc/crontab"]


def _target():
    from cloudward.core.finding import Target

    return Target(kind="host", name="fixture")


CATEGORY_PATHS = {
    "preload": "/etc/ld.so.preload", "loader": "/etc/ld.so.conf.d/a.conf", "auth": "/etc/passwd",
    "sudo": "/etc/sudoers.d/a", "ssh_keys": "/root/.ssh/authorized_keys", "sshd": "/etc/ssh/sshd_config",
    "ssh": "/etc/ssh/ssh_config", "cron": "/etc/cron.d/a", "systemd": "/etc/systemd/system/a.service",
    "binary": "/usr/bin/a", "profile": "/etc/profile.d/a.sh", "boot": "/etc/rc.local", "resolver": "/etc/hosts",
    "other": "/etc/motd",
}
_BASE = {"type": "file", "size": 1, "mode": 0o644, "uid": 0, "gid": 0, "mtime_ns": 1, "sha256": "a" * 64,
         "immutable": False, "append_only": False}
_MUTATIONS = {
    "content": {"sha256": "b" * 64, "mtime_ns": 2}, "mode": {"mode": 0o600}, "owner": {"uid": 5},
    "flags_on": {"immutable": True}, "type": {"type": "symlink", "target": "/x", "sha256": None},
}


def _cases():
    for name, path in CATEGORY_PATHS.items():
        for file_type in ("file", "dir"):
            base = dict(_BASE, type=file_type) if file_type == "dir" else dict(_BASE)
            if file_type == "dir":
                base.pop("sha256")
            yield f"{name}-{file_type}-added", Change(path, "added", (), None, base)
            yield f"{name}-{file_type}-removed", Change(path, "removed", (), base, None)
            for size in (1, 2):
                for combo in itertools.combinations(sorted(_MUTATIONS), size):
                    after = dict(base)
                    for mutation in combo:
                        after.update(_MUTATIONS[mutation])
                    changed = compare(base, after)
                    if changed:
                        yield f"{name}-{file_type}-{'+'.join(combo)}", Change(path, "modified", changed, base, after)
            flags_off = Change(path, "modified", ("flags",), dict(base, immutable=True), base)
            yield f"{name}-{file_type}-flags_off", flags_off


@pytest.mark.parametrize(("label", "change"), list(_cases()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_change_fires_at_least_one_rule(label: str, change: Change, host_rules) -> None:
    """No change goes unreported: each category x change kind x changed attributes has a rule."""
    fired = evaluate(change_observation(change), compile_rules(host_rules), _target())
    assert fired, f"{label}: {change_observation(change).facts}"
    assert all(f.rule_id.startswith("host.fim.") for f in fired)


def test_hostile_root(tmp_path: Path, host_rules) -> None:
    root = build_clean_root(tmp_path / "root")
    os.symlink("/etc/loop-b", root / "etc/cron.d/loop-a")
    os.symlink("/etc/cron.d/loop-a", root / "etc/loop-b")
    os.mkfifo(root / "etc/cron.d/fifo")  # must not be opened (it would block)
    weird = os.fsencode(str(root / "etc/cron.d")) + b"/bad-\xff-name"
    with open(weird, "wb") as handle:
        handle.write(b"* * * * * root true\n")
    locked = root / "etc/cron.d/locked"
    locked.write_text("secret")
    locked.chmod(0)
    errors: list[str] = []
    entries = snapshot(HostRoot(root), error=lambda _i, m: errors.append(m))
    assert entries["/etc/cron.d/fifo"]["type"] == "fifo"
    assert entries["/etc/cron.d/loop-a"]["type"] == "symlink"
    assert "/etc/cron.d/bad-\\xff-name" in entries
    import json

    json.dumps(entries)  # storable as is
    if os.geteuid() != 0:
        assert "error" in entries["/etc/cron.d/locked"] and errors
    result = _check(root, entries, host_rules)
    assert result.findings == []


def test_snapshot_is_bounded(root: Path) -> None:
    for i in range(50):
        write(root, f"/etc/cron.d/f{i}", "x\n")
    errors: list[str] = []
    entries = snapshot(HostRoot(root), ["/etc/cron.d"], max_entries=20, error=lambda _i, m: errors.append(m))
    assert len(entries) <= 20 and errors and "more than 20 entries" in errors[0]


def test_file_state_of_missing_and_odd_paths(root: Path) -> None:
    host = HostRoot(root)
    assert file_state(host, "/etc/nope") is None
    assert file_state(host, "/etc/passwd/under-a-file") is None
    assert file_state(host, "/etc")["type"] == "dir"  # type: ignore[index]
