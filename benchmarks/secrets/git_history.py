"""Secret scan of a large git history, side by side with gitleaks and trufflehog3.

A bare repository is built with `git fast-import` by replaying real files (the same sources as
run.py: the Python stdlib, /usr/include, /usr/share/doc, site-packages; compressed files and files
over 1 MB left out) as a project's history: each commit adds the next real file, every third commit
also edits an earlier file (a block of lines from another real file inserted into it). Into that
history go the ~30 planted fake secrets of run.py, each added in one commit and deleted (the whole
file) some commits later, so none is left at any branch tip:

* a third on `main`;
* a third on `feature/payments`, forked from main, deleted there, then merged into main;
* a third on `wip/cleanup`, forked from main and never merged (the ref still exists).

A planted secret counts as found when the tool reports any finding in its file (each planted file
holds one secret and exists only between its adding and deleting commits). Other findings are
distinct (path, line) pairs outside the planted files. trivy is not run: `trivy fs`/`trivy repo` scan
one checked-out tree, not history, so it cannot see a deleted secret. Results go to docs/BENCHMARKS.md.

    python benchmarks/secrets/git_history.py [--commits 10000] [--peers .venv-peers/bin] [--seed 7]
                                             [--timeout 3600] [--keep] [--no-write]
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import machine, today, write_section
from run import (
    MB,
    Result,
    corpus_sources,
    peer_tools,
    render,
    run_cloudward,
    run_gitleaks,
    run_trufflehog3,
    templates,
    versions_line,
    walk_files,
)

COMPRESSED = (".gz", ".xz", ".bz2", ".zip", ".zst", ".lz", ".7z")
GROUPS = ("main", "merged branch", "unmerged branch")


@dataclass
class Planted:
    kind: str
    path: str
    group: str
    found_by: set[str] = field(default_factory=set)


def real_files(limit: int = MB) -> Iterator[tuple[str, bytes]]:
    """(neutral path, content) of real files, source after source, forever-unique paths."""
    for name, top in corpus_sources():
        for path in walk_files(top):
            if path.suffix in COMPRESSED:
                continue
            try:
                if path.stat().st_size > limit:
                    continue
                data = path.read_bytes()
            except OSError:
                continue
            yield f"src/{name}/{path.relative_to(top)}", data


class Stream:
    """Writes a fast-import stream: one commit per call to `commit`."""

    def __init__(self, sink: BinaryIO) -> None:
        self.sink = sink
        self.mark = 0
        self.clock = 1_700_000_000

    def commit(self, ref: str, message: str, parent: int | None, merge: int | None = None,
               put: list[tuple[str, bytes]] | None = None, delete: list[str] | None = None) -> int:
        self.mark += 1
        self.clock += 600
        who = f"Dev {self.mark % 7} <dev{self.mark % 7}@example.invalid> {self.clock} +0000"
        msg = message.encode()
        parts = [f"commit {ref}\nmark :{self.mark}\nauthor {who}\ncommitter {who}\n".encode(),
                 f"data {len(msg)}\n".encode(), msg, b"\n"]
        if parent is not None:
            parts.append(f"from :{parent}\n".encode())
        if merge is not None:
            parts.append(f"merge :{merge}\n".encode())
        for path, data in put or []:
            parts += [f"M 100644 inline {path}\ndata {len(data)}\n".encode(), data, b"\n"]
        for path in delete or []:
            parts.append(f"D {path}\n".encode())
        parts.append(b"\n")
        self.sink.write(b"".join(parts))
        return self.mark


def edit(data: bytes, donor: bytes, rng: random.Random) -> bytes:
    """Insert a block of up to 40 lines of `donor` at a random line of `data`."""
    lines = data.split(b"\n")
    block = donor.split(b"\n")
    start = rng.randrange(len(block))
    at = rng.randrange(len(lines) + 1)
    return b"\n".join(lines[:at] + block[start:start + rng.randint(3, 40)] + lines[at:])


def build(repo: Path, commits: int, rng: random.Random, scratch: Path) -> list[Planted]:
    """Create the bare repository; returns the planted secrets."""
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(repo)], check=True)
    files = real_files()
    plants = templates(scratch)
    rng.shuffle(plants)
    # Branch layout, in main-commit indices.
    fork_side, merge_side, fork_wip = commits * 3 // 10, commits * 6 // 10, commits * 7 // 10
    side_len, wip_len = min(600, commits // 10), min(300, commits // 20)
    groups: dict[str, list[tuple[str, str, bytes]]] = {g: [] for g in GROUPS}
    for i, (kind, rel, make) in enumerate(plants):
        text, _ = render(rel, make, rng)
        groups[GROUPS[i % 3]].append((kind, f"src/app/{rel}", text.encode()))
    truth = [Planted(kind, path, group) for group, items in groups.items() for kind, path, _ in items]

    def schedule(items: list[tuple[str, str, bytes]], lo: int, hi: int,
                 avoid: tuple[int, ...] = ()) -> dict[int, list[tuple[str, bytes | None]]]:
        """commit index -> [(path, content to add | None to delete)], each deleted 1..499 commits later;
        no lifetime spans an index of `avoid` (a fork or the merge), so no branch inherits a secret."""
        plan: dict[int, list[tuple[str, bytes | None]]] = {}
        for _, path, data in items:
            while True:
                add = rng.randrange(lo, hi - 1)
                gone = rng.randrange(add + 1, min(hi, add + 500))
                if not any(add <= k <= gone for k in avoid):
                    break
            plan.setdefault(add, []).append((path, data))
            plan.setdefault(gone, []).append((path, None))
        return plan

    main_plan = schedule(groups["main"], commits // 20, commits * 19 // 20, (fork_side, merge_side, fork_wip))
    side_plan = schedule(groups["merged branch"], 1, side_len)
    wip_plan = schedule(groups["unmerged branch"], 1, wip_len)

    proc = subprocess.Popen(["git", "-C", str(repo), "fast-import", "--quiet"], stdin=subprocess.PIPE)
    assert proc.stdin is not None
    stream = Stream(proc.stdin)

    def step(ref: str, parent: int | None, index: int, pool: list[tuple[str, bytes]],
             plan: dict[int, list[tuple[str, bytes | None]]], changes: dict[str, bytes] | None = None) -> int:
        put: list[tuple[str, bytes]] = []
        new = next(files, None)
        if new is not None:
            put.append(new)
        if index % 3 == 2 and pool and new is not None:
            k = rng.randrange(len(pool))
            path, data = pool[k]
            pool[k] = (path, edit(data, new[1], rng))
            put.append(pool[k])
        if new is not None:
            pool.append(new)
            del pool[:-300]  # edit recent files only: bounded memory
        delete = []
        for path, data in plan.get(index, []):
            if data is None:
                delete.append(path)
            else:
                put.append((path, data))
        if changes is not None:
            changes.update((path, data) for path, data in put if not path.startswith("src/app/"))
        name = put[0][0].rsplit("/", 1)[-1] if put else "tidy"
        return stream.commit(ref, f"{'update' if index % 3 == 2 else 'add'} {name}", parent, put=put,
                             delete=delete)

    tip: int | None = None
    main_pool: list[tuple[str, bytes]] = []
    side_changes: dict[str, bytes] = {}
    for i in range(commits):
        if i == fork_side:
            side, pool = tip, list(main_pool)
            for j in range(side_len):
                side = step("refs/heads/feature/payments", side, j, pool, side_plan, side_changes)
            side_tip = side
        if i == fork_wip:
            wip, pool = tip, list(main_pool)
            for j in range(wip_len):
                wip = step("refs/heads/wip/cleanup", wip, j, pool, wip_plan)
        if i == merge_side:
            # fast-import takes a merge's tree from its first parent plus the listed changes: list the
            # branch's files (the planted ones were deleted on the branch, so they are not among them).
            tip = stream.commit("refs/heads/main", "Merge branch 'feature/payments'", tip, merge=side_tip,
                                put=sorted(side_changes.items()))
            continue
        tip = step("refs/heads/main", tip, i, main_pool, main_plan)
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit("git fast-import failed")
    return truth


def repo_size(repo: Path) -> tuple[int, int, int]:
    """(commits on all refs, distinct blobs, their total bytes)."""
    count = int(subprocess.run(["git", "-C", str(repo), "rev-list", "--all", "--count"], capture_output=True,
                               text=True, check=True).stdout)
    listing = subprocess.run(["git", "-C", str(repo), "cat-file", "--batch-all-objects",
                              "--batch-check=%(objecttype) %(objectsize)"], capture_output=True, text=True,
                             check=True).stdout
    sizes = [int(size) for kind, size in (line.split() for line in listing.splitlines()) if kind == "blob"]
    return count, len(sizes), sum(sizes)


@dataclass
class Row:
    tool: str
    result: Result
    found: dict[str, int]
    other: int


def score(tool: str, result: Result, truth: list[Planted]) -> Row:
    paths = {p.path for p in truth}
    found = dict.fromkeys(GROUPS, 0)
    for p in truth:
        if any(f == p.path for f, _ in result.hits):
            found[p.group] += 1
            p.found_by.add(tool)
    other = {h for h in result.hits if h[0] not in paths}
    return Row(tool, result, found, len(other))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=10_000, help="commits on main")
    parser.add_argument("--peers", type=Path, default=Path(__file__).resolve().parents[2] / ".venv-peers" / "bin")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--timeout", type=int, default=3600, help="per tool, seconds")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cloudward-git-bench-"))
    repo, out = work / "history.git", work / "out"
    out.mkdir()
    truth = build(repo, args.commits, random.Random(args.seed), work)
    commits, blobs, blob_bytes = repo_size(repo)
    print(f"repo: {commits:,} commits, {blobs:,} blobs, {blob_bytes / MB:.0f} MB; {len(truth)} planted; in {work}",
          file=sys.stderr)

    tools = peer_tools(args.peers)
    rows: list[Row] = []

    def record(row: Row) -> None:
        rows.append(row)
        r = row.result
        print(f"{row.tool}: {r.seconds:.1f} s, {r.peak_mib:.0f} MiB, found {row.found}, {row.other} other, "
              f"read {r.read_bytes / MB:.0f} MB {r.note}", file=sys.stderr)

    record(score("cloudward", run_cloudward(repo, out, git=True, limit=args.timeout), truth))
    if "gitleaks" in tools:
        record(score("gitleaks", run_gitleaks(tools["gitleaks"], repo, out, git=True, limit=args.timeout), truth))
    if "trufflehog3" in tools:
        record(score("trufflehog3", run_trufflehog3(tools["trufflehog3"], repo, out, git=True, depth=commits + 1000,
                                                    limit=args.timeout), truth))

    per_group = {g: sum(1 for p in truth if p.group == g) for g in GROUPS}
    ran = {name: path for name, path in tools.items() if any(r.tool == name for r in rows)}
    cw = rows[0].result
    table = []
    for row in rows:
        r = row.result
        mb_s = blob_bytes / MB / r.seconds if r.seconds else 0.0
        ratio = "" if row.tool == "cloudward" or r.note else f"{r.seconds / cw.seconds:.2f}x"
        cells = " | ".join(f"{row.found[g]}/{per_group[g]}" for g in GROUPS)
        table.append(f"| {row.tool} | {r.seconds:.1f} s | {mb_s:.1f} MB/s | {ratio or '-'} | {r.peak_mib:.0f} MiB | "
                     f"{r.read_bytes / MB:.0f} MB | {cells} | {sum(row.found.values())}/{len(truth)} | "
                     f"{row.other:,} |" + (f" {r.note}" if r.note else ""))
    missed = [f"| {p.kind} | {p.group} | {', '.join(r.tool for r in rows if r.tool not in p.found_by)} |"
              for p in truth if len(p.found_by) < len(rows)]
    lines = [
        f"## Secret scan of a git history vs gitleaks and trufflehog3 ({today()})",
        "",
        f"Machine: {machine()}. `python benchmarks/secrets/git_history.py`. Versions: {versions_line(ran)}.",
        "",
        f"Repository (bare, built with `git fast-import`): {commits:,} commits on 3 refs, {blobs:,} distinct "
        f"blobs, {blob_bytes / MB:.0f} MB of blob content: real files (Python stdlib, /usr/include, "
        "/usr/share/doc, site-packages; no compressed files) replayed one per commit, every third commit also "
        f"editing an earlier file. {len(truth)} planted fake secrets, each added in one commit and its file "
        f"deleted 1 to 500 commits later: {per_group['main']} on `main`, {per_group['merged branch']} on "
        f"`feature/payments` (deleted there, then merged into main), {per_group['unmerged branch']} on "
        "`wip/cleanup` (never merged). No branch tip holds a secret.",
        "",
        "Commands: `cloudward secrets scan --git REPO --format json --no-store --max-size 0`; "
        "`gitleaks git REPO -f json -r out.json --no-banner`; "
        f"`trufflehog3 -z --no-current --depth {commits + 1000} -f json -o out.json REPO` (its default depth is "
        "10,000 commits; `--no-current` because a bare repository has no working tree).",
        "",
        "| tool | wall clock | throughput (blob MB / s) | time / cloudward's | peak memory | bytes read | "
        "found: main | merged branch | unmerged branch | recall | other findings |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *table,
        "",
        "A planted secret is found when the tool reports any finding in its file. Other findings are distinct "
        "(path, line) pairs outside the planted files, candidate false positives in real files (trufflehog3 "
        "reports lines of the patch text, and its count is mostly its entropy rule). Bytes read is `rchar` of "
        "the process tree (includes `git` subprocesses piping objects; see the tree benchmark). trufflehog3 "
        "reads only the active branch of a repository without remotes (here `main`, which includes the merged "
        "branch's commits); a branch never merged is invisible to it. trivy is not in the table: `trivy fs` "
        "and `trivy repo` scan one checked-out tree, not history, so by construction they find none of these.",
    ]
    if missed:
        lines += ["", "| planted, missed | where | missed by |", "|---|---|---|", *missed]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("secrets-git", body)
    if args.keep:
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
