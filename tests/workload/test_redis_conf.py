"""The redis.conf collector: where Redis listens, whether clients must authenticate, which
takeover commands remain; includes followed, ACL files read, hostile files survived; and the rules
that judge it (critical only when nothing at all protects a network-facing instance)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import pytest

from cloudward.cli.common import load_all_rules
from cloudward.engines.iocs import load_iocs
from cloudward.workload import HostRoot, run_audit
from cloudward.workload.collectors import redis_conf
from cloudward.workload.observation import HostContext
from tests.harness.hostroot import build_clean_root, build_hardened_root, write


@cache
def host_rules():
    return load_all_rules().engine("host")


def run(root: Path):
    errors: list[tuple[str, str]] = []
    ctx = HostContext(root=HostRoot(root), iocs=load_iocs(), error=lambda item, message: errors.append((item, message)))
    return list(redis_conf.collect(ctx)), errors


def only(root: Path):
    observations, errors = run(root)
    assert len(observations) == 1, observations
    return observations[0].facts, errors


def fired(root: Path) -> set[str]:
    result = run_audit(HostRoot(root), host_rules(), only=["redis_conf"], processes=False)
    assert not [e for e in result.errors if e.target.startswith("collector ")]
    return {f.rule_id for f in result.findings}


def conf(tmp_path: Path, text: str, path: str = "/etc/redis/redis.conf") -> Path:
    root = build_clean_root(tmp_path / "r")
    write(root, path, text, 0o640)
    return root


def test_debian_default_is_loopback_only(tmp_path):
    facts, errors = only(build_clean_root(tmp_path / "r"))
    assert errors == []
    assert facts["bind"] == ["127.0.0.1", "-::1"]
    assert facts["listens_beyond_loopback"] is False
    assert facts["protected_mode"] == "yes"
    assert facts["authentication_required"] is False
    assert not {r for r in fired(build_clean_root(tmp_path / "c")) if r.startswith("host.redis.")}


def test_hardened_root_has_password_and_renamed_commands(tmp_path):
    root = build_hardened_root(tmp_path / "r")
    facts, _ = only(root)
    assert facts["requirepass_set"] is True and facts["requirepass_length"] == len("fixture-not-a-real-password-0")
    assert "fixture-not-a-real-password-0" not in repr(facts)  # the secret itself is never reported
    assert facts["renamed_commands"]["CONFIG"] == "(disabled)"
    assert "CONFIG" not in facts["dangerous_commands_enabled"]
    assert not {r for r in fired(root) if r.startswith("host.redis.")}


def test_open_to_the_network_is_critical(tmp_path):
    root = conf(tmp_path, "bind 0.0.0.0\nprotected-mode no\n")
    assert "host.redis.unauthenticated_exposed" in fired(root)
    severities = {f.rule_id: f.severity.value for f in
                  run_audit(HostRoot(root), host_rules(), only=["redis_conf"], processes=False).findings}
    assert severities["host.redis.unauthenticated_exposed"] == "critical"


def test_no_bind_line_means_every_interface(tmp_path):
    facts, _ = only(conf(tmp_path, "port 6379\n"))
    assert facts["bind_explicit"] is False and facts["listens_all_interfaces"] is True


def test_protected_mode_alone_is_medium_not_critical(tmp_path):
    rules = fired(conf(tmp_path, "bind 0.0.0.0 ::\nprotected-mode yes\n"))
    assert "host.redis.unauthenticated_protected_mode_only" in rules
    assert "host.redis.unauthenticated_exposed" not in rules


def test_port_zero_disables_tcp(tmp_path):
    facts, _ = only(conf(tmp_path, "bind 0.0.0.0\nprotected-mode no\nport 0\nunixsocket /run/redis/redis.sock\n"))
    assert facts["tcp_enabled"] is False and facts["listens_beyond_loopback"] is False


def test_last_value_wins_and_includes_are_followed(tmp_path):
    root = conf(tmp_path, "include /etc/redis/conf.d/*.conf\nbind 127.0.0.1\nprotected-mode yes\n")
    write(root, "/etc/redis/conf.d/10-net.conf", "bind 0.0.0.0\nprotected-mode no\nrequirepass abc\n")
    facts, errors = only(root)
    assert errors == []
    assert facts["bind"] == ["127.0.0.1"]  # the includer's later line overrides the included one
    assert facts["requirepass_set"] is True  # only set in the include
    assert facts["sources"]["requirepass"] == "/etc/redis/conf.d/10-net.conf:3"


def test_included_fragments_are_not_separate_instances(tmp_path):
    root = conf(tmp_path, "include /etc/redis/common.conf\nport 6380\n")
    write(root, "/etc/redis/common.conf", "bind 0.0.0.0\n")
    write(root, "/etc/redis-6381.conf", "port 6381\nbind 127.0.0.1\n")
    write(root, "/etc/redis/sentinel.conf", "sentinel monitor mymaster 127.0.0.1 6379 2\n")
    observations, _ = run(root)
    assert sorted(o.path for o in observations) == ["/etc/redis-6381.conf", "/etc/redis/redis.conf"]


def test_include_loop_is_reported(tmp_path):
    root = conf(tmp_path, "include /etc/redis/a.conf\n")
    write(root, "/etc/redis/a.conf", "include /etc/redis/redis.conf\nbind 0.0.0.0\n")
    observations, errors = run(root)
    assert any("loop" in message for _, message in errors)
    assert [o.path for o in observations] == ["/etc/redis/redis.conf"]


@pytest.mark.parametrize(("rules", "required"), [
    ("user default on nopass ~* +@all", False),
    ("user default off", True),
    ("user default on >s3cret-s3cret-s3cret ~* +@all", True),
    ("user default on nopass >pw ~* +@all", True),
    ("user default on >pw resetpass nopass ~*", False),
])
def test_acl_user_lines(tmp_path, rules, required):
    facts, _ = only(conf(tmp_path, f"bind 0.0.0.0\n{rules}\n"))
    assert facts["authentication_required"] is required


def test_aclfile_is_read(tmp_path):
    root = conf(tmp_path, "bind 0.0.0.0\nprotected-mode no\naclfile /etc/redis/users.acl\n")
    write(root, "/etc/redis/users.acl", "user default on nopass ~* &* +@all\nuser app on >x ~app:* +@read\n")
    facts, _ = only(root)
    assert facts["aclfile_read"] is True and facts["authentication_required"] is False
    assert facts["users"] == ["app", "default"]
    assert "host.redis.unauthenticated_exposed" in fired(root)


def test_unreadable_aclfile_is_not_called_open(tmp_path):
    root = conf(tmp_path, "bind 0.0.0.0\nprotected-mode no\naclfile /etc/redis/users.acl\n")
    (root / "etc/redis/users.acl").mkdir()
    facts, errors = only(root)
    assert facts["authentication_required"] is True  # unknown is not "open"
    assert errors and errors[0][0] == "/etc/redis/users.acl"


def test_takeover_commands_exposed_with_password(tmp_path):
    text = "bind 10.0.0.5\nrequirepass " + "x" * 32 + "\nrename-command CONFIG \"\"\n"
    facts, _ = only(conf(tmp_path, text))
    assert "CONFIG" not in facts["takeover_commands_enabled"]
    assert "SLAVEOF" in facts["takeover_commands_enabled"]
    assert "host.redis.takeover_commands_exposed" in fired(conf(tmp_path / "2", text))
    acl = "bind 10.0.0.5\nuser default on >" + "x" * 32 + " ~* +@all -@dangerous\n"
    facts, _ = only(conf(tmp_path / "3", acl))
    assert facts["takeover_commands_enabled"] == []


def test_weak_and_example_passwords(tmp_path):
    facts, _ = only(conf(tmp_path, "requirepass foobared\n"))
    assert facts["requirepass_is_example"] is True
    assert "host.redis.weak_password" in fired(conf(tmp_path / "2", "requirepass foobared\n"))
    assert "host.redis.weak_password" not in fired(conf(tmp_path / "3", "requirepass " + "k" * 40 + "\n"))


def test_quoted_values_and_comments(tmp_path):
    text = ('# bind 0.0.0.0\n  # requirepass x\nbind "127.0.0.1"\nprotected-mode "no"\n'
            'requirepass "pa ss#word-1234567"\n')
    facts, _ = only(conf(tmp_path, text))
    assert facts["bind"] == ["127.0.0.1"] and facts["protected_mode"] == "no"
    assert facts["listens_beyond_loopback"] is False
    assert facts["requirepass_length"] == len("pa ss#word-1234567")  # '#' inside a value is not a comment


def test_binary_and_special_files_are_errors(tmp_path):
    root = conf(tmp_path, os.urandom(2048) + b"\x00bind 0.0.0.0\n")
    os.mkfifo(root / "etc/redis/fifo.conf")
    os.symlink("loop.conf", root / "etc/redis/loop.conf")
    observations, errors = run(root)
    assert observations == []
    assert {item for item, _ in errors} == {"/etc/redis/redis.conf", "/etc/redis/fifo.conf", "/etc/redis/loop.conf"}
    assert fired(root) == set()


def test_no_redis_no_observation(tmp_path):
    root = build_clean_root(tmp_path / "r")
    (root / "etc/redis/redis.conf").unlink()
    assert run(root) == ([], [])


@pytest.mark.parametrize(("address", "kind"), [
    ("0.0.0.0", "all"), ("*", "all"), ("-::*", "all"), ("::", "all"),
    ("127.0.0.1", "loopback"), ("-::1", "loopback"), ("localhost", "loopback"),
    ("10.1.2.3", "other"), ("redis.internal", "other"),
])
def test_address_classes(address, kind):
    assert redis_conf._address_class(address) == kind
