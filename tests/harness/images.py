"""Build real test images offline: umoci for OCI layouts, skopeo to convert and push, tarfile for hostile layers.

Nothing here touches the network except pushes to a loopback registry the caller started.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import shutil
import subprocess
import tarfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

FAKE_SECRET = "AKIAIOSFODNN7EXAMPLE"
OS_RELEASE = 'NAME="Cloudward Test"\nID=cwtest\nVERSION_ID=1.0\n'


def _run(*args: str) -> str:
    proc = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def umoci(*args: str) -> str:
    return _run(shutil.which("umoci") or "/usr/bin/umoci", *args)


def skopeo(*args: str) -> str:
    return _run(shutil.which("skopeo") or "/usr/bin/skopeo", "--insecure-policy", *args)


@dataclass
class Layout:
    """An OCI layout directory and the tag of the test image in it."""

    path: Path
    tag: str

    @property
    def ref(self) -> str:
        return f"oci:{self.path}:{self.tag}"


def build_multilayer(work: Path, tag: str = "app") -> Layout:
    """Three layers: base files; a deletion (whiteout); /app/config holding a fake secret."""
    layout = work / "layout"
    bundle = work / "bundle"
    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:{tag}")
    root = _unpack(layout, tag, bundle)
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text(OS_RELEASE)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    (root / "etc/removeme").write_text("gone in layer 2\n")
    (root / "usr/bin/app").write_bytes(b"#!/bin/sh\necho app\n")
    (root / "usr/bin/app").chmod(0o755)
    umoci("repack", "--image", f"{layout}:{tag}", str(bundle))
    root = _unpack(layout, tag, bundle)
    (root / "etc/removeme").unlink()
    umoci("repack", "--image", f"{layout}:{tag}", str(bundle))
    root = _unpack(layout, tag, bundle)
    (root / "app").mkdir()
    (root / "app/config").write_text(f"aws_access_key_id = {FAKE_SECRET}\n")
    umoci("repack", "--image", f"{layout}:{tag}", str(bundle))
    umoci("config", "--image", f"{layout}:{tag}", "--config.user", "1000", "--config.env", "MODE=test",
          "--config.exposedports", "8080/tcp", "--config.cmd", "/usr/bin/app", "--os", "linux",
          "--architecture", "amd64")
    return Layout(layout, tag)


def _unpack(layout: Path, tag: str, bundle: Path) -> Path:
    """A fresh bundle of the tag's current image, so the next repack adds exactly one layer on top."""
    shutil.rmtree(bundle, ignore_errors=True)
    umoci("unpack", "--image", f"{layout}:{tag}", str(bundle))
    return bundle / "rootfs"


def to_docker_archive(layout: Layout, out: Path, name: str = "cwtest/app") -> Path:
    skopeo("copy", layout.ref, f"docker-archive:{out}:{name}:{layout.tag}")
    return out


def to_oci_archive(layout: Layout, out: Path) -> Path:
    skopeo("copy", layout.ref, f"oci-archive:{out}:{layout.tag}")
    return out


def push(layout: Layout, registry: str, repo: str, tag: str | None = None, *, all_images: bool = False) -> str:
    """Push to a loopback registry; returns the reference."""
    ref = f"{registry}/{repo}:{tag or layout.tag}"
    args = ["copy", "--dest-tls-verify=false"] + (["--all"] if all_images else [])
    skopeo(*args, layout.ref, f"docker://{ref}")
    return ref


# ------------------------------------------------------------------ hand-built layers and archives

Member = tuple[str, str, bytes | str]  # (name, kind: file|dir|symlink|hardlink|fifo, data or linkname)


def make_tar(members: Sequence[Member]) -> bytes:
    """A layer tar with exactly these members, names as given (hostile names included)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, payload in members:
            info = tarfile.TarInfo(name)
            info.mode = 0o755 if kind == "dir" else 0o644
            if kind == "file":
                data = payload if isinstance(payload, bytes) else payload.encode()
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
                continue
            info.type = {"dir": tarfile.DIRTYPE, "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                         "fifo": tarfile.FIFOTYPE, "chr": tarfile.CHRTYPE}[kind]
            if kind in ("symlink", "hardlink"):
                info.linkname = str(payload)
            tar.addfile(info)
    return buf.getvalue()


def gz(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=1, mtime=0)


def write_docker_archive(out: Path, layers: Sequence[bytes], *, diff_ids: Sequence[bytes] | None = None,
                         tag: str = "hostile/test:1") -> Path:
    """A docker-archive written by hand: manifest.json, config JSON, one file per layer blob.

    ``diff_ids`` are the uncompressed tars (defaults to ``layers``), so compressed or broken blobs can be wrapped.
    """
    uncompressed = diff_ids if diff_ids is not None else layers
    config = {"architecture": "amd64", "os": "linux", "config": {"Env": ["PATH=/usr/bin"]},
              "rootfs": {"type": "layers",
                         "diff_ids": ["sha256:" + hashlib.sha256(u).hexdigest() for u in uncompressed]},
              "history": [{"created_by": "hand-built"} for _ in layers]}
    config_bytes = json.dumps(config).encode()
    config_name = hashlib.sha256(config_bytes).hexdigest() + ".json"
    names = [f"{hashlib.sha256(blob).hexdigest()}/layer.tar" for blob in layers]
    manifest = [{"Config": config_name, "RepoTags": [tag], "Layers": names}]
    with tarfile.open(out, "w") as tar:
        for name, data in [("manifest.json", json.dumps(manifest).encode()), (config_name, config_bytes),
                           *zip(names, layers, strict=True)]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


# ------------------------------------------------------------------ images from root-directory steps

def build_steps(work: Path, steps: Sequence[Callable[[Path], None] | tuple[Callable[[Path], None], str]], *,
                tag: str = "app", config: Sequence[str] = ()) -> Layout:
    """One layer per step: each step edits a fresh unpack of the image so far (adding, changing or
    deleting files), then umoci repacks exactly that difference; a step given as (function, text)
    records text as the layer's history `created_by`. `config` are extra `umoci config` arguments
    (e.g. ``--config.user=1000``)."""
    layout = work / "layout"
    bundle = work / "bundle"
    umoci("init", "--layout", str(layout))
    umoci("new", "--image", f"{layout}:{tag}")
    for item in steps:
        step, created_by = item if isinstance(item, tuple) else (item, None)
        root = _unpack(layout, tag, bundle)
        step(root)
        history = ["--history.created_by", created_by] if created_by else []
        umoci("repack", *history, "--image", f"{layout}:{tag}", str(bundle))
    umoci("config", "--image", f"{layout}:{tag}", "--os", "linux", "--architecture", "amd64", *config)
    shutil.rmtree(bundle, ignore_errors=True)
    return Layout(layout, tag)


def put(root: Path, inner: str, data: str | bytes, mode: int = 0o644) -> Path:
    """Write a file inside an unpacked root (parents created)."""
    path = root / inner.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    path.chmod(mode)
    return path
