"""File integrity monitoring: a snapshot of a root's critical paths, and what changed since a baseline.

Why: TeamTNT-style intrusions leave their persistence in a handful of places — /etc/ld.so.preload,
authorized_keys, cron, systemd units, sudoers, replaced binaries such as ps or top — and then hide it
(`chattr +i`, a restored mtime). A snapshot of those paths taken while the host is known good turns
every later change into a precise fact: which file, and whether its content, mode, owner, inode
flags or symlink target moved.

What one entry records (plain JSON, stored as is by the CLI in the findings store): `type` (file,
dir, symlink, fifo, socket, char, block), `size`, `mode` (permission bits with setuid/setgid/sticky),
`uid`, `gid`, `mtime_ns`, `sha256` (regular files, streamed, bounded), `target` (symlinks),
`immutable` / `append_only` (FS_IOC_GETFLAGS on an O_RDONLY|O_NONBLOCK|O_NOFOLLOW descriptor; None
where the filesystem has no such flags), `keys` (the SHA256 fingerprints of an authorized_keys
file, as `ssh-keygen -l` prints them) and `error` when the file could not be read.

Everything goes through `HostRoot`, so an offline root's absolute symlinks stay inside it. This
module never imports the store: the CLI moves baselines between the two.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import stat
import struct
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cloudward.core.finding import Target
from cloudward.core.rules import Rule
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.workload.evaluate import compile_rules, evaluate
from cloudward.workload.observation import HostObservation
from cloudward.workload.root import HostRoot, RootError

__all__ = [
    "DEFAULT_PATHS",
    "Change",
    "authorized_keys_fingerprints",
    "category",
    "change_observation",
    "diff",
    "expand_paths",
    "file_state",
    "run_check",
    "snapshot",
]

# The default set: accounts, sudo, SSH, the dynamic loader, cron, systemd units in /etc, SSH keys of
# every account, system binaries, login shell configuration, boot scripts, name resolution.
# `~/` expands to every home directory named in the root's /etc/passwd (and /root).
DEFAULT_PATHS: tuple[str, ...] = (
    "/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow",
    "/etc/sudoers", "/etc/sudoers.d",
    "/etc/ssh",
    "/etc/ld.so.preload", "/etc/ld.so.conf", "/etc/ld.so.conf.d",
    "/etc/crontab", "/etc/anacrontab", "/etc/cron.d", "/etc/cron.hourly", "/etc/cron.daily",
    "/etc/cron.weekly", "/etc/cron.monthly", "/var/spool/cron",
    "/etc/systemd/system", "/etc/systemd/user",
    "/root/.ssh", "~/.ssh/authorized_keys", "~/.ssh/authorized_keys2",
    "/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin",
    "/etc/profile", "/etc/profile.d", "/etc/bash.bashrc", "/etc/environment", "/etc/rc.local",
    "/etc/hosts", "/etc/resolv.conf",
)

BINARY_DIRS = ("/bin", "/sbin", "/usr/bin", "/usr/sbin", "/usr/local/bin", "/usr/local/sbin")
MAX_DEPTH = 6  # below a configured directory (binary directories: their entries only)
MAX_ENTRIES = 300_000  # per snapshot: a hostile root cannot make the baseline unbounded
MAX_HASH = 1 << 30  # a file larger than this is compared by size and mtime, not content
MAX_KEYS_READ = 1024 * 1024
MAX_HOMES = 5000

FS_IOC_GETFLAGS = 0x80086601  # _IOR('f', 1, long) on 64-bit Linux
FS_IMMUTABLE_FL = 0x00000010
FS_APPEND_FL = 0x00000020
_NO_FLAGS = {errno.ENOTTY, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL, errno.ENOTSUP}
_O_NOATIME = getattr(os, "O_NOATIME", 0)

ErrorSink = Callable[[str, str], None]


def _ignore(_item: str, _message: str) -> None:
    return None


def display(path: str) -> str:
    """A path as text the store can hold: undecodable bytes (surrogate escapes from os.listdir)
    become backslash escapes, so a hostile file name cannot break JSON or a database column."""
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return path.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    return path


# --- categories --------------------------------------------------------------------------------

_CRON = ("/etc/crontab", "/etc/anacrontab", "/etc/cron.", "/var/spool/cron/", "/var/spool/cron")
_PROFILE = ("/etc/profile", "/etc/bash.bashrc", "/etc/environment")


def _under(path: str, top: str) -> bool:
    return path == top or path.startswith(top.rstrip("/") + "/")


def category(path: str) -> str:
    """What a path is for, as rules see it: preload, loader, auth, sudo, ssh_keys, sshd, ssh, cron,
    systemd, binary, profile, boot, resolver, or other."""
    name = path.rsplit("/", 1)[-1]
    if path == "/etc/ld.so.preload":
        return "preload"
    if path == "/etc/ld.so.conf" or _under(path, "/etc/ld.so.conf.d"):
        return "loader"
    if path in ("/etc/passwd", "/etc/shadow", "/etc/group", "/etc/gshadow"):
        return "auth"
    if path == "/etc/sudoers" or _under(path, "/etc/sudoers.d"):
        return "sudo"
    if name.startswith("authorized_keys") and "/.ssh/" in path:
        return "ssh_keys"
    if path == "/etc/ssh/sshd_config" or _under(path, "/etc/ssh/sshd_config.d"):
        return "sshd"
    if _under(path, "/etc/ssh") or "/.ssh/" in path or path.endswith("/.ssh"):
        return "ssh"
    if any(path == c or path.startswith(c) for c in _CRON):
        return "cron"
    if _under(path, "/etc/systemd"):
        return "systemd"
    if any(_under(path, d) for d in BINARY_DIRS):
        return "binary"
    if any(path == p for p in _PROFILE) or _under(path, "/etc/profile.d"):
        return "profile"
    if path == "/etc/rc.local":
        return "boot"
    if path in ("/etc/hosts", "/etc/resolv.conf"):
        return "resolver"
    return "other"


# --- which paths -------------------------------------------------------------------------------


def _homes(root: HostRoot, error: ErrorSink) -> list[str]:
    homes = ["/root"]
    try:
        text = root.read_text("/etc/passwd", 4 * 1024 * 1024)
    except FileNotFoundError:
        text = ""
    except OSError as exc:
        error("/etc/passwd", f"cannot read /etc/passwd to find home directories: {exc}")
        text = ""
    for line in text.splitlines():
        fields = line.split(":")
        if len(fields) != 7:
            continue
        home = fields[5].rstrip("/")
        if home.startswith("/") and home not in homes and home not in ("/nonexistent", "/dev/null"):
            homes.append(home)
        if len(homes) >= MAX_HOMES:
            break
    for home in root.glob("/home"):
        if home not in homes and len(homes) < MAX_HOMES:
            homes.append(home)
    return homes


def expand_paths(root: HostRoot, paths: Sequence[str], error: ErrorSink = _ignore) -> list[tuple[str, int]]:
    """(inner path, depth below it) for each configured path; `~/x` becomes `<home>/x` per account."""
    out: list[tuple[str, int]] = []
    seen: set[str] = set()
    homes: list[str] | None = None
    for raw in paths:
        raw = raw.strip()
        if not raw:
            continue
        if raw.startswith("~/"):
            homes = homes if homes is not None else _homes(root, error)
            candidates = [f"{home}/{raw[2:]}" for home in homes]
        else:
            candidates = ["/" + raw.strip("/")]
        for inner in candidates:
            if inner in seen:
                continue
            seen.add(inner)
            out.append((inner, 1 if inner in BINARY_DIRS else MAX_DEPTH))
    return out


# --- one file ----------------------------------------------------------------------------------


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISREG, "file"), (stat.S_ISDIR, "dir"), (stat.S_ISLNK, "symlink"),
                       (stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "char"),
                       (stat.S_ISBLK, "block")):
        if test(mode):
            return name
    return "other"


def _flags(fd: int) -> int | None:
    try:
        buf = fcntl.ioctl(fd, FS_IOC_GETFLAGS, b"\0" * 8)
    except OSError as exc:
        if exc.errno in _NO_FLAGS:
            return None
        raise
    return int(struct.unpack("=I", buf[:4])[0])


def _open(host: str) -> int:
    base = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    if _O_NOATIME:
        try:  # do not disturb the access times an investigator may need (root may do this)
            return os.open(host, base | _O_NOATIME)
        except PermissionError:
            pass
    return os.open(host, base)


def _key_fingerprints(data: bytes) -> list[str]:
    from cloudward.workload.collectors.ssh_keys import fingerprint, parse_key_line

    found: set[str] = set()
    for line in data.decode("utf-8", "replace").split("\n"):
        parsed = parse_key_line(line)
        if parsed is None:
            continue
        print_ = fingerprint(parsed["blob"])
        if print_:
            found.add(print_)
    return sorted(found)


def file_state(root: HostRoot, inner: str) -> dict[str, Any] | None:
    """The attributes of one inner path (not following a final symlink); None when it is absent.

    A file that exists but cannot be read keeps its metadata and gets `error` (its content is then
    not compared)."""
    try:
        host = root.resolve(inner, follow_last=False)
        info = os.lstat(host)
    except FileNotFoundError:
        return None
    except RootError as exc:
        if exc.errno == errno.ENOTDIR:
            return None
        return {"type": "other", "error": f"{exc.strerror or exc}"}
    except NotADirectoryError:
        return None
    except OSError as exc:
        return {"type": "other", "error": f"{exc.strerror or exc}"}
    attrs = _meta(info)
    if stat.S_ISLNK(info.st_mode):
        try:
            attrs["target"] = display(os.readlink(host))
        except OSError as exc:
            attrs["error"] = f"readlink: {exc.strerror or exc}"
        return attrs
    if not (stat.S_ISREG(info.st_mode) or stat.S_ISDIR(info.st_mode)):
        return attrs  # FIFOs and devices are described, never opened
    try:
        fd = _open(host)
    except FileNotFoundError:
        return None
    except OSError as exc:
        attrs["error"] = f"open: {exc.strerror or exc}"
        return attrs
    try:
        current = os.fstat(fd)
        if (current.st_ino, current.st_dev) != (info.st_ino, info.st_dev):
            attrs = _meta(current)  # replaced between lstat and open: describe what we opened
        flags = _flags(fd)
        attrs["immutable"] = None if flags is None else bool(flags & FS_IMMUTABLE_FL)
        attrs["append_only"] = None if flags is None else bool(flags & FS_APPEND_FL)
        if stat.S_ISREG(current.st_mode):
            _hash_into(fd, current, attrs, inner)
    except OSError as exc:
        attrs["error"] = f"read: {exc.strerror or exc}"
    finally:
        os.close(fd)
    return attrs


def _meta(info: os.stat_result) -> dict[str, Any]:
    return {"type": _kind(info.st_mode), "size": info.st_size, "mode": stat.S_IMODE(info.st_mode),
            "uid": info.st_uid, "gid": info.st_gid, "mtime_ns": info.st_mtime_ns}


def _hash_into(fd: int, info: os.stat_result, attrs: dict[str, Any], inner: str) -> None:
    if info.st_size > MAX_HASH:
        attrs["sha256"] = None
        attrs["hash_skipped"] = f"larger than {MAX_HASH} bytes"
        return
    digest = hashlib.sha256()
    keys = inner.rsplit("/", 1)[-1].startswith("authorized_keys")
    head = bytearray()
    left = MAX_HASH
    while left > 0:
        chunk = os.read(fd, min(left, 1 << 20))
        if not chunk:
            break
        digest.update(chunk)
        if keys and len(head) < MAX_KEYS_READ:
            head += chunk[:MAX_KEYS_READ - len(head)]
        left -= len(chunk)
    attrs["sha256"] = digest.hexdigest()
    if keys:
        attrs["keys"] = _key_fingerprints(bytes(head))


# --- whole snapshot ----------------------------------------------------------------------------


def iter_paths(root: HostRoot, tops: Iterable[tuple[str, int]], max_entries: int = MAX_ENTRIES,
               error: ErrorSink = _ignore) -> Iterator[str]:
    """Every inner path a snapshot of `tops` covers that exists now (a configured directory, its
    entries to its depth; a symlinked directory is one entry, never followed)."""
    count = 0
    for top, depth in tops:
        try:
            info = root.lstat(top)
        except OSError:
            continue
        count += 1
        yield top
        if not stat.S_ISDIR(info.st_mode):
            continue
        for inner, _info in root.walk(top, max_depth=depth, max_entries=max_entries):
            count += 1
            if count > max_entries:
                error(top, f"more than {max_entries} entries under the monitored paths: stopped at {top}")
                return
            yield inner


def snapshot(root: HostRoot, paths: Sequence[str] = DEFAULT_PATHS, *, error: ErrorSink = _ignore,
             max_entries: int = MAX_ENTRIES) -> dict[str, dict[str, Any]]:
    """{display path: attributes} of everything the configured paths cover on `root`."""
    entries: dict[str, dict[str, Any]] = {}
    for inner in iter_paths(root, expand_paths(root, paths, error), max_entries, error):
        key = display(inner)
        if key in entries:
            continue
        state = file_state(root, inner)
        if state is None:
            continue
        if "error" in state:
            error(key, f"{key}: {state['error']}")
        entries[key] = state
    return entries


def authorized_keys_fingerprints(entries: Mapping[str, Mapping[str, Any]]) -> set[str]:
    """The key fingerprints ("SHA256:...") of every authorized_keys file in a snapshot: what the
    `ssh_keys` collector takes as `options["authorized_keys_baseline"]`."""
    found: set[str] = set()
    for path, attrs in entries.items():
        if category(path) == "ssh_keys":
            found.update(str(k) for k in attrs.get("keys") or ())
    return found


# --- diff --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Change:
    path: str
    change: str  # added | removed | modified
    changed: tuple[str, ...]  # content, type, link_target, mode, owner, flags (modified only)
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None


def _content_changed(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    if a.get("type") != "file" or b.get("type") != "file":
        return False
    if a.get("error") or b.get("error"):
        return False  # unreadable on one side: nothing can be said about the content
    if a.get("sha256") and b.get("sha256"):
        return bool(a["sha256"] != b["sha256"])
    # Too large to hash: size, then mtime, are all there is.
    return a.get("size") != b.get("size") or a.get("mtime_ns") != b.get("mtime_ns")


def compare(before: Mapping[str, Any], after: Mapping[str, Any]) -> tuple[str, ...]:
    """Which attributes differ (an mtime alone is not a change: `touch` is not tampering)."""
    changed: list[str] = []
    if before.get("type") != after.get("type"):
        changed.append("type")
    elif _content_changed(before, after):
        changed.append("content")
    if before.get("target") != after.get("target") and before.get("type") == after.get("type") == "symlink":
        changed.append("link_target")
    if before.get("mode") != after.get("mode") and before.get("type") != "symlink":
        changed.append("mode")
    if (before.get("uid"), before.get("gid")) != (after.get("uid"), after.get("gid")):
        changed.append("owner")
    flags_before = (before.get("immutable"), before.get("append_only"))
    flags_after = (after.get("immutable"), after.get("append_only"))
    if None not in flags_before and None not in flags_after and flags_before != flags_after:
        changed.append("flags")
    return tuple(changed)


def diff(baseline: Mapping[str, Mapping[str, Any]], current: Mapping[str, Mapping[str, Any]]) -> Iterator[Change]:
    """Added, removed and modified paths, in path order."""
    for path in sorted(baseline.keys() | current.keys()):
        before, after = baseline.get(path), current.get(path)
        if before is None and after is not None:
            yield Change(path, "added", (), None, after)
        elif after is None and before is not None:
            yield Change(path, "removed", (), before, None)
        elif before is not None and after is not None:
            changed = compare(before, after)
            if changed:
                yield Change(path, "modified", changed, before, after)


def _summary(attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    if attrs is None:
        return {}
    out: dict[str, Any] = {"type": attrs.get("type")}
    if attrs.get("mode") is not None:
        out["mode"] = f"{int(attrs['mode']):04o}"
    for name in ("size", "uid", "gid", "sha256", "target", "immutable", "append_only"):
        if attrs.get(name) is not None:
            out[name] = attrs[name]
    return out


def _mode(attrs: Mapping[str, Any] | None) -> int:
    value = (attrs or {}).get("mode")
    return int(value) if isinstance(value, int) else 0


def change_observation(change: Change) -> HostObservation:
    """One change as the `fim_change` subject the rules in rules/fim.yaml judge."""
    before, after = change.before, change.after
    mode_before, mode_after = _mode(before), _mode(after)
    special = stat.S_ISUID | stat.S_ISGID
    is_file = (after or before or {}).get("type") == "file"
    facts: dict[str, Any] = {
        "change": change.change,
        "changed": list(change.changed),
        "category": category(change.path),
        "file_type": (after or before or {}).get("type"),
        "before": _summary(before),
        "after": _summary(after),
        # A setuid/setgid bit that appeared (a new setuid file counts) on a regular file.
        "setuid_gained": bool(is_file and after is not None and mode_after & special
                              and not (before is not None and mode_before & special)),
        "world_writable_gained": bool(after is not None and (after or {}).get("type") != "symlink"
                                      and mode_after & stat.S_IWOTH
                                      and not (before is not None and mode_before & stat.S_IWOTH)),
        "immutable_gained": bool(after and (after.get("immutable") or after.get("append_only"))
                                 and not (before and (before.get("immutable") or before.get("append_only")))),
        # New content under an unchanged modification time: someone set the clock back (touch -r).
        "mtime_unchanged": bool("content" in change.changed and before and after
                                and before.get("mtime_ns") == after.get("mtime_ns")),
    }
    if before is not None and after is not None and ("keys" in before or "keys" in after):
        old, new = set(before.get("keys") or ()), set(after.get("keys") or ())
        facts["keys_added"] = sorted(new - old)
        facts["keys_removed"] = sorted(old - new)
    elif after is not None and "keys" in after:
        facts["keys_added"] = list(after.get("keys") or ())
    return HostObservation("fim_change", facts, path=change.path, key=change.path)


def run_check(root: HostRoot, baseline: Mapping[str, Mapping[str, Any]], paths: Sequence[str],
              rules: Iterable[Rule], *, target: Target | None = None) -> ScanResult:
    """Snapshot `root` over the baseline's paths, diff, and judge each change: one `fim` ScanResult."""
    from cloudward.workload.audit import host_target

    result = ScanResult(kind="fim", targets=[str(root.path)])
    compiled = compile_rules(rules)
    chosen = target or host_target(root)
    try:
        current = snapshot(root, paths, error=lambda item, message: result.add_error(item, message, "fim"))
        changes = 0
        for change in diff(baseline, current):
            changes += 1
            result.findings.extend(evaluate(change_observation(change), compiled, chosen, str(root.path)))
    except KeyboardInterrupt:
        result.stats.update(partial=True)
        return result.finish(ScanStatus.CANCELLED)
    result.stats.update(baseline_entries=len(baseline), entries=len(current), changes=changes)
    return result.finish()
