"""Every source yields the same image; digests are verified; platform selection; auth flows."""

from __future__ import annotations

import hashlib
import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from cloudward.container import ImageError, open_image
from cloudward.container.image import Image
from cloudward.container.sources import list_repositories, list_tags, open_oci, open_registry
from cloudward.container.squash import squash
from tests.harness.images import FAKE_SECRET, Layout, push, to_docker_archive, to_oci_archive
from tests.harness.services import Service


def _fingerprint(image: Image) -> tuple[str, list[str | None]]:
    return image.config_digest, [layer.diff_id for layer in image.layers]


@pytest.fixture(scope="module")
def pushed(app_layout: Layout, registry_server: Service) -> str:
    return push(app_layout, f"{registry_server.host}:{registry_server.port}", "cw/app")


def test_all_sources_agree(app_layout: Layout, images_dir: Path, pushed: str, podman_api: Service) -> None:
    archive = to_docker_archive(app_layout, images_dir / "agree-docker.tar")
    oci_tar = to_oci_archive(app_layout, images_dir / "agree-oci.tar")
    reference = open_image(app_layout.ref)
    assert reference.source == "oci" and len(reference.layers) == 3
    assert reference.config["config"]["User"] == "1000"
    images = {
        "archive": open_image(str(archive)),
        "docker-archive": open_image(f"docker-archive:{archive}"),
        "oci-archive": open_image(str(oci_tar)),
        "registry": open_image(pushed, insecure=True),
    }
    # podman's compatible API: load the archive, then read it back through the engine source.
    base = f"http://{podman_api.host}:{podman_api.port}"
    with httpx.Client(trust_env=False, timeout=60) as client:
        resp = client.post(f"{base}/images/load", content=archive.read_bytes(),
                           headers={"Content-Type": "application/x-tar"})
        assert resp.status_code == 200, resp.text
    images["engine"] = open_image("docker://docker.io/cwtest/app:app", engine_url=f"tcp://{podman_api.host}:"
                                  f"{podman_api.port}")
    assert images["engine"].source == "engine"
    for name, image in images.items():
        assert _fingerprint(image) == _fingerprint(reference), name
        fs = squash(image, lambda p: p == "/app/config")
        assert fs.errors == [], name
        assert FAKE_SECRET.encode() in (fs.read("/app/config") or b""), name
        assert fs.entry("/etc/removeme") is None, name


def test_not_an_image(tmp_path: Path) -> None:
    bogus = tmp_path / "app.tar"
    import tarfile
    with tarfile.open(bogus, "w"):
        pass
    with pytest.raises(ImageError, match=r"app\.tar: not a docker-archive or OCI archive"):
        open_image(str(bogus))


def test_missing_tag_names_reference(app_layout: Layout, pushed: str) -> None:
    with pytest.raises(ImageError, match="nope"):
        open_image(f"oci:{app_layout.path}:nope")
    missing = pushed.rsplit(":", 1)[0] + ":nope"
    with pytest.raises(ImageError, match=r"cw/app:nope"):
        open_image(missing, insecure=True)


def _add_platform_index(layout: Path, tag: str, index_tag: str) -> str:
    """Write by hand an index with linux/amd64 (the tag's manifest) and linux/arm64 (a config variant)."""
    index = json.loads((layout / "index.json").read_text())
    desc = next(m for m in index["manifests"] if m["annotations"]["org.opencontainers.image.ref.name"] == tag)

    def blob(digest: str) -> bytes:
        return (layout / "blobs/sha256" / digest.split(":")[1]).read_bytes()

    def put(data: bytes) -> str:
        hexd = hashlib.sha256(data).hexdigest()
        (layout / "blobs/sha256" / hexd).write_bytes(data)
        return "sha256:" + hexd

    manifest = json.loads(blob(desc["digest"]))
    config = json.loads(blob(manifest["config"]["digest"]))
    config["architecture"] = "arm64"
    config_bytes = json.dumps(config).encode()
    manifest["config"] = {**manifest["config"], "digest": put(config_bytes), "size": len(config_bytes)}
    arm_bytes = json.dumps(manifest).encode()
    entries = [
        {**{k: desc[k] for k in ("mediaType", "digest", "size")}, "platform": {"os": "linux", "architecture": "amd64"}},
        {"mediaType": desc["mediaType"], "digest": put(arm_bytes), "size": len(arm_bytes),
         "platform": {"os": "linux", "architecture": "arm64"}},
    ]
    idx_bytes = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                            "manifests": entries}).encode()
    index["manifests"].append({"mediaType": "application/vnd.oci.image.index.v1+json", "digest": put(idx_bytes),
                               "size": len(idx_bytes),
                               "annotations": {"org.opencontainers.image.ref.name": index_tag}})
    (layout / "index.json").write_text(json.dumps(index))
    return str(entries[1]["digest"])


def test_platform_selection(app_layout: Layout, tmp_path: Path, registry_server: Service) -> None:
    layout = tmp_path / "multi"
    shutil.copytree(app_layout.path, layout)
    arm_digest = _add_platform_index(layout, app_layout.tag, "multi")
    amd = open_oci(layout, "multi")
    arm = open_oci(layout, "multi", platform="linux/arm64")
    assert amd.platform == "linux/amd64" and arm.platform == "linux/arm64"
    assert arm.manifest_digest == arm_digest
    with pytest.raises(ImageError, match="no manifest for platform linux/s390x"):
        open_oci(layout, "multi", platform="linux/s390x")
    ref = push(Layout(layout, "multi"), f"{registry_server.host}:{registry_server.port}", "cw/multi",
               all_images=True)
    remote = open_registry(ref, insecure=True, platform="linux/arm64")
    assert remote.platform == "linux/arm64" and remote.manifest_digest == arm_digest
    assert open_registry(ref, insecure=True).platform == "linux/amd64"


def test_tampered_layout_blob(app_layout: Layout, tmp_path: Path) -> None:
    layout = tmp_path / "tampered"
    shutil.copytree(app_layout.path, layout)
    image = open_oci(layout, app_layout.tag)
    victim = image.layers[-1]
    blob = layout / "blobs/sha256" / victim.digest.split(":")[1]
    blob.write_bytes(blob.read_bytes() + b"\0")
    with pytest.raises(ImageError, match=victim.digest):
        victim.open_tar()
    fs = squash(image)
    assert any(victim.digest in e for e in fs.errors), fs.errors
    assert fs.entry("/etc/os-release") is not None, (fs.errors, list(fs.paths()))


def test_catalog_and_tags_paginate(app_layout: Layout, registry_server: Service) -> None:
    host = f"{registry_server.host}:{registry_server.port}"
    for repo in ("cw/page-a", "cw/page-b"):
        push(app_layout, host, repo)
    push(app_layout, host, "cw/page-a", "second")
    repos = list_repositories(host, insecure=True, page_size=1)
    assert {"cw/page-a", "cw/page-b"} <= set(repos)
    assert sorted(list_tags(host, "cw/page-a", insecure=True, page_size=1)) == ["app", "second"]


# --------------------------------------------------------------------------- token-auth stand-in

class _StandIn(BaseHTTPRequestHandler):
    """A stand-in for a token-auth registry: distribution's token auth needs an external auth server,
    which is not available offline, so this serves an OCI layout and demands a Bearer token from /token."""

    layout: Path
    token = "stand-in-token"
    corrupt: set[str] = set()
    basic: str | None = None
    basic_only = False

    def log_message(self, format: str, *args: object) -> None:
        return

    def _send(self, code: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        addr = self.server.server_address
        host = f"http://127.0.0.1:{addr[1]}" if isinstance(addr, tuple) else ""
        auth = self.headers.get("Authorization", "")
        if self.path.startswith("/token"):
            ok = self.basic is None or auth == self.basic
            self._send(200 if ok else 401, json.dumps({"token": self.token}).encode())
            return
        if self.basic_only and auth != self.basic:
            self._send(401, b"{}", {"WWW-Authenticate": 'Basic realm="stand-in"'})
            return
        if not self.basic_only and auth != f"Bearer {self.token}":
            challenge = f'Bearer realm="{host}/token",service="stand-in",scope="repository:app:pull"'
            self._send(401, b"{}", {"WWW-Authenticate": challenge})
            return
        parts = self.path.split("/")  # /v2/app/manifests/<ref> or /v2/app/blobs/<digest>
        if len(parts) != 5 or parts[2] != "app":
            self._send(404)
            return
        kind, ref = parts[3], parts[4]
        blobs = self.layout / "blobs/sha256"
        if kind == "manifests" and not ref.startswith("sha256:"):
            index = json.loads((self.layout / "index.json").read_text())
            found = [m for m in index["manifests"]
                     if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == ref]
            if not found:
                self._send(404)
                return
            ref = found[0]["digest"]
        path = blobs / ref.split(":")[-1]
        if not path.is_file():
            self._send(404)
            return
        data = path.read_bytes()
        if ref in self.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 1])
        ctype = json.loads(data).get("mediaType", "") if kind == "manifests" else "application/octet-stream"
        self._send(200, data, {"Content-Type": ctype, "Docker-Content-Digest": ref})


@pytest.fixture
def stand_in(app_layout: Layout) -> Iterator[tuple[str, type[_StandIn]]]:
    handler = type("Handler", (_StandIn,), {"layout": app_layout.path, "corrupt": set(), "basic": None,
                                                 "basic_only": False})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", handler
    finally:
        server.shutdown()
        server.server_close()


def test_bearer_token_flow(stand_in: tuple[str, type[_StandIn]], app_layout: Layout) -> None:
    host, _ = stand_in
    image = open_image(f"{host}/app:{app_layout.tag}", insecure=True)
    assert _fingerprint(image) == _fingerprint(open_image(app_layout.ref))
    assert squash(image, lambda p: True).read("/etc/os-release")


def test_token_endpoint_with_basic_credentials(stand_in: tuple[str, type[_StandIn]], app_layout: Layout) -> None:
    import base64
    host, handler = stand_in
    handler.basic = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    with pytest.raises(ImageError, match="token endpoint answered 401"):
        open_image(f"{host}/app:{app_layout.tag}", insecure=True)
    image = open_image(f"{host}/app:{app_layout.tag}", insecure=True, username="alice", password="s3cret")
    assert len(image.layers) == 3


def test_corrupted_registry_blob(stand_in: tuple[str, type[_StandIn]], app_layout: Layout) -> None:
    host, handler = stand_in
    image = open_image(f"{host}/app:{app_layout.tag}", insecure=True)
    victim = image.layers[1].digest
    handler.corrupt.add(victim)
    with pytest.raises(ImageError, match=f"blob {victim} does not match its digest"):
        image.layers[1].open_tar()
    handler.corrupt.add(image.config_digest)
    with pytest.raises(ImageError, match=image.config_digest):
        open_image(f"{host}/app:{app_layout.tag}", insecure=True)


def test_basic_auth_challenge(stand_in: tuple[str, type[_StandIn]], app_layout: Layout) -> None:
    import base64
    host, handler = stand_in
    handler.basic_only = True
    handler.basic = "Basic " + base64.b64encode(b"bob:pw").decode()
    with pytest.raises(ImageError, match="wants a username and password"):
        open_image(f"{host}/app:{app_layout.tag}", insecure=True)
    image = open_image(f"{host}/app:{app_layout.tag}", insecure=True, username="bob", password="pw")
    assert squash(image, lambda p: True).read("/app/config")


def test_dispatch_errors(app_layout: Layout, pushed: str, podman_api: Service, tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="cannot reach"):
        open_image(pushed)  # https by default; the loopback registry speaks plain http
    with pytest.raises(ImageError, match="no such image"):
        open_image("docker://docker.io/cw/absent:1", engine_url=f"tcp://{podman_api.host}:{podman_api.port}")
    assert open_image(str(app_layout.path)).config_digest == open_image(app_layout.ref).config_digest
    with pytest.raises(ImageError, match="not an OCI layout"):
        open_image(str(tmp_path))
    with pytest.raises(ImageError, match="no such OCI layout"):
        open_image(f"oci:{tmp_path}/missing:tag")
