"""`cloudward host fim baseline|check|keys|list` run as a user would (the installed entry point in a
subprocess), with the findings store in a temporary data dir."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.harness.hostroot import build_clean_root, write

CLI = shutil.which("cloudward", path=str(Path(sys.executable).parent)) or "cloudward"


def run(*args: str, tmp_path: Path, check_code: int | None = 0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CLOUDWARD_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    env.pop("CLOUDWARD_DB_URL", None)
    done = subprocess.run([CLI, *args], capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
    if check_code is not None:
        assert done.returncode == check_code, done.stdout[-2000:] + done.stderr[-2000:]
    return done


def findings_of(done: subprocess.CompletedProcess[str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for finding in json.loads(done.stdout)["findings"]:
        out.setdefault(finding["rule_id"], []).append(finding["location"]["path"])
    return out


def test_check_without_a_baseline_is_a_usage_error(tmp_path: Path) -> None:
    root = build_clean_root(tmp_path / "root")
    done = run("host", "fim", "check", str(root), tmp_path=tmp_path, check_code=2)
    message = " ".join(done.stderr.split())  # the console wraps long lines
    assert "no FIM baseline" in message and f"cloudward host fim baseline {root}" in message
    assert run("host", "fim", "keys", str(root), tmp_path=tmp_path, check_code=2).stdout == ""
    assert run("host", "fim", "check", str(tmp_path / "nope"), tmp_path=tmp_path, check_code=2)


def test_baseline_then_check_then_rebaseline(tmp_path: Path) -> None:
    root = build_clean_root(tmp_path / "root")
    key = tmp_path / "k"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    write(root, "/root/.ssh/authorized_keys", (tmp_path / "k.pub").read_text(), 0o600)
    fingerprint = subprocess.run(["ssh-keygen", "-lf", f"{key}.pub"], capture_output=True, text=True,
                                 check=True).stdout.split()[1]
    admin = subprocess.run(["ssh-keygen", "-lf", str(root / "home/admin/.ssh/authorized_keys")],
                           capture_output=True, text=True, check=True).stdout.split()[1]
    done = run("host", "fim", "baseline", str(root), tmp_path=tmp_path)
    assert f"of {root}:" in done.stdout and "2 authorized SSH keys" in done.stdout  # root's and admin's
    assert run("host", "fim", "keys", str(root), tmp_path=tmp_path).stdout.split() == sorted([fingerprint, admin])
    assert str(root) in run("host", "fim", "list", tmp_path=tmp_path).stdout

    clean = run("host", "fim", "check", str(root), "--format", "json", tmp_path=tmp_path)
    assert json.loads(clean.stdout)["findings"] == [] and "0 changes" in clean.stderr

    write(root, "/etc/ld.so.preload", "/usr/local/lib/.libprocesshider.so\n")
    write(root, "/etc/sudoers.d/90-x", "x ALL=(ALL) NOPASSWD: ALL\n", 0o440)
    changed = run("host", "fim", "check", str(root), "--format", "json", "--fail-on", "critical",
                  tmp_path=tmp_path, check_code=1)
    found = findings_of(changed)
    assert found["host.fim.ld_so_preload_changed"] == ["/etc/ld.so.preload"]
    assert found["host.fim.sudoers_changed"] == ["/etc/sudoers.d/90-x"]
    assert json.loads(changed.stdout)["scan"]["kind"] == "fim"
    stored = run("findings", "list", "--format", "json", tmp_path=tmp_path)
    assert "host.fim.ld_so_preload_changed" in stored.stdout

    # Accepting the change: a new baseline, and the next check finds nothing and closes the findings.
    run("host", "fim", "baseline", str(root), tmp_path=tmp_path)
    again = run("host", "fim", "check", str(root), "--format", "json", tmp_path=tmp_path)
    assert json.loads(again.stdout)["findings"] == []
    still_open = run("findings", "list", "--format", "json", tmp_path=tmp_path)
    assert "host.fim.ld_so_preload_changed" not in still_open.stdout


def test_custom_paths_and_named_baselines(tmp_path: Path) -> None:
    root = build_clean_root(tmp_path / "root")
    write(root, "/opt/app/config.yml", "a: 1\n")
    run("host", "fim", "baseline", str(root), "--path", "/opt/app", "--path", "/etc/passwd", "--name", "app",
        tmp_path=tmp_path)
    write(root, "/opt/app/config.yml", "a: 2\n")
    write(root, "/etc/cron.d/x", "* * * * * root true\n")  # not monitored by this baseline
    run("host", "fim", "check", str(root), tmp_path=tmp_path, check_code=2)  # no "default" baseline
    done = run("host", "fim", "check", str(root), "--name", "app", "--format", "json", "--no-store",
               tmp_path=tmp_path)
    assert findings_of(done) == {"host.fim.file_changed": ["/opt/app/config.yml"]}


def test_config_file_paths(tmp_path: Path) -> None:
    """`[fim] paths` in cloudward.toml replaces the built-in set; `extra_paths` (here from the
    environment, comma-separated) adds to it."""
    root = build_clean_root(tmp_path / "root")
    write(root, "/opt/app/x", "1\n")
    write(root, "/srv/y", "2\n")
    (tmp_path / "cloudward.toml").write_text('[fim]\npaths = ["/opt/app"]\n')
    done = run("host", "fim", "baseline", str(root), tmp_path=tmp_path)
    assert "2 paths" in done.stdout  # /opt/app and /opt/app/x
    os.environ["CLOUDWARD_FIM_EXTRA_PATHS"] = "/srv/y, /srv/missing"
    try:
        done = run("host", "fim", "baseline", str(root), tmp_path=tmp_path)
    finally:
        del os.environ["CLOUDWARD_FIM_EXTRA_PATHS"]
    assert "3 paths" in done.stdout
    (tmp_path / "cloudward.toml").write_text('[fim]\npath = ["/opt/app"]\n')  # a typo is refused
    assert "fim.path" in run("host", "fim", "baseline", str(root), tmp_path=tmp_path, check_code=2).stderr


def test_host_audit_reports_keys_added_since_the_baseline(tmp_path: Path) -> None:
    root = build_clean_root(tmp_path / "root")
    keys = []
    for name in ("old", "new"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(tmp_path / name)],
                       check=True)
        keys.append((tmp_path / f"{name}.pub").read_text())
    write(root, "/root/.ssh/authorized_keys", keys[0], 0o600)
    audit = ("host", "audit", str(root), "--only", "ssh_keys", "--format", "json", "--no-store")
    assert "host.ssh_keys.not_in_baseline" not in findings_of(run(*audit, tmp_path=tmp_path))
    run("host", "fim", "baseline", str(root), tmp_path=tmp_path)
    assert "host.ssh_keys.not_in_baseline" not in findings_of(run(*audit, tmp_path=tmp_path))
    write(root, "/root/.ssh/authorized_keys", keys[0] + keys[1], 0o600)
    assert findings_of(run(*audit, tmp_path=tmp_path))["host.ssh_keys.not_in_baseline"] == [
        "/root/.ssh/authorized_keys"]
