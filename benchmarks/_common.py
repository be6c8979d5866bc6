"""Shared plumbing for the side-by-side benchmarks: run a command with its own wall clock and peak
memory, describe the machine, and rewrite one section of docs/BENCHMARKS.md."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "BENCHMARKS.md"
sys.path.insert(0, str(ROOT))  # for tests.harness


@dataclass
class Measured:
    argv: list[str]
    seconds: float
    peak_rss_mib: float
    returncode: int
    stdout: str
    stderr: str
    read_bytes: int = 0  # bytes the command (and its children) read through read(2): Linux's rchar


def measure(argv: list[str], env: dict[str, str] | None = None, timeout: float = 3600) -> Measured:
    """Run `argv` in a wrapper interpreter whose RUSAGE_CHILDREN belongs to this command alone, so
    the peak RSS reported is the command's (and its children's), not the benchmark's. Reaped children's
    I/O counters add up into their parent's /proc/PID/io, so the rchar delta around the run is what the
    command and all its descendants read (files, pipes, its own libraries; not mmap)."""
    wrapper = (
        "import json,os,resource,subprocess,sys,time;"
        "io=lambda:int(next(l for l in open('/proc/self/io') if l.startswith('rchar')).split()[1]);"
        "b=io();t=time.perf_counter();p=subprocess.run(sys.argv[1:],capture_output=True,text=True);"
        "e=time.perf_counter()-t;r=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss;b=io()-b;"
        "sys.stderr.write(p.stderr);sys.stdout.write(p.stdout);"
        "open(os.environ['MEASURE_OUT'],'w').write(json.dumps([e,r,p.returncode,b]))"
    )
    with tempfile.NamedTemporaryFile(suffix=".json") as handle:
        done = subprocess.run([sys.executable, "-c", wrapper, *argv], capture_output=True, text=True,
                              env={**os.environ, **(env or {}), "MEASURE_OUT": handle.name}, timeout=timeout)
        seconds, rss_kib, code, read = json.loads(Path(handle.name).read_text())
    return Measured(argv, seconds, rss_kib / 1024, code, done.stdout, done.stderr, read)


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{os.cpu_count()} cores ({cpu}), {mem_gib:.0f} GiB RAM, {platform.system()} "
            f"{platform.release()}, Python {platform.python_version()}")


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def write_section(name: str, body: str) -> None:
    """Replace the text between `<!-- NAME:begin -->` and `<!-- NAME:end -->` (append if absent)."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    block = f"{begin}\n{body.rstrip()}\n{end}"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
