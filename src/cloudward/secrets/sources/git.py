"""Every blob in a git history, each read once.

A secret committed and deleted a minute later is still in every clone, so the history — all
branches and refs, not just HEAD — is what gets scanned. Three long-lived `git` processes do all
the work (no process per commit or per blob):

1. `git log --date-order --reverse` lists the commits, oldest first, with author, date and the ref
   each was reached from.
2. `git diff-tree --stdin` lists, per commit, the blobs it added or modified. A merge is diffed
   against its FIRST parent only: blobs brought in from the other side were already listed with the
   commits that introduced them on their branch, while a blob created by the merge resolution itself
   differs from the first parent and is therefore listed with the merge.
3. `git cat-file --batch` streams the contents of each distinct blob exactly once. The first
   (oldest) commit that carried the blob is its location; later commits/paths carrying the same
   blob are counted in `location["occurrences"]` and named in `other_paths`, not rescanned.

Corruption is local: a corrupt tree stops `diff-tree` at one commit, which is reported and the
process restarted after it; a corrupt blob is reported by object id and the stream goes on.

The planning phase keeps one small record per distinct blob in memory (roughly 150 bytes), which
is what lets the contents be streamed in one pass in first-seen order.
"""

from __future__ import annotations

import io
import os
import subprocess
import tempfile
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any, cast

from cloudward.engines.archives import ArchiveLimits, triage
from cloudward.engines.blobs import (
    CHUNK,
    DEFAULT_MAX_SIZE,
    INLINE_MAX,
    SNIFF_SIZE,
    Blob,
    ErrorCode,
    PrefixedReader,
    SourceError,
    SourceItem,
    SourceStats,
    buffered,
    display,
    too_large,
)

__all__ = ["GitOptions", "HistoryPlan", "history", "plan_history"]

_FILE_MODES = frozenset({b"100644", b"100755", b"100664"})  # regular files (not links, submodules)
_MAX_RESTARTS = 1000


@dataclass(frozen=True, slots=True)
class GitOptions:
    """What history to read. `refs=()` means every ref (`--all`); `since` is any date git accepts."""

    since: str | None = None
    refs: tuple[str, ...] = ()
    max_size: int | None = DEFAULT_MAX_SIZE
    skip_binary: bool = True
    archives: ArchiveLimits | None = field(default_factory=ArchiveLimits)
    git: str = "git"
    max_other_paths: int = 5


@dataclass(frozen=True, slots=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    author: str
    email: str
    date: str
    ref: str


class BlobRecord:
    """Where a blob was first seen, and how often it recurs."""

    __slots__ = ("commit", "count", "other_paths", "path")

    def __init__(self, commit: int, path: str) -> None:
        self.commit = commit
        self.path = path
        self.count = 1
        self.other_paths: list[str] | None = None


@dataclass(slots=True)
class HistoryPlan:
    """The enumeration result: commits oldest first, distinct blobs in first-seen order."""

    repo: str
    shown: str
    commits: list[Commit] = field(default_factory=list)
    blobs: dict[str, BlobRecord] = field(default_factory=dict)
    errors: list[SourceError] = field(default_factory=list)
    occurrences: int = 0


def history(
    repo: str | os.PathLike[str],
    options: GitOptions | None = None,
    stats: SourceStats | None = None,
) -> Iterator[SourceItem]:
    """Blobs of every commit reachable from the selected refs, deduplicated by blob id."""
    options = options or GitOptions()
    stats = stats if stats is not None else SourceStats()
    plan = plan_history(repo, options, stats)
    for error in plan.errors:
        yield stats.note(error)
    if plan.blobs:
        yield from _stream_blobs(plan, options, stats)


def plan_history(
    repo: str | os.PathLike[str], options: GitOptions | None = None, stats: SourceStats | None = None
) -> HistoryPlan:
    """Enumerate commits and distinct blobs without reading any content (cheap, exposed for timing)."""
    options = options or GitOptions()
    stats = stats if stats is not None else SourceStats()
    path = os.fspath(repo)
    shown = display(os.path.basename(os.path.realpath(path)) if path in ("", ".", "./") else path)
    plan = HistoryPlan(repo=path, shown=shown)
    problem = _check_repo(path, options)
    if problem is not None:
        plan.errors.append(SourceError(shown, problem, ErrorCode.GIT, {"repository": shown}))
        return plan
    _list_commits(plan, options)
    if plan.commits:
        _list_blobs(plan, options)
    stats.counters["commits"] += len(plan.commits)
    stats.counters["blob_occurrences"] += plan.occurrences
    stats.counters["unique_blobs"] += len(plan.blobs)
    return plan


# ---------------------------------------------------------------------------------------------
# Running git.


def _command(options: GitOptions, repo: str, *args: str) -> list[str]:
    return [
        options.git,
        "-C",
        repo,
        "-c",
        "log.showSignature=false",
        "-c",
        "log.showRoot=true",
        "-c",
        "core.quotePath=false",
        *args,
    ]


# Variables that would make git read a different repository (or object store) than the one named:
# a scan started from inside a git hook inherits GIT_DIR, for instance.
_REPOSITORY_VARIABLES = frozenset(
    {
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_COMMON_DIR",
        "GIT_INDEX_FILE",
        "GIT_OBJECT_DIRECTORY",
        "GIT_ALTERNATE_OBJECT_DIRECTORIES",
        "GIT_NAMESPACE",
        "GIT_GRAFT_FILE",
        "GIT_SHALLOW_FILE",
        "GIT_REPLACE_REF_BASE",
        "GIT_PREFIX",
        "GIT_CEILING_DIRECTORIES",
        "GIT_DISCOVERY_ACROSS_FILESYSTEM",
    }
)


def _env() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in _REPOSITORY_VARIABLES}
    env.update(
        {
            "LC_ALL": "C",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_OPTIONAL_LOCKS": "0",
            # Scan the objects that are really stored, not what `git replace` substitutes for them.
            "GIT_NO_REPLACE_OBJECTS": "1",
        }
    )
    return env


def _check_repo(repo: str, options: GitOptions) -> str | None:
    try:
        done = subprocess.run(
            _command(options, repo, "rev-parse", "--git-dir"),
            capture_output=True,
            env=_env(),
            check=False,
            timeout=60,
        )
    except FileNotFoundError:
        return f"git executable not found ({options.git})"
    except (OSError, subprocess.SubprocessError) as exc:
        return f"cannot run git: {exc}"
    if done.returncode != 0:
        return f"not a readable git repository: {_tail(done.stderr)}"
    return None


def _tail(stderr: bytes) -> str:
    text = stderr.decode("utf-8", "replace").strip()
    lines = [line for line in text.splitlines() if line.strip()]
    return display(" / ".join(lines[-3:])[-500:]) if lines else "git failed"


class _Process:
    """A git process fed by a writer thread (so neither side can deadlock on a full pipe)."""

    def __init__(self, argv: list[str], lines: Iterable[bytes]) -> None:
        self.stderr = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            env=_env(),
            bufsize=CHUNK,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdout = cast(io.BufferedReader, self.proc.stdout)
        self._writer = threading.Thread(target=_feed, args=(self.proc.stdin, lines), daemon=True)
        self._writer.start()

    def error(self) -> str:
        """Why the process failed (stops it first: it may be blocked writing to a full pipe)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.seek(0)
        return _tail(self.stderr.read()[-4096:])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self._writer.join(timeout=10)
        self.stdout.close()
        self.stderr.close()


def _feed(stream: IO[bytes], lines: Iterable[bytes]) -> None:
    batch: list[bytes] = []
    try:
        for line in lines:
            batch.append(line)
            if len(batch) >= 4096:
                stream.write(b"".join(batch))
                batch.clear()
        stream.write(b"".join(batch))
        stream.close()
    except (OSError, ValueError):  # the process died or was killed: the reader reports it
        pass


def _split_nul(stream: io.BufferedReader) -> Iterator[bytes]:
    """NUL-separated tokens of a stream, read in large chunks."""
    rest = b""
    while chunk := stream.read1(CHUNK):
        parts = (rest + chunk).split(b"\0")
        rest = parts.pop()
        yield from parts
    if rest:
        yield rest


# ---------------------------------------------------------------------------------------------
# Phase 1: commits.


def _list_commits(plan: HistoryPlan, options: GitOptions) -> None:
    args = [
        "log",
        "--date-order",
        "--reverse",
        "--no-color",
        "--format=%H%x00%P%x00%an%x00%ae%x00%aI%x00%S%x00",
    ]
    if options.since:
        args.append(f"--since={options.since}")
    if options.refs:
        args += ["--end-of-options", *options.refs, "--"]
    else:
        args += ["--all", "--"]
    process = _Process(_command(options, plan.repo, *args), ())
    try:
        fields: list[bytes] = []
        for token in _split_nul(process.stdout):
            fields.append(token.lstrip(b"\n") if not fields else token)
            if len(fields) == 6:
                sha, parents, author, email, date, ref = (f.decode("utf-8", "replace") for f in fields)
                plan.commits.append(
                    Commit(sha, tuple(parents.split()), display(author), display(email), date, display(ref))
                )
                fields = []
        if process.proc.wait() != 0:
            plan.errors.append(
                SourceError(
                    plan.shown,
                    f"git log failed, history only partly listed: {process.error()}",
                    ErrorCode.GIT,
                    {"repository": plan.shown},
                )
            )
    finally:
        process.close()


# ---------------------------------------------------------------------------------------------
# Phase 2: blobs per commit.


def _list_blobs(plan: HistoryPlan, options: GitOptions) -> None:
    commits = plan.commits
    argv = _command(
        options,
        plan.repo,
        "diff-tree",
        "--stdin",
        "-z",
        "-r",
        "--root",
        "--always",
        "--raw",
        "--no-renames",
        "--no-abbrev",
    )
    start = 0
    restarts = 0
    while start < len(commits):
        # One line per commit: itself and its first parent (root commits: itself, diffed vs empty).
        lines = (f"{c.sha} {c.parents[0]}\n".encode() if c.parents else f"{c.sha}\n".encode() for c in commits[start:])
        process = _Process(argv, lines)
        done = start - 1  # index of the last commit whose header arrived
        try:
            tokens = _split_nul(process.stdout)
            for token in tokens:
                if token.startswith(b":"):
                    path = next(tokens, None)
                    if path is not None and done >= start:
                        _add_entry(plan, options, done, token, path)
                else:
                    done += 1
                    if done >= len(commits) or token.decode("ascii", "replace") != commits[done].sha:
                        raise RuntimeError(f"unexpected diff-tree output near commit {done}")
            ok = process.proc.wait() == 0 and done == len(commits) - 1
            message = "" if ok else process.error()
        except RuntimeError as exc:
            ok, message = False, str(exc)
        finally:
            process.close()
        if ok:
            return
        failed = done + 1
        if failed < len(commits):
            commit = commits[failed]
            plan.errors.append(
                SourceError(
                    f"{plan.shown}@{commit.sha}",
                    f"cannot list the files of commit {commit.sha} (corrupt object?): {message}",
                    ErrorCode.CORRUPT,
                    {"repository": plan.shown, "commit": commit.sha},
                )
            )
        restarts += 1
        if restarts > _MAX_RESTARTS:
            plan.errors.append(SourceError(plan.shown, "too many corrupt commits; history scan stopped", ErrorCode.GIT))
            return
        start = failed + 1


def _add_entry(plan: HistoryPlan, options: GitOptions, commit: int, entry: bytes, raw_path: bytes) -> None:
    parts = entry.split(b" ")
    if len(parts) < 5 or parts[1] not in _FILE_MODES or parts[4].startswith(b"D"):
        return
    sha = parts[3].decode("ascii")
    path = display(raw_path.decode("utf-8", "surrogateescape"))
    plan.occurrences += 1
    record = plan.blobs.get(sha)
    if record is None:
        plan.blobs[sha] = BlobRecord(commit, path)
        return
    record.count += 1
    if path != record.path:
        if record.other_paths is None:
            record.other_paths = []
        if len(record.other_paths) < options.max_other_paths and path not in record.other_paths:
            record.other_paths.append(path)


# ---------------------------------------------------------------------------------------------
# Phase 3: contents.


class _Desync(Exception):
    """The cat-file stream is not where it should be (process died, object shorter than announced)."""


class _PipeSlice(io.RawIOBase):
    """Exactly `size` bytes of blob content from the cat-file pipe, readable once.

    Closing it (the consumer is done) leaves the pipe open; `drain()` then skips what the consumer
    did not read and checks the record terminator, so the next header is read in sync.
    """

    def __init__(self, stdout: io.BufferedReader, size: int, stats: SourceStats) -> None:
        super().__init__()
        self._stdout = stdout
        self.left = size
        self._stats = stats

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        data = self.take(len(view))
        view[: len(data)] = data
        return len(data)

    def take(self, n: int) -> bytes:
        if self.left <= 0:
            return b""
        want = min(n, self.left)
        data = self._stdout.read(want)
        self.left -= len(data)
        self._stats.bytes_read += len(data)
        if len(data) < want:
            self.left = -1  # short read: the process died
        return data

    def drain(self) -> None:
        while self.left > 0:
            if not self.take(CHUNK):
                break
        if self.left < 0 or self._stdout.read(1) != b"\n":
            raise _Desync


def _stream_blobs(plan: HistoryPlan, options: GitOptions, stats: SourceStats) -> Iterator[SourceItem]:
    order = list(plan.blobs)
    argv = _command(options, plan.repo, "cat-file", "--batch", "--buffer")
    start = 0
    restarts = 0
    while start < len(order):
        process = _Process(argv, (f"{sha}\n".encode() for sha in order[start:]))
        index = start
        message = ""
        try:
            while index < len(order):
                try:
                    yield from _one_blob(plan, options, stats, process.stdout, order[index])
                except _Desync:
                    message = process.error()
                    break
                index += 1
        finally:
            process.close()
        if index >= len(order):
            return
        # The process stopped, or the stream desynchronised, while reading order[index].
        record = plan.blobs[order[index]]
        yield stats.note(
            SourceError(
                _origin(plan, record),
                f"cannot read blob {order[index]} (corrupt object?): {message}",
                ErrorCode.CORRUPT,
                _location(plan, record, order[index]),
            )
        )
        restarts += 1
        if restarts > _MAX_RESTARTS:
            yield stats.note(SourceError(plan.shown, "too many corrupt objects; history scan stopped", ErrorCode.GIT))
            return
        start = index + 1


def _origin(plan: HistoryPlan, record: BlobRecord) -> str:
    return f"{plan.shown}@{plan.commits[record.commit].sha}:{record.path}"


def _location(plan: HistoryPlan, record: BlobRecord, sha: str) -> dict[str, Any]:
    commit = plan.commits[record.commit]
    location: dict[str, Any] = {
        "repository": plan.shown,
        "commit": commit.sha,
        "path": record.path,
        "author": commit.author,
        "email": commit.email,
        "date": commit.date,
        "ref": commit.ref,
        "blob": sha,
        "occurrences": record.count,
    }
    if record.other_paths:
        location["other_paths"] = list(record.other_paths)
    return location


def _one_blob(
    plan: HistoryPlan, options: GitOptions, stats: SourceStats, stdout: io.BufferedReader, sha: str
) -> Iterator[SourceItem]:
    header = stdout.readline()
    if not header:
        raise _Desync
    parts = header.split()
    record = plan.blobs[sha]
    origin = _origin(plan, record)
    location = _location(plan, record, sha)
    if len(parts) == 2 and parts[0] == sha.encode() and parts[1] in (b"missing", b"ambiguous"):
        yield stats.note(SourceError(origin, f"blob {sha} is missing or corrupt", ErrorCode.CORRUPT, location))
        return
    if len(parts) != 3 or parts[0] != sha.encode() or not parts[2].isdigit():
        raise _Desync
    size = int(parts[2])
    content = _PipeSlice(stdout, size, stats)
    if parts[1] != b"blob":
        content.drain()
        return
    if options.max_size is not None and size > options.max_size:
        content.drain()
        yield stats.note(too_large(origin, size, options.max_size, location))
        return
    if size <= INLINE_MAX:
        data = content.take(size)
        content.drain()
        blob = Blob(origin, size, location, "commit", data=data)
        head = data[:SNIFF_SIZE]
    else:
        head = content.take(SNIFF_SIZE)
        blob = Blob(
            origin,
            size,
            location,
            "commit",
            opener=lambda: buffered(PrefixedReader(head, buffered(content))),
            one_shot=True,
        )
    yield from triage(
        blob,
        head,
        stats=stats,
        limits=options.archives,
        max_size=options.max_size,
        skip_binary=options.skip_binary,
    )
    if blob.data is None:
        content.drain()
