"""The accounts collector: passwd/shadow states, sudoers with its includes and aliases, root's
PATH, and SUID/SGID files judged against the package database (and never on its absence)."""

from __future__ import annotations

import os
import shutil
from functools import cache
from pathlib import Path

import pytest

from cloudward.cli.common import load_all_rules
from cloudward.engines.iocs import load_iocs
from cloudward.workload import HostRoot, run_audit
from cloudward.workload.collectors import accounts
from cloudward.workload.observation import HostContext
from tests.harness.hostroot import build_clean_root, write


@cache
def host_rules():
    return load_all_rules().engine("host")


def run(root: Path):
    errors: list[tuple[str, str]] = []
    ctx = HostContext(root=HostRoot(root), iocs=load_iocs(), error=lambda item, message: errors.append((item, message)))
    return list(accounts.collect(ctx)), errors


def by_subject(observations, name: str) -> dict[str, dict]:
    return {o.key: dict(o.facts) for o in observations if o.subject == name}


def findings(root: Path) -> dict[tuple[str, str], str]:
    result = run_audit(HostRoot(root), host_rules(), only=["accounts"], processes=False)
    assert not [e for e in result.errors if e.target.startswith("collector ")]
    return {(f.rule_id, f.key): f.severity.value for f in result.findings}


def rule_ids(root: Path) -> set[str]:
    return {rule for rule, _ in findings(root)}


def append(root: Path, inner: str, text: str) -> None:
    path = root / inner.lstrip("/")
    path.write_text(path.read_text() + text)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build_clean_root(tmp_path / "r")


def test_clean_root_gives_facts_and_no_finding(root):
    observations, errors = run(root)
    assert errors == []
    users = by_subject(observations, "account")
    assert len(users) == 10
    assert users["root"]["password_state"] == "locked" and users["root"]["extra_uid0"] is False
    assert users["admin"]["password_state"] == "hash" and users["admin"]["login_shell"] is True
    assert users["sshd"]["password_state"] == "locked" and users["sshd"]["login_shell"] is False
    assert "$y$" not in repr(users)  # hashes are never copied into facts
    rules = by_subject(observations, "sudo_rule")
    assert {tuple(r["users"]) for r in rules.values()} == {("root",), ("%sudo",)}
    assert not any(r["nopasswd_all"] for r in rules.values())
    suid = by_subject(observations, "suid_file")
    assert set(suid) == {"/usr/bin/sudo", "/usr/bin/passwd", "/usr/bin/su", "/usr/bin/mount"}
    assert {f["owned_by_package"] for f in suid.values()} == {None}  # no dpkg database in this root
    assert rule_ids(root) == set()


def test_extra_uid0_and_duplicate_uids(root):
    append(root, "/etc/passwd", "toor:x:0:0::/root:/bin/bash\nweb2:x:33:33::/var/www:/bin/sh\n")
    users = by_subject(run(root)[0], "account")
    assert users["toor"]["extra_uid0"] is True and users["toor"]["duplicate_uid_with"] == ["root"]
    assert users["web2"]["duplicate_uid_with"] == ["www-data"]
    found = findings(root)
    assert found[("host.accounts.extra_uid0", "account\x1ftoor")] == "high"
    assert ("host.accounts.duplicate_uid", "account\x1fweb2") in found
    assert ("host.accounts.duplicate_uid", "account\x1fwww-data") in found
    assert ("host.accounts.duplicate_uid", "account\x1froot") not in found  # uid 0 is the other rule's


@pytest.mark.parametrize(("passwd_field", "shadow_line", "state"), [
    ("x", "ghost::19700:0:99999:7:::", "empty"),
    ("x", "ghost:!:19700::::::", "locked"),
    ("x", "ghost:*:19700::::::", "locked"),
    ("x", "ghost:!$y$j9T$abc$def:19700::::::", "locked"),
    ("x", "ghost:$6$salt$hash:19700::::::", "hash"),
    ("", None, "empty"),
    ("x", None, "no_shadow_entry"),
    ("$1$salt$hashhashhash", None, "hash_in_passwd"),
])
def test_password_states(root, passwd_field, shadow_line, state):
    append(root, "/etc/passwd", f"ghost:{passwd_field}:1500:1500::/home/ghost:/bin/bash\n")
    if shadow_line:
        append(root, "/etc/shadow", shadow_line + "\n")
    facts = by_subject(run(root)[0], "account")["ghost"]
    assert facts["password_state"] == state
    fired = rule_ids(root)
    assert ("host.accounts.empty_password" in fired) is (state == "empty")
    assert ("host.accounts.password_hash_in_passwd" in fired) is (state == "hash_in_passwd")


def test_malformed_passwd_lines_and_unreadable_shadow(root):
    append(root, "/etc/passwd", "broken-line-without-fields\n+@netgroup::::::\n")
    (root / "etc/shadow").unlink()
    os.mkfifo(root / "etc/shadow")
    observations, errors = run(root)
    assert len(by_subject(observations, "account")) == 10
    assert ("/etc/passwd:11", "malformed passwd line; skipped") in errors
    assert any(item == "/etc/shadow" for item, _ in errors)
    assert by_subject(observations, "account")["admin"]["shadow_read"] is False


def test_sudoers_dropin_nopasswd_all_with_continuation(root):
    write(root, "/etc/sudoers.d/90-svc", "# provisioning\nsvc ALL=(ALL) \\\n    NOPASSWD: ALL\n", 0o440)
    write(root, "/etc/sudoers.d/README.txt", "svc2 ALL=(ALL) NOPASSWD: ALL\n")  # has a '.': sudo skips it
    write(root, "/etc/sudoers.d/91-old~", "svc3 ALL=(ALL) NOPASSWD: ALL\n")  # editor backup: skipped
    rules = list(by_subject(run(root)[0], "sudo_rule").values())
    (svc,) = [r for r in rules if r["users"] == ["svc"]]
    assert svc["nopasswd_all"] is True and svc["runas"] == ["ALL"]
    assert not [r for r in rules if r["users"] in (["svc2"], ["svc3"])]
    found = findings(root)
    ((_, key),) = [k for k in found if k[0] == "host.accounts.sudo_nopasswd_all"]
    assert key.startswith("sudo_rule\x1f/etc/sudoers.d/90-svc|svc|")


def test_sudoers_aliases_tags_and_old_include_syntax(root):
    write(root, "/etc/sudoers", """\
Defaults env_reset
User_Alias OPS = alice, bob : DEVS = carol
Cmnd_Alias EVERYTHING = ALL
Cmnd_Alias RESTART = /usr/bin/systemctl restart app
OPS ALL = (root) NOPASSWD: EVERYTHING
DEVS ALL = (root) NOPASSWD: RESTART, PASSWD: ALL
#1001 ALL = (ALL) ALL # a uid, not a comment
#includedir /etc/sudoers.d
""", 0o440)
    write(root, "/etc/sudoers.d/ops", "dave ALL=(ALL:ALL) NOPASSWD:SETENV: ALL\n")
    rules = {tuple(r["users"]): r for r in by_subject(run(root)[0], "sudo_rule").values()}
    assert rules[("alice", "bob")]["nopasswd_all"] is True
    assert rules[("carol",)]["nopasswd_all"] is False
    assert rules[("carol",)]["nopasswd_commands"] == ["/usr/bin/systemctl restart app"]
    assert rules[("carol",)]["all_commands"] is True
    assert rules[("#1001",)]["commands"] == ["ALL"]
    assert rules[("dave",)]["nopasswd_all"] is True


def test_sudoers_include_loop_relative_include_and_defaults(root):
    write(root, "/etc/sudoers", "@include extra\nroot ALL=(ALL) ALL\n", 0o440)
    write(root, "/etc/extra", "@include /etc/sudoers\nDefaults:ops !authenticate\n")
    observations, errors = run(root)
    assert any("loop" in message for _, message in errors)
    (defaults,) = by_subject(observations, "sudo_defaults").values()
    assert defaults["scope"] == ":ops" and defaults["authenticate_disabled"] is True
    assert "host.accounts.sudo_authentication_disabled" in rule_ids(root)


def test_sudoers_binary_garbage_and_a_directory_in_includedir(root):
    (root / "etc/sudoers.d/subdir").mkdir()
    write(root, "/etc/sudoers.d/garbage", os.urandom(512) + b"\x00")
    observations, errors = run(root)
    assert {item for item, _ in errors} == {"/etc/sudoers.d/subdir", "/etc/sudoers.d/garbage"}
    assert len(by_subject(observations, "sudo_rule")) == 2  # /etc/sudoers itself still read


def test_world_writable_dir_on_root_path(root):
    (root / "opt/tools").mkdir(parents=True)
    (root / "opt/tools").chmod(0o777)
    write(root, "/root/.profile", 'TOOLS="$HOME/bin"\nPATH="/opt/tools:$TOOLS:$PATH:."\nexport PATH\n')
    (root / "root/bin").mkdir()
    os.chown(root / "root/bin", 1000, 1000)
    dirs = by_subject(run(root)[0], "path_dir")
    assert dirs["/opt/tools"]["world_writable"] is True and dirs["/opt/tools"]["sources"] == ["/root/.profile"]
    assert dirs["/root/bin"]["owner_uid"] == 1000
    assert dirs["."]["relative"] is True
    found = findings(root)
    assert found[("host.accounts.path_world_writable", "path_dir\x1f/opt/tools")] == "high"
    assert ("host.accounts.path_writable_by_non_root", "path_dir\x1f/root/bin") in found
    assert ("host.accounts.path_relative", "path_dir\x1f.") in found
    assert ("host.accounts.path_writable_by_non_root", "path_dir\x1f/opt/tools") not in found


def test_path_sources_include_secure_path_and_login_defs(root):
    write(root, "/etc/login.defs", "ENV_SUPATH\tPATH=/usr/local/sbin:/srv/admin\n")
    dirs = by_subject(run(root)[0], "path_dir")
    assert dirs["/usr/local/sbin"]["sources"] == ["/etc/login.defs", "/etc/sudoers (secure_path)"]
    assert dirs["/srv/admin"]["exists"] is False
    assert dirs["/sbin"]["exists"] is False  # the fixture root has no /sbin


@pytest.mark.parametrize(("text", "expected"), [
    ('PATH="/a:/b"', ["/a", "/b"]),
    ("export PATH=/c:$PATH", ["/c"]),
    ('X=/opt/x\nPATH="${X}/bin:${PATH}"', ["/opt/x/bin"]),
    ("PATH=~/bin:$UNKNOWN/bin", ["/root/bin"]),
    ('if [ "$(id -u)" -eq 0 ]; then PATH="/usr/sbin:/usr/bin"; fi', ["/usr/sbin", "/usr/bin"]),
    ("# PATH=/commented", []),
])
def test_path_entries(text, expected):
    assert accounts.path_entries(text) == expected


def _true(root: Path, inner: str, mode: int) -> None:
    target = root / inner.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shutil.which("true") or "/bin/true", target)
    target.chmod(mode)


def test_suid_in_temp_and_home_fires_without_a_package_database(root):
    _true(root, "/tmp/.x/bash", 0o4755)
    _true(root, "/home/admin/.cache/sh", 0o2755)
    _true(root, "/dev/shm/plain", 0o755)
    found = findings(root)
    assert found[("host.accounts.suid_in_temp_or_home", "suid_file\x1f/tmp/.x/bash")] == "high"
    assert ("host.accounts.suid_in_temp_or_home", "suid_file\x1f/home/admin/.cache/sh") in found
    assert not [k for k in found if k[0] == "host.accounts.suid_unpackaged"]  # owned() is None here
    assert not [k for k in found if "/dev/shm/plain" in k[1]]


def test_suid_unowned_with_a_package_database(root):
    for package, files in {"sudo": ["/usr/bin/sudo"], "passwd": ["/usr/bin/passwd"], "login": ["/bin/su"],
                           "mount": ["/usr/bin/mount"]}.items():
        write(root, f"/var/lib/dpkg/info/{package}.list", "/.\n/usr\n" + "\n".join(files) + "\n")
    _true(root, "/usr/local/sbin/helper", 0o4755)
    _true(root, "/opt/vendor/bin/tool", 0o2711)
    suid = by_subject(run(root)[0], "suid_file")
    assert suid["/usr/bin/su"]["owned_by_package"] is True and suid["/usr/bin/su"]["package"] == "login"
    assert suid["/usr/local/sbin/helper"]["owned_by_package"] is False
    assert suid["/opt/vendor/bin/tool"]["setgid"] is True and suid["/opt/vendor/bin/tool"]["setuid"] is False
    found = findings(root)
    unowned = {k[1] for k in found if k[0] == "host.accounts.suid_unpackaged"}
    assert unowned == {"suid_file\x1f/usr/local/sbin/helper", "suid_file\x1f/opt/vendor/bin/tool"}


def test_merged_usr_symlinks_do_not_duplicate_files(root):
    shutil.rmtree(root / "bin")
    os.symlink("usr/bin", root / "bin")
    _true(root, "/usr/bin/newgrp", 0o4755)
    suid = by_subject(run(root)[0], "suid_file")
    assert "/usr/bin/newgrp" in suid and not [p for p in suid if p.startswith("/bin/")]


def test_suid_walk_is_bounded(root, monkeypatch):
    for index in range(50):
        _true(root, f"/tmp/many/{index:02d}", 0o644)
    _true(root, "/tmp/many/zz-suid", 0o4755)
    monkeypatch.setattr(accounts, "SUID_MAX_ENTRIES", 30)
    observations, errors = run(root)
    assert any("stopped after 30" in message for _, message in errors)
    assert len([o for o in observations if o.subject == "suid_file"]) <= 4


def test_unpacked_system_tree_in_tmp_is_grouped_at_low_severity(root):
    build_clean_root(root / "tmp/build/rootfs")  # a debootstrap-like tree with its own sudo, su …
    observations, errors = run(root)
    assert errors == []
    assert not [p for p in by_subject(observations, "suid_file") if p.startswith("/tmp/")]
    (tree,) = by_subject(observations, "suid_unpacked_tree").values()
    assert tree["tree"] == "/tmp/build/rootfs" and tree["suid_count"] == 4
    found = findings(root)
    assert found[("host.accounts.suid_unpacked_tree", "suid_unpacked_tree\x1f/tmp/build/rootfs")] == "low"
    assert not [k for k in found if k[0] == "host.accounts.suid_in_temp_or_home"]


def test_a_lone_suid_beside_a_fake_etc_is_still_a_drop(root):
    write(root, "/tmp/.x/etc/passwd", "root:x:0:0::/root:/bin/sh\n")
    _true(root, "/tmp/.x/usr/bin/bash", 0o4755)  # usr/bin holds one file: not a system tree
    _true(root, "/tmp/.x/lib/bash", 0o4755)
    found = findings(root)
    assert ("host.accounts.suid_in_temp_or_home", "suid_file\x1f/tmp/.x/usr/bin/bash") in found
    assert not [k for k in found if k[0] == "host.accounts.suid_unpacked_tree"]


def test_symlink_loops_and_fifos_in_walked_dirs_are_harmless(root):
    os.symlink("loop", root / "tmp/loop")
    os.mkfifo(root / "tmp/fifo")
    os.chmod(root / "tmp/fifo", 0o4666)
    observations, errors = run(root)
    assert errors == []
    assert "/tmp/fifo" not in by_subject(observations, "suid_file")
