"""The sshd collector reads the configuration the way sshd does (Include in place, first value
wins, keywords in any case, Match blocks kept apart) and survives hostile files; the SSH rules fire
on the stock Debian root and not on the hardened one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from cloudward.cli.common import load_all_rules
from cloudward.engines.iocs import load_iocs
from cloudward.workload import HostRoot, run_audit
from cloudward.workload.collectors import sshd
from cloudward.workload.observation import HostContext
from tests.harness.hostroot import build_clean_root, build_hardened_root, write

CLOUDWARD = Path(sys.executable).parent / "cloudward"


@cache
def host_rules():
    return load_all_rules().engine("host")


def run(root: Path | HostRoot):
    errors: list[tuple[str, str]] = []
    host = root if isinstance(root, HostRoot) else HostRoot(root)
    ctx = HostContext(root=host, iocs=load_iocs(), error=lambda item, message: errors.append((item, message)))
    observations = list(sshd.collect(ctx))
    return observations, errors


def global_facts(root: Path | HostRoot):
    observations, errors = run(root)
    found = [o for o in observations if o.subject == "sshd"]
    assert len(found) == 1
    return found[0].facts, observations, errors


def fired(root: Path) -> set[str]:
    result = run_audit(HostRoot(root), host_rules(), only=["sshd"], processes=False)
    assert not [e for e in result.errors if e.target.startswith("collector ")]
    return {f.rule_id for f in result.findings}


def test_stock_debian_defaults_are_filled_in(tmp_path):
    facts, _, errors = global_facts(build_clean_root(tmp_path / "r"))
    assert errors == []
    assert facts["password_authentication"] == "yes"
    assert facts["permit_root_login"] == "prohibit-password"
    assert facts["permit_empty_passwords"] == "no"
    assert facts["pubkey_authentication"] == "yes"
    assert facts["max_auth_tries"] == 6
    assert facts["kbd_interactive_authentication"] == "no"
    assert facts["sources"]["password_authentication"] == "default"
    assert facts["sources"]["kbd_interactive_authentication"] == "/etc/ssh/sshd_config:2"
    assert facts["effective_from"] == "parsed"


def test_hardening_dropin_is_read_through_the_include_glob(tmp_path):
    facts, _, errors = global_facts(build_hardened_root(tmp_path / "r"))
    assert errors == []
    assert facts["password_authentication"] == "no"
    assert facts["permit_root_login"] == "no"
    assert facts["max_auth_tries"] == 3
    assert facts["sources"]["password_authentication"] == "/etc/ssh/sshd_config.d/50-hardening.conf:1"
    assert "/etc/ssh/sshd_config.d/50-hardening.conf" in facts["files"]


def test_first_value_wins_across_includes(tmp_path):
    root = build_clean_root(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config", "PasswordAuthentication no\nInclude /etc/ssh/sshd_config.d/*.conf\n"
          "PermitRootLogin no\n")
    write(root, "/etc/ssh/sshd_config.d/10-a.conf", "PasswordAuthentication yes\nPermitRootLogin yes\n")
    facts, _, _ = global_facts(root)
    assert facts["password_authentication"] == "no"  # set before the Include
    assert facts["permit_root_login"] == "yes"  # the drop-in is read before the later line
    assert facts["sources"]["permit_root_login"] == "/etc/ssh/sshd_config.d/10-a.conf:2"


def test_glob_includes_are_read_in_sorted_order(tmp_path):
    root = build_clean_root(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config.d/20-late.conf", "MaxAuthTries 9\n")
    write(root, "/etc/ssh/sshd_config.d/10-early.conf", "MaxAuthTries 2\n")
    write(root, "/etc/ssh/sshd_config.d/05-ignored.txt", "MaxAuthTries 1\n")
    write(root, "/etc/ssh/sshd_config.d/.00-hidden.conf", "MaxAuthTries 1\n")
    facts, _, _ = global_facts(root)
    assert facts["max_auth_tries"] == 2


def test_keywords_are_case_insensitive_and_accept_equals(tmp_path):
    root = build_clean_root(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config", 'passwordauthentication=NO\nPERMITROOTLOGIN   "without-password"\n'
          "maxauthtries = 4\n  # PubkeyAuthentication no\nPubkeyAuthentication yes # trailing comment\n")
    facts, _, _ = global_facts(root)
    assert facts["password_authentication"] == "no"
    assert facts["permit_root_login"] == "prohibit-password"  # the old spelling, normalised
    assert facts["max_auth_tries"] == 4
    assert facts["pubkey_authentication"] == "yes"


def test_relative_include_resolves_under_etc_ssh(tmp_path):
    root = build_clean_root(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config", "Include local.conf\n")
    write(root, "/etc/ssh/local.conf", "PermitEmptyPasswords yes\n")
    facts, _, errors = global_facts(root)
    assert errors == []
    assert facts["permit_empty_passwords"] == "yes"
    assert facts["sources"]["permit_empty_passwords"] == "/etc/ssh/local.conf:1"


def test_include_loop_is_reported_and_not_followed(tmp_path):
    root = build_clean_root(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config", "Include /etc/ssh/a.conf\nPasswordAuthentication no\n")
    write(root, "/etc/ssh/a.conf", "Include /etc/ssh/b.conf\n")
    write(root, "/etc/ssh/b.conf", "Include /etc/ssh/a.conf\nMaxAuthTries 3\n")
    facts, _, errors = global_facts(root)
    assert facts["password_authentication"] == "no" and facts["max_auth_tries"] == 3
    assert any("loop" in message and "/etc/ssh/a.conf" in message for _, message in errors)


def test_include_depth_is_bounded(tmp_path):
    root = build_clean_root(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config", "Include /etc/ssh/deep/0.conf\n")
    for level in range(30):
        write(root, f"/etc/ssh/deep/{level}.conf", f"Include /etc/ssh/deep/{level + 1}.conf\n")
    facts, _, errors = global_facts(root)
    assert facts["include_limit_hit"] is True
    assert len(facts["files"]) <= sshd.MAX_DEPTH + 1
    assert any("nesting" in message for _, message in errors)


def test_match_blocks_do_not_change_the_globals_and_are_reported(tmp_path):
    root = build_hardened_root(tmp_path / "r")
    with (root / "etc/ssh/sshd_config").open("a") as handle:
        handle.write("Match User deploy\n    PasswordAuthentication yes\n    PermitRootLogin yes\n"
                     "Match Address 10.0.0.0/8\n    X11Forwarding no\n")
    facts, observations, _ = global_facts(root)
    assert facts["password_authentication"] == "no"
    assert facts["match_enables_password"] == ["User deploy"]
    blocks = [o for o in observations if o.subject == "sshd_match"]
    assert [b.facts["criteria"] for b in blocks] == ["User deploy", "Address 10.0.0.0/8"]
    deploy = blocks[0]
    assert deploy.facts["password_authentication"] == "yes"
    assert deploy.facts["global"]["password_authentication"] == "no"
    assert deploy.path == "/etc/ssh/sshd_config" and deploy.line == 8
    assert "password_authentication" not in blocks[1].facts
    assert "host.ssh.match_weakens_authentication" in fired(root)


def test_match_in_an_included_file_ends_with_that_file(tmp_path):
    root = build_clean_root(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config.d/10-match.conf", "Match Group sftp\n  PasswordAuthentication yes\n")
    write(root, "/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\nPasswordAuthentication no\n")
    facts, observations, _ = global_facts(root)
    assert facts["password_authentication"] == "no"
    assert [o.facts["criteria"] for o in observations if o.subject == "sshd_match"] == ["Group sftp"]


def test_include_inside_a_match_block_is_conditional(tmp_path):
    root = build_clean_root(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config", "PasswordAuthentication no\nMatch User ops\n  Include ops.conf\n")
    write(root, "/etc/ssh/ops.conf", "PasswordAuthentication yes\n")
    facts, observations, _ = global_facts(root)
    assert facts["password_authentication"] == "no"
    (block,) = [o for o in observations if o.subject == "sshd_match"]
    assert block.facts["password_authentication"] == "yes"
    assert block.facts["sources"]["password_authentication"] == "/etc/ssh/ops.conf:1"


def test_binary_garbage_config_is_an_error_not_a_crash(tmp_path):
    root = build_clean_root(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config", os.urandom(4096) + b"\x00PasswordAuthentication no\n")
    observations, errors = run(root)
    assert observations == []
    assert errors and errors[0][0] == "/etc/ssh/sshd_config" and "binary" in errors[0][1]


def test_undecodable_text_is_still_parsed(tmp_path):
    root = build_clean_root(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config", b"# caf\xe9 \xff\xfe\nPasswordAuthentication no\n")
    facts, _, errors = global_facts(root)
    assert errors == [] and facts["password_authentication"] == "no"


def test_unreadable_includes_are_reported_and_the_rest_is_read(tmp_path):
    root = build_clean_root(tmp_path / "r")
    (root / "etc/ssh/sshd_config.d/20-dir.conf").mkdir()  # a directory where a file is expected
    os.mkfifo(root / "etc/ssh/sshd_config.d/30-fifo.conf")  # would hang a naive reader
    os.symlink("40-loop.conf", root / "etc/ssh/sshd_config.d/40-loop.conf")  # symlink loop
    write(root, "/etc/ssh/sshd_config.d/50-ok.conf", "PasswordAuthentication no\n")
    facts, _, errors = global_facts(root)
    assert facts["password_authentication"] == "no"
    named = {item for item, _ in errors}
    assert {"/etc/ssh/sshd_config.d/20-dir.conf", "/etc/ssh/sshd_config.d/30-fifo.conf",
            "/etc/ssh/sshd_config.d/40-loop.conf"} <= named


def test_missing_config_gives_no_observation_and_no_error(tmp_path):
    root = build_clean_root(tmp_path / "r")
    (root / "etc/ssh/sshd_config").unlink()
    assert run(root) == ([], [])


def test_missing_included_file_is_reported(tmp_path):
    root = build_clean_root(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config", "Include /etc/ssh/gone.conf\n")
    facts, _, errors = global_facts(root)
    assert facts["password_authentication"] == "yes"
    assert errors == [("/etc/ssh/gone.conf", "included sshd configuration file is missing")]


def test_unparsable_max_auth_tries_is_kept_as_text(tmp_path):
    root = build_clean_root(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config", "MaxAuthTries lots\n")
    facts, _, _ = global_facts(root)
    assert facts["max_auth_tries"] == "lots"
    assert "host.ssh.max_auth_tries" not in fired(root)


def test_offline_root_never_runs_its_sshd(tmp_path, monkeypatch):
    root = build_clean_root(tmp_path / "r")  # holds an /usr/sbin/sshd
    assert (root / "usr/sbin/sshd").is_file()

    def forbidden(*args, **kwargs):
        raise AssertionError(f"ran {args!r} for an offline root")

    monkeypatch.setattr(sshd.subprocess, "run", forbidden)
    facts, _, _ = global_facts(root)
    assert facts["effective_from"] == "parsed" and "sshd_t_error" not in facts


def live_view(tmp_path: Path) -> HostRoot:
    """A fixture root that claims to be live, so the sshd -T path runs against a faked binary."""
    host = HostRoot(build_hardened_root(tmp_path / "r"))
    host.live = True
    return host


def test_sshd_t_failure_falls_back_to_parsing(tmp_path, monkeypatch):
    def no_host_keys(argv, **kwargs):
        assert argv == ["/usr/sbin/sshd", "-T"]
        return subprocess.CompletedProcess(argv, 1, b"", b"sshd: no hostkeys available -- exiting.\n")

    monkeypatch.setattr(sshd.subprocess, "run", no_host_keys)
    facts, _, _ = global_facts(live_view(tmp_path))
    assert facts["effective_from"] == "parsed"
    assert "no hostkeys" in facts["sshd_t_error"]
    assert facts["password_authentication"] == "no"


def test_sshd_t_output_is_preferred_and_disagreements_noted(tmp_path, monkeypatch):
    dump = b"port 22\npermitrootlogin without-password\npasswordauthentication yes\nmaxauthtries 6\n"

    def ok(argv, **kwargs):
        return subprocess.CompletedProcess(argv, 0, dump, b"")

    monkeypatch.setattr(sshd.subprocess, "run", ok)
    facts, _, _ = global_facts(live_view(tmp_path))
    assert facts["effective_from"] == "sshd -T"
    assert facts["permit_root_login"] == "prohibit-password"
    assert facts["password_authentication"] == "yes"
    assert set(facts["parsed_differs"]) >= {"password_authentication", "permit_root_login", "max_auth_tries"}


def test_hardened_root_fires_no_ssh_rule_and_clean_root_fires_password_rule(tmp_path):
    hardened = fired(build_hardened_root(tmp_path / "h"))
    assert not {r for r in hardened if r.startswith("host.ssh.")}
    clean = fired(build_clean_root(tmp_path / "c"))
    assert "host.ssh.password_authentication" in clean
    assert "host.ssh.root_login_password" not in clean


def test_keyboard_interactive_with_pam_is_a_password_path(tmp_path):
    root = build_hardened_root(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config.d/50-hardening.conf", "PasswordAuthentication no\n")
    write(root, "/etc/ssh/sshd_config", "Include /etc/ssh/sshd_config.d/*.conf\nUsePAM yes\n")
    rules = fired(root)
    assert "host.ssh.kbd_interactive_password" in rules  # KbdInteractiveAuthentication defaults to yes
    assert "host.ssh.password_authentication" not in rules


def test_live_root_audit_of_sshd_runs_without_error(tmp_path):
    result = run_audit(HostRoot("/"), host_rules(), only=["sshd"], processes=False)
    assert result.errors == []
    assert result.stats["collectors"]["sshd"]["observations"] >= 1


def test_cli_host_audit_only_sshd_on_this_machine(tmp_path):
    env = {"CLOUDWARD_DATA_DIR": str(tmp_path / "data"), "CLOUDWARD_DB_URL": "", "PATH": "/usr/bin:/bin",
           "CLOUDWARD_CONFIG": str(tmp_path / "none.toml"), "COLUMNS": "200"}
    done = subprocess.run([str(CLOUDWARD), "host", "audit", "--only", "sshd", "--no-store", "-f", "json",
                           "-o", str(tmp_path / "r.json")], capture_output=True, text=True, timeout=300, env=env,
                          check=False)
    assert done.returncode == 0, done.stderr
    document = json.loads((tmp_path / "r.json").read_text())
    assert document["scan"]["status"] == "completed"
    assert all(f["rule_id"].startswith("host.ssh.") for f in document["findings"])
    assert not [f for f in document["findings"] if f["severity"] == "critical"]


@pytest.mark.parametrize(("line", "value"), [("PermitRootLogin yes", "yes"), ("permitrootlogin NO", "no"),
                                             ("PermitRootLogin=forced-commands-only", "forced-commands-only")])
def test_permit_root_login_values(tmp_path, line, value):
    root = build_clean_root(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config", line + "\n")
    facts, _, _ = global_facts(root)
    assert facts["permit_root_login"] == value


@pytest.mark.parametrize(("line", "expected"), [
    ("AllowUsers a#b c # trailing", ("AllowUsers", ["a#b", "c"])),
    ('Subsystem sftp "/usr/lib/my sftp"', ("Subsystem", ["sftp", "/usr/lib/my sftp"])),
    ("PermitRootLogin=no", ("PermitRootLogin", ["no"])),
    ("  # PermitRootLogin yes", None),
    ("", None),
])
def test_line_splitting(line, expected):
    assert sshd._split(line) == expected


def test_keyword_without_value_does_not_take_the_first_slot(tmp_path):
    root = build_clean_root(tmp_path / "r")
    write(root, "/etc/ssh/sshd_config", "PasswordAuthentication\nPasswordAuthentication no\n")
    facts, _, _ = global_facts(root)
    assert facts["password_authentication"] == "no"
