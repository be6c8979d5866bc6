"""File Storage Security vs clamscan on the same local corpus, with equivalent signatures.

The corpus is real files of this machine (`/usr/share/doc` with its many gzip changelogs, Python's
standard library, the ELF programs of /usr/bin) plus planted samples: EICAR, an XMRig-style
config, a TeamTNT-style dropper, a PHP web shell, and a "known-bad" binary identified only by
its hash. Signatures are generated from the same data for both tools: each planted file's SHA-256
and MD5 go into a cloudward IOC file and into clamscan's `.hsb`/`.hdb`; each text plant's
distinctive string goes into clamscan's `.ndb` (cloudward finds those with its own YARA rules).
Both tools open archives. cloudward runs twice: with secrets off (the same job as clamscan) and
with everything on. Results: wall clock, peak memory, throughput, planted files found, other hits.

    .venv/bin/python benchmarks/storage/run.py          (needs clamscan: scripts/setup installs clamav)
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import ROOT, machine, measure, today, write_section

sys.path.insert(0, str(ROOT))
from tests.harness.plants.artifacts import DROPPER, XMRIG_CONFIG

EICAR = b"X5O!P%@AP[4\\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*"
WEBSHELL = b"<?php if (isset($_REQUEST['c'])) { echo shell_exec($_REQUEST['c']); } ?>\n"
SOURCES = [Path("/usr/share/doc"), Path("/usr/lib/python3.11"), Path("/usr/bin")]


def plants() -> dict[str, tuple[bytes, str | None]]:
    """relative path -> (content, body marker for clamscan's .ndb or None for hash-only)."""
    known_bad = b"\x7fELF" + hashlib.sha256(b"cloudward-benchmark-known-bad").digest() * 2000
    return {
        "uploads/eicar.com": (EICAR, "EICAR-STANDARD-ANTIVIRUS-TEST-FILE"),
        "uploads/.cache/config.json": (XMRIG_CONFIG.encode(), '"donate-level"'),
        "uploads/scripts/init.sh": (DROPPER.encode(), None),
        "uploads/site/avatar.php": (WEBSHELL, "shell_exec($_REQUEST["),
        "uploads/bin/kdevtmpfsi": (known_bad, None),
    }


def build(work: Path) -> tuple[Path, int, int]:
    corpus = work / "corpus"
    files, size = 0, 0
    for source in SOURCES:
        target = corpus / source.name
        shutil.copytree(source, target, symlinks=True, ignore=shutil.ignore_patterns("__pycache__"),
                        ignore_dangling_symlinks=True)
    for name, (data, _) in plants().items():
        path = corpus / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for path in corpus.rglob("*"):
        if path.is_file() and not path.is_symlink():
            files += 1
            size += path.stat().st_size
    return corpus, files, size


def signatures(work: Path) -> tuple[Path, list[str]]:
    iocs = ["indicators:"]
    hsb, hdb, ndb = [], [], []
    for name, (data, marker) in plants().items():
        label = "Bench." + Path(name).name.replace(".", "_")
        sha, md5 = hashlib.sha256(data).hexdigest(), hashlib.md5(data, usedforsecurity=False).hexdigest()
        iocs.append(f"  - {{kind: sha256, value: {sha}, source: benchmark, date: '{today()}'}}")
        hsb.append(f"{sha}:{len(data)}:{label}")
        hdb.append(f"{md5}:{len(data)}:{label}.md5")
        if marker:
            ndb.append(f"{label}.body:0:*:{marker.encode().hex()}")
    ioc_file = work / "iocs.yaml"
    ioc_file.write_text("\n".join(iocs) + "\n")
    db = work / "clamdb"
    db.mkdir()
    for suffix, lines in (("hsb", hsb), ("hdb", hdb), ("ndb", ndb)):
        (db / f"bench.{suffix}").write_text("\n".join(lines) + "\n")
    return ioc_file, [str(db / f"bench.{s}") for s in ("hsb", "hdb", "ndb")]


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="cw-storage-bench-") as tmp:
        work = Path(tmp)
        corpus, files, size = build(work)
        ioc_file, sigs = signatures(work)
        planted = set(plants())
        (work / "cloudward.toml").write_text(f'data_dir = "{work / "data"}"\n')
        cloudward = str(ROOT / ".venv" / "bin" / "cloudward")
        rows = []
        cores = str(os.cpu_count() or 1)
        for label, extra in ((f"cloudward (malware only; default: {cores} processes)", ["--no-secrets"]),
                             ("cloudward (malware only, --processes 1)", ["--no-secrets", "--processes", "1"]),
                             (f"cloudward (malware + secrets; {cores} processes)", []),
                             ("cloudward (malware + secrets, --processes 1)", ["--processes", "1"])):
            shutil.rmtree(work / "data", ignore_errors=True)
            out = work / "cw.json"
            run = measure([cloudward, "storage", "scan", str(corpus), "--iocs", str(ioc_file), "--no-store",
                           "-f", "json", "-o", str(out), "--config", str(work / "cloudward.toml"), *extra])
            doc = json.loads(out.read_text())
            keys = {f["location"]["key"] for f in doc["findings"] if f["category"] == "malware"}
            other = {f["location"]["key"] for f in doc["findings"]} - planted
            rows.append((label, run, len(keys & planted), len(other)))
        clam = measure(["clamscan", "--no-summary", "--infected", "--recursive", "--max-filesize=2000M",
                        "--max-scansize=4000M", *(f"--database={s}" for s in sigs), str(corpus)])
        found = set()
        for line in clam.stdout.splitlines():
            if line.endswith(" FOUND"):
                found.add(str(Path(line.split(":", 1)[0]).relative_to(corpus)))
        rows.append(("clamscan", clam, len(found & planted), len(found - planted)))
        version = subprocess.run(["clamscan", "--version"], capture_output=True, text=True).stdout.strip()
        mb = size / 1e6
        lines = [
            f"## File Storage scan vs clamscan ({today()})", "",
            f"Machine: {machine()}. `python benchmarks/storage/run.py`. Versions: cloudward 0.1.0, {version}.", "",
            f"Corpus: {files:,} files, {mb:,.0f} MB: copies of {', '.join(str(s) for s in SOURCES)} (gzip changelogs, "
            "Python sources, ELF programs) plus 5 planted samples (EICAR, an XMRig-style config, a TeamTNT-style "
            "dropper, a PHP web shell, a binary known only by its hash). Signatures from the same data: every "
            "plant's SHA-256/MD5 as a cloudward IOC file and as clamscan `.hsb`/`.hdb`; the text plants' "
            "distinctive strings as clamscan `.ndb` body signatures (cloudward has its YARA rules for them). "
            "No official ClamAV database here (no internet), so clamscan's detections are exactly these.", "",
            "Commands: `cloudward storage scan CORPUS --iocs iocs.yaml --no-store -f json [--no-secrets]`; "
            "`clamscan --no-summary --infected --recursive --max-filesize=2000M --max-scansize=4000M "
            "--database=bench.hsb --database=bench.hdb --database=bench.ndb CORPUS`.", "",
            "| tool | wall clock | throughput | peak memory | planted found | other hits |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for label, run, hits, other in rows:
            lines.append(f"| {label} | {run.seconds:.1f} s | {mb / run.seconds:.1f} MB/s | {run.peak_rss_mib:.0f} MiB "
                         f"| {hits}/{len(planted)} | {other} |")
        ratios = ", ".join(f"{label}: **{clam.seconds / run.seconds:.2f}x**" for label, run, _, _ in rows[:-1])
        lines += ["", f"- clamscan time / cloudward's (above 1: cloudward is faster): {ratios}. clamscan has no "
                  "option to use more than one core; cloudward spreads local files over one worker process per "
                  "CPU by default (yara-x holds Python's interpreter lock, so threads alone do not add cores); "
                  "`--processes 1` is the single-process figure.", "",
                  "Planted found: the file is reported (cloudward: a malware finding on its key; clamscan: FOUND). "
                  "Other hits are files outside the plants: for cloudward with secrets on, mostly candidate "
                  "secrets in the copied documentation and sources (the secret scan's own benchmark discusses "
                  "them); clamscan has no signatures that could hit them. The dropper has no clamscan body "
                  "signature: it is caught by its hash there, and by behaviour (YARA) in cloudward."]
        print("\n".join(lines))
        write_section("storage", "\n".join(lines))


if __name__ == "__main__":
    main()
