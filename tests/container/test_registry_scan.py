"""`cloudward registry scan` against a real distribution registry on loopback: every repository and
tag, one scan per digest, unchanged images not pulled again (their findings still reported), new
images picked up, broken repositories named while the others are scanned."""

from __future__ import annotations

import json
import shutil
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudward.cli.app import app
from tests.harness.images import Layout, build_steps, push, put
from tests.harness.plants.artifacts import XMRIG_CONFIG
from tests.harness.services import Service, free_port

OS_RELEASE = 'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'


def _image(work: Path, miner: bool) -> Layout:
    def step(root: Path) -> None:
        put(root, "/etc/os-release", OS_RELEASE)
        put(root, "/app/run.sh", "#!/bin/sh\nexec /app/server\n", 0o755)
        if miner:
            put(root, "/opt/.cache/config.json", XMRIG_CONFIG)
    return build_steps(work, [step], config=["--config.user", "10001"])


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Layout]:
    return {"clean": _image(tmp_path_factory.mktemp("clean"), False),
            "miner": _image(tmp_path_factory.mktemp("miner"), True),
            "extra": _image(tmp_path_factory.mktemp("extra"), True)}


def run(registry: str, config: Path, *args: str, code: int = 0) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["registry", "scan", registry, "--insecure", "--no-store", "-f", "json",
                                      "--scanners", "secret,malware,config", "--config", str(config), *args])
    assert result.exit_code == code, result.output
    return json.loads(result.stdout)


def statuses(doc: dict[str, Any]) -> dict[str, str]:
    return {f"{i['repository']}:{','.join(i['tags'])}": i["status"] for i in doc["inventory"]}


def test_walk_scan_remember_and_pick_up_new_images(images: dict[str, Layout], registry_server: Service,
                                                   tmp_path: Path) -> None:
    host = f"{registry_server.host}:{registry_server.port}"
    ns = f"rs{uuid.uuid4().hex[:6]}"
    push(images["clean"], host, f"{ns}/web", "1.0")
    push(images["miner"], host, f"{ns}/worker", "1.0")
    push(images["miner"], host, f"{ns}/worker", "latest")  # same digest, second tag
    config = tmp_path / "cloudward.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    only = ["--repository", f"{ns}/*"]

    first = run(host, config, *only)
    assert statuses(first) == {f"{ns}/web:1.0": "scanned", f"{ns}/worker:1.0,latest": "scanned"}
    assert first["scan"]["stats"]["tags"] == 3 and first["scan"]["stats"]["digests"] == 2
    [miner] = [f for f in first["findings"] if f["rule_id"] == "content.malware.miner"]
    assert miner["target"] == {"kind": "image", "name": f"{host}/{ns}/worker:1.0"}
    assert miner["location"]["digest"].startswith("sha256:")

    log_before = registry_server.log_path.read_text(errors="replace")
    second = run(host, config, *only)
    assert set(statuses(second).values()) == {"unchanged"}
    assert second["scan"]["stats"]["scanned"] == 0
    assert sorted(f["fingerprint"] for f in second["findings"]) == sorted(f["fingerprint"] for f in first["findings"])
    requests = registry_server.log_path.read_text(errors="replace")[len(log_before):]
    assert f"/v2/{ns}/worker/manifests/latest" in requests  # the registry's access log: tags were resolved
    assert "/blobs/" not in requests  # ... and no layer or config blob was pulled for unchanged images

    push(images["extra"], host, f"{ns}/batch", "2.0")
    third = run(host, config, *only)
    assert statuses(third)[f"{ns}/batch:2.0"] == "scanned"
    assert third["scan"]["stats"]["scanned"] == 1 and third["scan"]["stats"]["unchanged"] == 2

    again = run(host, config, *only, "--rescan")
    assert again["scan"]["stats"]["scanned"] == 3


def test_broken_repository_is_named_and_others_are_scanned(images: dict[str, Layout], registry_server: Service,
                                                           tmp_path: Path) -> None:
    host = f"{registry_server.host}:{registry_server.port}"
    ns = f"rb{uuid.uuid4().hex[:6]}"
    push(images["miner"], host, f"{ns}/good", "1")
    push(images["clean"], host, f"{ns}/bad", "1")
    # remove the bad repository's revision links: its tag now points at a manifest the registry cannot serve
    revisions = registry_server.dir / "data" / "docker" / "registry" / "v2" / "repositories" / ns / "bad" / \
        "_manifests" / "revisions"
    shutil.rmtree(revisions)
    config = tmp_path / "cloudward.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    doc = run(host, config, "--repository", f"{ns}/*")
    assert statuses(doc)[f"{ns}/good:1"] == "scanned"
    assert any(e["target"] == f"{host}/{ns}/bad:1" for e in doc["scan"]["errors"])
    assert any(f["rule_id"] == "content.malware.miner" for f in doc["findings"])


def test_unreachable_registry_exits_3(tmp_path: Path) -> None:
    config = tmp_path / "cloudward.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    doc = run(f"127.0.0.1:{free_port()}", config, code=3)
    assert "cannot list repositories" in doc["scan"]["errors"][0]["message"]


def test_registry_argument_must_be_a_host(tmp_path: Path) -> None:
    from cloudward.core.errors import UsageError

    result = CliRunner().invoke(app, ["registry", "scan", "http://127.0.0.1:5000/app", "--no-store"])
    assert isinstance(result.exception, UsageError)
