"""`cloudward registry scan` against a real distribution registry on loopback: every repository and
tag, one scan per digest, unchanged images not pulled again (their findings still reported, so the
store keeps them open), new images picked up, broken repositories named while the others are
scanned; and a token-auth stand-in for the Bearer flow."""

from __future__ import annotations

import json
import re
import shutil
import threading
import uuid
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from cloudward.cli.app import app
from tests.container.test_sources import _StandIn
from tests.harness.images import Layout, build_steps, push, put
from tests.harness.plants.artifacts import XMRIG_CONFIG
from tests.harness.services import Service, free_port

OS_RELEASE = 'ID=debian\nVERSION_ID="12"\nPRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\n'
SCANNERS = ("--scanners", "secret,malware,config")  # no advisory database needed
MINER = "content.malware.miner"
_ACCESS = re.compile(r'"(GET|HEAD|PUT|POST|PATCH|DELETE) (\S+) HTTP/[\d.]+" (\d+)')


def _image(work: Path, marker: str, miner: bool) -> Layout:
    def step(root: Path) -> None:
        put(root, "/etc/os-release", OS_RELEASE)
        put(root, "/app/run.sh", f"#!/bin/sh\n# {marker}\nexec /app/server\n", 0o755)
        if miner:
            put(root, "/opt/.cache/config.json", XMRIG_CONFIG)
    return build_steps(work, [step], config=["--config.user", "10001"])


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Layout]:
    return {"clean": _image(tmp_path_factory.mktemp("clean"), "clean", False),
            "miner": _image(tmp_path_factory.mktemp("miner"), "miner", True),
            "extra": _image(tmp_path_factory.mktemp("extra"), "extra", True)}


def _config(tmp_path: Path) -> Path:
    config = tmp_path / "cloudward.toml"
    config.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return config


def invoke(registry: str, config: Path, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(app, ["registry", "scan", registry, "--insecure", "-f", "json", *SCANNERS,
                                      "--config", str(config), *args])
    assert result.exit_code == code, (result.output, result.exception)
    return result


def run(registry: str, config: Path, *args: str, code: int = 0) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(invoke(registry, config, "--no-store", *args, code=code).stdout)
    return doc


def statuses(doc: dict[str, Any]) -> dict[str, str]:
    return {f"{i['repository']}:{i['tag']}": i["status"] for i in doc["inventory"]}


def requests(registry: Service, since: int) -> list[tuple[str, str, int]]:
    """(method, path, status) of the registry's access-log lines written after offset `since`."""
    text = registry.log_path.read_text(errors="replace")[since:]
    return [(m, p, int(s)) for m, p, s in _ACCESS.findall(text)]


def log_size(registry: Service) -> int:
    return len(registry.log_path.read_text(errors="replace"))


def test_walk_scan_remember_and_pick_up_new_images(images: dict[str, Layout], registry_server: Service,
                                                   tmp_path: Path) -> None:
    host = f"{registry_server.host}:{registry_server.port}"
    ns = f"rs{uuid.uuid4().hex[:6]}"
    push(images["clean"], host, f"{ns}/web", "1.0")
    push(images["miner"], host, f"{ns}/worker", "1.0")
    push(images["miner"], host, f"{ns}/worker", "latest")  # same digest, second tag
    config = _config(tmp_path)
    only = ["--repository", f"{ns}/*"]

    first = run(host, config, *only)
    assert statuses(first) == {f"{ns}/web:1.0": "scanned", f"{ns}/worker:1.0": "scanned",
                               f"{ns}/worker:latest": "scanned"}
    stats = first["scan"]["stats"]
    assert (stats["repositories"], stats["tags"], stats["digests"], stats["scanned"]) == (2, 3, 2, 2)
    rows = {i["tag"]: i for i in first["inventory"] if i["repository"] == f"{ns}/worker"}
    assert rows["1.0"]["digest"] == rows["latest"]["digest"]
    # one digest, one scan: the miner is reported once, under the tag users know, with the digest kept
    [miner] = [f for f in first["findings"] if f["rule_id"] == MINER]
    assert miner["target"] == {"kind": "image", "name": f"{host}/{ns}/worker:1.0"}
    assert miner["location"]["digest"] == rows["1.0"]["digest"]
    assert miner["evidence"]["tags"] == [f"{ns}/worker:1.0", f"{ns}/worker:latest"]
    state = json.loads((tmp_path / "data" / "registry" / f"{registry_server.host}_{registry_server.port}.json")
                       .read_text())
    remembered = state["images"][rows["1.0"]["digest"]]
    assert remembered["tags"] == [f"{ns}/worker:1.0", f"{ns}/worker:latest"]
    assert remembered["analyzer_version"] and remembered["scanned_at"]

    mark = log_size(registry_server)
    second = invoke(host, config, "--no-store", *only)
    again = json.loads(second.stdout)
    assert set(statuses(again).values()) == {"unchanged"}
    assert again["scan"]["stats"]["scanned"] == 0 and again["scan"]["stats"]["unchanged"] == 2
    # the earlier findings, carried over: same fingerprints, same detection time
    assert sorted((f["fingerprint"], f["detected_at"]) for f in again["findings"]) == \
        sorted((f["fingerprint"], f["detected_at"]) for f in first["findings"])
    assert f"2 unchanged ({len(first['findings'])} findings carried over from earlier scans)" in second.stderr
    seen = requests(registry_server, mark)
    assert ("HEAD", f"/v2/{ns}/worker/manifests/latest", 200) in seen  # every tag was resolved ...
    assert not [r for r in seen if "/blobs/" in r[1]]  # ... and no config or layer blob was pulled
    assert not [r for r in seen if r[0] == "GET" and "/manifests/" in r[1]]  # nor a manifest body

    push(images["extra"], host, f"{ns}/batch", "2.0")
    mark = log_size(registry_server)
    third = run(host, config, *only)
    assert statuses(third) == {f"{ns}/batch:2.0": "scanned", f"{ns}/web:1.0": "unchanged",
                               f"{ns}/worker:1.0": "unchanged", f"{ns}/worker:latest": "unchanged"}
    assert third["scan"]["stats"]["scanned"] == 1 and third["scan"]["stats"]["unchanged"] == 2
    assert {p.split("/blobs/")[0] for _, p, _ in requests(registry_server, mark) if "/blobs/" in p} == \
        {f"/v2/{ns}/batch"}

    mark = log_size(registry_server)
    rescan = run(host, config, *only, "--rescan")
    assert rescan["scan"]["stats"]["scanned"] == 3 and rescan["scan"]["stats"]["unchanged"] == 0
    # a rescan re-judges from the per-image cache: one config blob per image, no layer
    assert len([p for _, p, _ in requests(registry_server, mark) if "/blobs/" in p]) == 3


def test_store_keeps_unchanged_findings_open_and_filters_narrow_the_scope(
        images: dict[str, Layout], registry_server: Service, tmp_path: Path) -> None:
    from cloudward.cli.common import settings
    from cloudward.store import FindingQuery, open_store

    host = f"{registry_server.host}:{registry_server.port}"
    ns = f"rk{uuid.uuid4().hex[:6]}"
    push(images["clean"], host, f"{ns}/web", "1.0")
    push(images["miner"], host, f"{ns}/worker", "1.0")
    config = _config(tmp_path)

    def miner_status() -> str:
        with open_store(settings(config)) as store:
            [found] = store.list_findings(FindingQuery(status="all", rule_id=MINER, target=f"{host}/{ns}/"))
        return found.status

    invoke(host, config, "--repository", f"{ns}/*")
    assert miner_status() == "open"
    invoke(host, config, "--repository", f"{ns}/*")  # nothing changed: reported again, not closed
    assert miner_status() == "open"
    mark = log_size(registry_server)
    named = json.loads(invoke(host, config, "--repository", f"{ns}/web").stdout)  # named: no catalog
    assert statuses(named) == {f"{ns}/web:1.0": "unchanged"}
    assert named["scan"]["targets"] == [f"{host}/{ns}/web"]
    assert not [p for _, p, _ in requests(registry_server, mark) if "_catalog" in p]
    assert miner_status() == "open"  # outside the filtered run's scope
    tagged = json.loads(invoke(host, config, "--repository", f"{ns}/w*", "--tag", "1.*").stdout)
    assert tagged["scan"]["targets"] == [f"{host}/{ns}/web:1.0", f"{host}/{ns}/worker:1.0"]
    assert tagged["scan"]["stats"]["unchanged"] == 2
    push(images["clean"], host, f"{ns}/worker", "1.0")  # rebuilt without the miner
    invoke(host, config, "--repository", f"{ns}/*")
    assert miner_status() == "fixed"


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
    doc = run(host, _config(tmp_path), "--repository", f"{ns}/*")
    assert statuses(doc) == {f"{ns}/good:1": "scanned", f"{ns}/bad:1": "error"}
    [error] = doc["scan"]["errors"]
    assert error["target"] == f"{host}/{ns}/bad:1" and error["stage"] == "manifest"
    assert error["message"].startswith(f"{host}/{ns}/bad:1: manifest 1")
    assert doc["scan"]["status"] == "completed"
    assert any(f["rule_id"] == MINER for f in doc["findings"])


def test_unreachable_registry_exits_3(tmp_path: Path) -> None:
    registry = f"127.0.0.1:{free_port()}"
    result = invoke(registry, _config(tmp_path), "--no-store", code=3)
    [error] = json.loads(result.stdout)["scan"]["errors"]
    assert error["target"] == registry
    assert error["message"].startswith(f"cannot list repositories: {registry}: cannot reach http://{registry}")


def test_registry_argument_must_be_a_host() -> None:
    from cloudward.core.errors import UsageError

    result = CliRunner().invoke(app, ["registry", "scan", "http://127.0.0.1:5000/app", "--no-store"])
    assert isinstance(result.exception, UsageError)


# --------------------------------------------------------------------------- token auth

class _TokenRegistry(_StandIn):
    """The image tests' token-auth stand-in (one repository, `app`), plus the catalog and tag list
    behind the same Bearer challenge. It answers no HEAD (501), so tags are resolved by GET."""

    def do_GET(self) -> None:
        authorized = self.headers.get("Authorization", "") == f"Bearer {self.token}"
        listing = self.path.split("?")[0] in ("/v2/_catalog", "/v2/app/tags/list")
        if not (authorized and listing):
            super().do_GET()
            return
        if self.path.startswith("/v2/_catalog"):
            body: dict[str, Any] = {"repositories": ["app"]}
        else:
            index = json.loads((self.layout / "index.json").read_text())
            body = {"name": "app", "tags": [m["annotations"]["org.opencontainers.image.ref.name"]
                                            for m in index["manifests"]]}
        self._send(200, json.dumps(body).encode(), {"Content-Type": "application/json"})


@pytest.fixture
def token_registry(app_layout: Layout) -> Iterator[str]:
    handler = type("Handler", (_TokenRegistry,), {"layout": app_layout.path, "corrupt": set(), "basic": None,
                                                     "basic_only": False})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_token_auth_registry(token_registry: str, app_layout: Layout, tmp_path: Path) -> None:
    config = _config(tmp_path)
    first = run(token_registry, config)
    assert statuses(first) == {f"app:{app_layout.tag}": "scanned"}
    assert first["findings"]
    assert {f["target"]["name"] for f in first["findings"]} == {f"{token_registry}/app:{app_layout.tag}"}
    assert statuses(run(token_registry, config)) == {f"app:{app_layout.tag}": "unchanged"}
    # a damaged state file only costs a full scan
    state = tmp_path / "data" / "registry" / f"{token_registry.replace(':', '_')}.json"
    state.write_text("{not json")
    assert statuses(run(token_registry, config)) == {f"app:{app_layout.tag}": "scanned"}
    assert json.loads(state.read_text())["version"] == 1
