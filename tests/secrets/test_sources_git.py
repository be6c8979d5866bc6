"""Git history: every blob of every ref, once; deletions, branches, merges, corruption, scale."""

from __future__ import annotations

import os
import secrets
import string
import subprocess
import time
import zipfile
import zlib
from io import BytesIO
from pathlib import Path

import pytest

from cloudward.engines.blobs import MiB
from cloudward.secrets.sources import Blob, ErrorCode, GitOptions, SourceStats, history, plan_history


def fake_access_key() -> str:
    return "AKIA" + "".join(secrets.choice(string.ascii_uppercase + string.digits) for _ in range(16))


def fake_secret_key() -> str:
    return "".join(secrets.choice(string.ascii_letters + string.digits + "/+") for _ in range(40))


class Repo:
    """A throwaway repository driven through the git CLI with fixed, isolated config."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        self.env = {
            **os.environ,
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_AUTHOR_NAME": "Alice Dev",
            "GIT_AUTHOR_EMAIL": "alice@example.com",
            "GIT_COMMITTER_NAME": "Alice Dev",
            "GIT_COMMITTER_EMAIL": "alice@example.com",
        }
        self.git("init", "-q", "-b", "main")

    def git(self, *args: str, date: str | None = None, check: bool = True, data: bytes | None = None) -> str:
        env = dict(self.env)
        if date:
            env["GIT_AUTHOR_DATE"] = env["GIT_COMMITTER_DATE"] = date
        done = subprocess.run(
            ["git", "-c", "commit.gpgsign=false", *args],
            cwd=self.path,
            env=env,
            input=data,
            capture_output=True,
            check=False,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"git {args[0]} failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode(errors="replace").strip()

    def commit(self, files: dict[str, str | bytes | None], message: str = "change", date: str | None = None) -> str:
        for name, content in files.items():
            target = self.path / name
            if content is None:
                self.git("rm", "-q", name)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(content.encode() if isinstance(content, str) else content)
            self.git("add", name)
        self.git("commit", "-q", "--allow-empty", "-m", message, date=date)
        return self.git("rev-parse", "HEAD")


def scan(repo: Path | str, **options):
    stats = SourceStats()
    blobs, errors = [], []
    for item in history(str(repo), GitOptions(**options), stats):
        if isinstance(item, Blob):
            with item.open() as stream:
                blobs.append((item, stream.read()))
        else:
            errors.append(item)
    return blobs, errors, stats


def carrying(blobs, needle: str):
    """The blobs whose content contains `needle` (compared as bytes; never printed)."""
    return [blob for blob, data in blobs if needle.encode() in data]


def test_secret_added_then_deleted_is_found_where_it_was_added(tmp_path):
    repo = Repo(tmp_path / "r")
    repo.commit({"README.md": "hello\n"}, "init")
    key = fake_access_key()
    added = repo.commit({"config/aws.env": f"AWS_ACCESS_KEY_ID={key}\n"}, "add config")
    repo.commit({"config/aws.env": None}, "oops, remove it")
    blobs, errors, stats = scan(repo.path)
    assert errors == []
    (hit,) = carrying(blobs, key)
    assert hit.origin == f"{repo.path}@{added}:config/aws.env"
    assert hit.target_kind == "commit"
    loc = hit.location
    assert (loc["commit"], loc["path"], loc["author"], loc["email"]) == (
        added,
        "config/aws.env",
        "Alice Dev",
        "alice@example.com",
    )
    assert loc["ref"] == "refs/heads/main" and loc["date"]
    assert stats.counters["commits"] == 3


def test_secret_on_an_unmerged_branch(tmp_path):
    repo = Repo(tmp_path / "r")
    repo.commit({"a.txt": "a\n"})
    repo.git("checkout", "-q", "-b", "feature/wip")
    key = fake_secret_key()
    on_branch = repo.commit({"deploy.sh": f"export AWS_SECRET_ACCESS_KEY={key}\n"})
    repo.git("checkout", "-q", "main")
    repo.commit({"b.txt": "b\n"})
    blobs, _, _ = scan(repo.path)
    (hit,) = carrying(blobs, key)
    assert hit.location["commit"] == on_branch
    assert hit.location["ref"] == "refs/heads/feature/wip"
    # Restricted to main, the branch is not read.
    blobs, _, _ = scan(repo.path, refs=("main",))
    assert carrying(blobs, key) == []


def test_blob_created_by_a_merge_resolution_is_found(tmp_path):
    repo = Repo(tmp_path / "r")
    repo.commit({"settings.ini": "[db]\npassword = base\n"})
    repo.git("checkout", "-q", "-b", "side")
    repo.commit({"settings.ini": "[db]\npassword = side\n"})
    repo.git("checkout", "-q", "main")
    repo.commit({"settings.ini": "[db]\npassword = main\n"})
    repo.git("merge", "-q", "side", check=False)  # conflicts
    key = fake_secret_key()
    (repo.path / "settings.ini").write_text(f"[db]\npassword = {key}\n")
    repo.git("add", "settings.ini")
    repo.git("commit", "-q", "--no-edit")
    merge = repo.git("rev-parse", "HEAD")
    assert len(repo.git("log", "-1", "--format=%P").split()) == 2
    blobs, errors, _ = scan(repo.path)
    assert errors == []
    (hit,) = carrying(blobs, key)
    assert hit.location["commit"] == merge and hit.location["path"] == "settings.ini"
    # Both sides' versions were introduced by ordinary commits and are listed there, once each.
    assert len(carrying(blobs, "password = side")) == 1
    assert len(carrying(blobs, "password = main")) == 1


def test_file_added_inside_a_merge_commit_is_found(tmp_path):
    repo = Repo(tmp_path / "r")
    repo.commit({"a.txt": "a\n"})
    repo.git("checkout", "-q", "-b", "side")
    side_tip = repo.commit({"side.txt": "side\n"})
    repo.git("checkout", "-q", "main")
    repo.commit({"main.txt": "main\n"})
    repo.git("merge", "-q", "--no-ff", "--no-commit", "side")
    key = fake_access_key()
    (repo.path / "evil.env").write_text(f"KEY={key}\n")
    repo.git("add", "evil.env")
    repo.git("commit", "-q", "--no-edit")
    merge = repo.git("rev-parse", "HEAD")
    blobs, _, _ = scan(repo.path)
    (hit,) = carrying(blobs, key)
    assert hit.location["commit"] == merge
    (side,) = carrying(blobs, "side\n")
    assert side.location["commit"] == side_tip  # not attributed to the merge


def test_each_blob_is_read_once_and_recurrences_are_counted(tmp_path):
    repo = Repo(tmp_path / "r")
    key = fake_access_key()
    content = f"key = {key}\n"
    first = repo.commit({"a/creds.txt": content}, date="2024-01-01T00:00:00")
    repo.commit({"b/copy.txt": content, "c/copy.txt": content}, date="2024-01-02T00:00:00")
    repo.commit({"a/creds.txt": "changed\n"}, date="2024-01-03T00:00:00")
    repo.commit({"a/creds.txt": content}, date="2024-01-04T00:00:00")  # brought back
    blobs, _, stats = scan(repo.path)
    (hit,) = carrying(blobs, key)
    assert hit.location["commit"] == first and hit.location["path"] == "a/creds.txt"
    assert hit.location["occurrences"] == 4
    assert hit.location["other_paths"] == ["b/copy.txt", "c/copy.txt"]
    assert stats.counters["blob_occurrences"] == 5
    assert stats.counters["unique_blobs"] == 2
    assert stats.blobs == 2


def test_since_limits_the_history(tmp_path):
    repo = Repo(tmp_path / "r")
    old_key, new_key = fake_access_key(), fake_access_key()
    repo.commit({"old.env": f"K={old_key}\n"}, date="2023-06-01T12:00:00")
    repo.commit({"new.env": f"K={new_key}\n"}, date="2024-06-01T12:00:00")
    blobs, _, stats = scan(repo.path, since="2024-01-01")
    assert carrying(blobs, old_key) == [] and len(carrying(blobs, new_key)) == 1
    assert stats.counters["commits"] == 1


def test_large_blob_streams_and_the_stream_stays_in_sync(tmp_path):
    repo = Repo(tmp_path / "r")
    key = fake_access_key()
    big = (b"x" * 1023 + b"\n") * (3 * 1024) + f"KEY={key}\n".encode()  # 3 MiB: streamed, one-shot
    repo.commit({"big.log": big, "small.txt": "after\n"})
    repo.commit({"huge.log": b"y\n" * (3 * MiB), "z.txt": "last\n"})
    stats = SourceStats()
    seen = {}
    errors = []
    for item in history(str(repo.path), GitOptions(max_size=4 * MiB), stats):
        if isinstance(item, Blob):
            if item.location["path"] == "big.log":
                assert item.one_shot and item.data is None
                with item.open() as stream:
                    seen["big.log"] = stream.read(100)  # read only part: the source drains the rest
                    continue
            seen[item.location["path"]] = item.read()
        else:
            errors.append(item)
    assert seen["small.txt"] == b"after\n" and seen["z.txt"] == b"last\n"
    assert seen["big.log"] == big[:100]
    assert [(e.location["path"], e.code) for e in errors] == [("huge.log", ErrorCode.TOO_LARGE)]
    blobs, _, _ = scan(repo.path, max_size=None)
    assert len(carrying(blobs, key)) == 1


def test_archive_committed_to_history_is_opened(tmp_path):
    repo = Repo(tmp_path / "r")
    key = fake_secret_key()
    buffer = BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("BOOT-INF/classes/application.properties", f"aws.secret={key}\n")
    sha = repo.commit({"lib/app.jar": buffer.getvalue()})
    blobs, _, _ = scan(repo.path)
    (hit,) = carrying(blobs, key)
    assert hit.origin == f"{repo.path}@{sha}:lib/app.jar!BOOT-INF/classes/application.properties"
    assert hit.location["commit"] == sha


def _object_file(repo: Repo, sha: str) -> Path:
    path = repo.path / ".git" / "objects" / sha[:2] / sha[2:]
    path.chmod(0o644)
    return path


def test_corrupt_blob_is_reported_by_object_id_and_the_rest_is_read(tmp_path):
    repo = Repo(tmp_path / "r")
    repo.commit({"a.txt": "first\n", "b.txt": "second\n", "c.txt": "third\n"})
    broken = repo.git("rev-parse", "HEAD:b.txt")
    _object_file(repo, broken).write_bytes(b"this is not zlib")
    blobs, errors, _ = scan(repo.path)
    assert sorted(b.location["path"] for b, _ in blobs) == ["a.txt", "c.txt"]
    (error,) = errors
    assert error.code is ErrorCode.CORRUPT and broken in error.message
    assert error.origin.endswith(":b.txt")
    # A blob whose stored length disagrees with its header desynchronises nothing either.
    _object_file(repo, broken).write_bytes(zlib.compress(b"blob 999\x00short"))
    blobs, errors, _ = scan(repo.path)
    assert {"a.txt", "c.txt"} <= {b.location["path"] for b, _ in blobs}


def test_corrupt_tree_only_costs_the_commits_that_need_it(tmp_path):
    repo = Repo(tmp_path / "r")
    repo.commit({"one.txt": "1\n"})
    second = repo.commit({"two.txt": "2\n"})
    third = repo.commit({"three.txt": "3\n"})
    repo.commit({"four.txt": "4\n"})
    tree = repo.git("rev-parse", f"{second}^{{tree}}")
    _object_file(repo, tree).write_bytes(b"garbage")
    blobs, errors, _ = scan(repo.path)
    paths = sorted(b.location["path"] for b, _ in blobs)
    assert paths == ["four.txt", "one.txt"]
    assert [(e.code, e.location["commit"]) for e in errors] == [(ErrorCode.CORRUPT, second), (ErrorCode.CORRUPT, third)]


def test_not_a_repository(tmp_path):
    blobs, errors, _ = scan(tmp_path)
    assert blobs == [] and [e.code for e in errors] == [ErrorCode.GIT]
    assert "not a readable git repository" in errors[0].message


def test_unusual_path_names(tmp_path):
    repo = Repo(tmp_path / "r")
    stream = (
        b"commit refs/heads/main\nmark :1\n"
        b"committer A <a@example.com> 1700000000 +0000\ndata 3\nmsg\n"
        b'M 100644 inline "bad\\377name.env"\ndata 4\nA=1\n'
        b'M 100644 inline "esc\\033[2J.txt"\ndata 4\nB=2\n'
        b"M 120000 inline link\ndata 11\n/etc/passwd\n\n"
    )
    repo.git("fast-import", "--quiet", data=stream)
    blobs, errors, _ = scan(repo.path)
    assert errors == []
    assert sorted(b.location["path"] for b, _ in blobs) == ["bad\\xffname.env", "esc\\x1b[2J.txt"]
    assert all(b.origin.isprintable() for b, _ in blobs)


# -- scale ----------------------------------------------------------------------------------------


def fast_import_stream(commits: int, keys: list[str]) -> bytes:
    """main: `commits` commits each changing one of 1000 files; every 1000th adds a secret that the
    next commit deletes; a feature branch forks halfway and is merged back at the end."""
    out = []

    def data(payload: bytes) -> None:
        out.append(b"data %d\n" % len(payload) + payload + b"\n")

    def header(ref: str, mark: int, when: int) -> None:
        out.append(b"commit %s\nmark :%d\n" % (ref.encode(), mark))
        out.append(b"author Dev <dev@example.com> %d +0000\n" % when)
        out.append(b"committer Dev <dev@example.com> %d +0000\n" % when)
        data(b"commit %d" % mark)

    base = 1_600_000_000
    for i in range(1, commits + 1):
        header("refs/heads/main", i, base + i * 60)
        out.append(b"M 100644 inline pkg%d/mod%d.py\n" % (i % 100, i % 1000))
        data(b"# revision %d\nVALUE = %d\n" % (i, i * 7919))
        if i % 1000 == 0:
            out.append(b"M 100644 inline secrets/key%d.env\n" % i)
            data(f"AWS_ACCESS_KEY_ID={keys[i // 1000 - 1]}\n".encode())
        if i % 1000 == 1 and i > 1:
            out.append(b"D secrets/key%d.env\n" % (i - 1))
        if i == commits // 2:
            out.append(b"reset refs/heads/feature\nfrom :%d\n\n" % i)
    for j in range(1, 11):
        header("refs/heads/feature", commits + j, base + (commits // 2) * 60 + j)
        out.append(b"M 100644 inline feature/f%d.txt\n" % j)
        data(b"feature %d\n" % j)
    header("refs/heads/main", commits + 11, base + (commits + 1) * 60)
    out.append(b"merge :%d\n" % (commits + 10))
    out.append(b"M 100644 inline MERGED\n")
    data(b"merged\n")
    return b"".join(out)


def test_ten_thousand_commits(tmp_path):
    """Builds a 10,010-commit repository with fast-import; reports (does not assert) timings."""
    repo = Repo(tmp_path / "big")
    keys = [fake_access_key() for _ in range(10)]
    started = time.perf_counter()
    repo.git("fast-import", "--quiet", data=fast_import_stream(10_000, keys))
    built = time.perf_counter() - started

    started = time.perf_counter()
    plan = plan_history(str(repo.path))
    planned = time.perf_counter() - started
    assert plan.errors == []
    assert len(plan.commits) == 10_011
    assert len(plan.blobs) == 10_000 + 10 + 10 + 1

    stats = SourceStats()
    found = 0
    started = time.perf_counter()
    for item in history(str(repo.path), stats=stats):
        assert isinstance(item, Blob)
        data = item.read()
        found += sum(key.encode() in data for key in keys)
    scanned = time.perf_counter() - started
    assert found == 10
    assert stats.blobs == 10_021
    print(
        f"\n10k-commit repo: fast-import {built:.2f}s; enumeration (log + diff-tree) {planned:.2f}s; "
        f"enumeration + content of {stats.blobs} blobs {scanned:.2f}s ({stats.bytes_read} bytes)"
    )


@pytest.mark.parametrize("refs", [("--output=/tmp/pwned",), ("-n1",)])
def test_refs_cannot_inject_options(tmp_path, refs):
    repo = Repo(tmp_path / "r")
    repo.commit({"a.txt": "a\n"})
    blobs, errors, _ = scan(repo.path, refs=refs)
    assert blobs == [] and errors and errors[0].code is ErrorCode.GIT
    assert not Path("/tmp/pwned").exists()


def test_abandoning_the_iterator_stops_git(tmp_path, monkeypatch):
    from cloudward.secrets.sources import git as git_source

    repo = Repo(tmp_path / "r")
    repo.commit({f"f{i}.txt": f"{i}\n" for i in range(50)})
    started = []
    original = git_source._Process.__init__

    def spy(self, *args, **kwargs):
        original(self, *args, **kwargs)
        started.append(self.proc)

    monkeypatch.setattr(git_source._Process, "__init__", spy)
    items = history(str(repo.path))
    assert isinstance(next(items), Blob)
    items.close()
    assert started and all(proc.poll() is not None for proc in started)
