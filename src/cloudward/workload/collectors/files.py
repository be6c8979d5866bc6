"""Files in attackers' drop places (/tmp, /dev/shm, homes, /opt …): YARA matches, IOC hits, disguised binaries.

Why: TeamTNT-style intrusions leave their payloads on disk in a handful of writable or
out-of-the-way places — an XMRig `config.json` in `/root/.configs`, an ELF called `.dockerd` in
`/tmp`, a dropper that removes the Alibaba agent, a script that posts `~/.aws/credentials` away.
This collector walks those places (bounded by file size, file count and total bytes), scans each
regular file with the shared YARA engine (built-in rules in `cloudward/data/yara/*.yar` plus
the user's folders from the `yara_rules` option), hashes it against the `sha256` indicators, looks
for indicator domains and addresses in text, and describes ELF files whose name mimics a kernel
thread, a container daemon or a system binary. Subjects: `yara_match` (one per rule that matched a
file), `file_ioc` (an indicator in or of a file) and `suspicious_binary` (an ELF with a telling name
or place). Nothing found here is ever executed.
"""

from __future__ import annotations

import hashlib
import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import PurePosixPath

from cloudward.engines.yara import YaraRules, YaraScanError, load_rules
from cloudward.workload.observation import HostContext, HostObservation

__all__ = ["ELF_MAGIC", "Budget", "classify_location", "classify_name", "collect", "drop_places", "place_depth",
           "yara_rules"]

ELF_MAGIC = b"\x7fELF"
MAX_FILE_BYTES = 32 * 1024 * 1024  # a bigger file is skipped (and counted)
MAX_TEXT_BYTES = 4 * 1024 * 1024  # non-ELF files past this are not scripts or configs worth scanning
MAX_FILES = 20_000
MAX_TOTAL_BYTES = 768 * 1024 * 1024
MAX_DEPTH = 10
MAX_ENTRIES = 500_000  # directory entries walked under one drop place
# Directories that hold thousands of library files and no dropped payloads of interest.
PRUNE = frozenset({".git", "node_modules", "__pycache__", "site-packages", "dist-packages", ".npm", ".cargo",
                   ".rustup", ".pyenv", ".nvm", "proc", "sys"})

TEMP_DIRS = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108 - inner paths of the audited root, only read
HOME_DIRS = ("/root", "/home")
LOCAL_DIRS = ("/usr/local/bin", "/usr/local/sbin", "/opt")
AUTOSTART = ("/etc/init.d", "/etc/rc.local", "/var/spool/cron")

_KERNEL_THREADS = frozenset({
    "kthreadd", "kworker", "ksoftirqd", "kswapd0", "kdevtmpfs", "kdevtmpfsi", "kthreaddi", "kthreaddk",
    "bioset", "kblockd", "khugepaged", "kauditd", "kintegrityd", "rcu_sched", "rcu_gp", "migration",
    "jbd2", "kcompactd0", "oom_reaper", "writeback", "netns", "khungtaskd", "kstrp",
})
_KERNEL_THREAD_RE = re.compile(
    r"^(\[.+\]|(kworker|ksoftirqd|migration|kswapd|kcompactd|jbd2|cpuhp|idle_inject)[/:\d].*)$")
_CONTAINER = frozenset({
    "dockerd", "docker", "docker-proxy", "docker-init", "docker-update", "docker-cache", "containerd",
    "containerd-shim", "runc", "kubelet", "kube-proxy", "kubectl", "kube-apiserver", "etcd",
})
_CONTAINER_RE = re.compile(r"^(docker|containerd|kube)[-_.]")
_SYSTEM = frozenset({
    "sshd", "ssh", "systemd", "systemd-journald", "systemd-udevd", "init", "cron", "crond", "atd", "rsyslogd",
    "syslogd", "udevd", "dbus-daemon", "agetty", "login", "ps", "ls", "netstat", "ss", "top", "lsof", "bash",
    "sh", "sudo", "su", "passwd", "crontab", "curl", "wget", "chattr", "lsattr", "python", "python3", "perl",
    "nginx", "httpd", "apache2", "mysqld", "redis-server", "php-fpm", "sysctl", "modprobe", "insmod",
})
# Binaries worth checking against the package database by name: the ones rootkits and miners replace
# or impersonate. Not every packaged name (a source-built /usr/local/bin/python3 is normal).
_TROJANED = frozenset({
    "ps", "ls", "netstat", "ss", "top", "lsof", "find", "sshd", "ssh", "login", "su", "sudo", "passwd",
    "crontab", "cron", "bash", "sh", "kill", "pkill", "pgrep", "systemctl", "chattr", "lsattr", "curl", "wget",
    "dockerd", "docker", "containerd", "runc", "kubelet", "ip", "ifconfig", "w", "who", "last", "du", "df",
})


def classify_name(name: str) -> list[str]:
    """What a file name imitates: kernel_thread, container_daemon, system_binary, hidden."""
    classes: list[str] = []
    bare = name.lstrip(".").lower()
    if name.startswith(".") and name not in (".", ".."):
        classes.append("hidden")
    if bare in _KERNEL_THREADS or _KERNEL_THREAD_RE.match(bare):
        classes.append("kernel_thread")
    if bare in _CONTAINER or _CONTAINER_RE.match(bare):
        classes.append("container_daemon")
    if bare in _SYSTEM:
        classes.append("system_binary")
    return classes


def _under(path: str, tops: tuple[str, ...]) -> bool:
    return any(path == top or path.startswith(top.rstrip("/") + "/") for top in tops)


def classify_location(path: str) -> str:
    """tmp | home | local | autostart | hidden_root | other (for an inner path)."""
    if _under(path, TEMP_DIRS):
        return "tmp"
    if _under(path, HOME_DIRS):
        return "home"
    if _under(path, LOCAL_DIRS):
        return "local"
    if _under(path, AUTOSTART) or path.startswith("/etc/cron"):
        return "autostart"
    parts = PurePosixPath(path).parts
    if len(parts) > 2 and (parts[1].startswith(".") or (parts[1] == "usr" and parts[2].startswith("."))):
        return "hidden_root"
    return "other"


def place_depth(path: str) -> int:
    """How deep below its drop place a file sits: /tmp/x -> 1, /home/u/x -> 1, /tmp/a/b/x -> 3."""
    parts = PurePosixPath(path).parts
    for top in (*TEMP_DIRS, "/root", *LOCAL_DIRS):
        top_parts = PurePosixPath(top).parts
        if parts[: len(top_parts)] == top_parts:
            return len(parts) - len(top_parts)
    if parts[:2] == ("/", "home"):
        return max(len(parts) - 3, 0)
    return len(parts) - 1


def _hidden_dir(path: str) -> bool:
    return any(part.startswith(".") for part in PurePosixPath(path).parts[1:-1])


def drop_places(ctx: HostContext) -> list[str]:
    """The inner paths to walk, most suspicious first (so budgets cut the least telling places)."""
    places = [*TEMP_DIRS]
    places += [p for p in ctx.root.glob("/etc") if PurePosixPath(p).name.startswith("cron")]
    places += [*AUTOSTART, "/usr/local/bin", "/usr/local/sbin"]
    for base in ("/", "/usr"):
        for entry in ctx.root.glob(base):
            name = PurePosixPath(entry).name
            if name.startswith(".") and ctx.root.is_dir(entry):
                places.append(entry)
    places += ["/root", "/home", "/opt"]
    return places


@dataclass(slots=True)
class Budget:
    files: int = MAX_FILES
    total_bytes: int = MAX_TOTAL_BYTES
    file_bytes: int = MAX_FILE_BYTES
    used_files: int = 0
    used_bytes: int = 0
    skipped_large: list[str] = field(default_factory=list)

    @property
    def exhausted(self) -> bool:
        return self.used_files >= self.files or self.used_bytes >= self.total_bytes


def _walk(ctx: HostContext, top: str, budget: Budget) -> Iterator[tuple[str, int]]:
    """(inner path, size) of the regular files under `top` (or `top` itself), no symlinks followed."""
    try:
        info = ctx.root.lstat(top)
    except OSError:
        return
    if stat.S_ISREG(info.st_mode):
        yield top, info.st_size
        return
    if not stat.S_ISDIR(info.st_mode):
        return

    def pruned(inner: str) -> bool:
        return inner.rsplit("/", 1)[1] in PRUNE

    def failed(directory: str, exc: OSError) -> None:
        ctx.error(directory, f"cannot list {directory}: {exc.strerror or exc}")

    walk = ctx.root.walk(top, max_depth=MAX_DEPTH, max_entries=MAX_ENTRIES + 1, prune=pruned, on_error=failed)
    for seen, (inner, entry) in enumerate(walk, 1):
        if seen > MAX_ENTRIES:
            ctx.error(top, f"more than {MAX_ENTRIES:,} entries under {top}: the rest were not scanned")
            return
        if budget.exhausted:
            return
        if stat.S_ISREG(entry.st_mode):
            yield inner, entry.st_size


@lru_cache(maxsize=8)
def _cached_rules(user_folders: tuple[str, ...]) -> YaraRules:
    return load_rules([resources.files("cloudward.data").joinpath("yara")], user_folders)


def yara_rules(ctx: HostContext) -> YaraRules:
    """The built-in rules plus the `yara_rules` option's folders; load errors are reported once."""
    def build() -> YaraRules:
        folders = ctx.options.get("yara_rules") or ()
        if isinstance(folders, str):
            folders = (folders,)
        rules = _cached_rules(tuple(str(f) for f in folders))
        for error in rules.errors:
            ctx.error(f"yara:{error.source}", str(error))
        return rules
    return ctx.shared("yara_rules", build)


def _elf_facts(ctx: HostContext, path: str, data: bytes, sha256: str) -> dict[str, object] | None:
    name = PurePosixPath(path).name
    classes = classify_name(name)
    index = ctx.packages()
    owned = index.owned(path)
    packaged_as: str | None = None
    if index.manager is not None and name in _TROJANED and not owned:
        for directory in ("/usr/bin", "/usr/sbin", "/bin", "/sbin"):
            candidate = f"{directory}/{name}"
            if index.owned(candidate):
                packaged_as = candidate
                break
    if not classes and packaged_as is None:
        return None
    return {
        "name": name,
        "elf": True,
        "name_classes": classes,
        "location": classify_location(path),
        "hidden_dir": _hidden_dir(path),
        "place_depth": place_depth(path),
        "owned": owned,
        "owner": index.owner(path),
        "packaged_as": packaged_as,
        "size": len(data),
        "sha256": sha256,
    }


def _scan_file(ctx: HostContext, rules: YaraRules, path: str, size: int, budget: Budget) -> Iterator[HostObservation]:
    if size > budget.file_bytes:
        budget.skipped_large.append(path)
        return
    try:
        head = ctx.root.read_bytes(path, 4096)
    except OSError as exc:
        ctx.error(path, f"cannot read {path}: {exc.strerror or exc}")
        return
    elf = head.startswith(ELF_MAGIC)
    if not elf and (size > MAX_TEXT_BYTES or b"\x00" in head):
        return  # neither an executable nor a script/config: archives, images, databases
    try:
        data = head if size <= len(head) else ctx.root.read_bytes(path, budget.file_bytes)
    except OSError as exc:
        ctx.error(path, f"cannot read {path}: {exc.strerror or exc}")
        return
    budget.used_files += 1
    budget.used_bytes += len(data)
    sha256 = hashlib.sha256(data).hexdigest()
    try:
        matches = rules.scan_bytes(data)
    except YaraScanError as exc:
        ctx.error(path, f"YARA scan of {path} failed: {exc}")
        matches = []
    known = ctx.iocs.get("sha256", sha256)
    base = {"path": path, "sha256": sha256, "size": len(data), "elf": elf, "location": classify_location(path)}
    names = sorted(f"{m.namespace}:{m.rule}" if m.namespace != "cloudward" else m.rule for m in matches)
    for match in matches:
        facts: dict[str, object] = {
            **base,
            "yara_rule": match.rule,
            "namespace": match.namespace,
            "tags": list(match.tags),
            "meta": dict(match.meta),
            "severity_hint": str(match.meta.get("severity", "")),
            "description": str(match.meta.get("description", "")),
            "attack": str(match.meta.get("attack", "")),
            "strings_matched": match.strings,
            "file_rules": names,
            "ioc_sha256": known is not None,
        }
        yield HostObservation("yara_match", facts, path=path, key=f"{path}\x1f{match.namespace}:{match.rule}")
    if known is not None:
        yield HostObservation("file_ioc", {**base, "kind": "sha256", "value": known.value, "source": known.source,
                                           "date": known.date, "note": known.note},
                              path=path, key=f"{path}\x1fsha256")
    if len(data) <= MAX_TEXT_BYTES:
        for indicator in ctx.iocs.find_in_text(data.decode("utf-8", errors="replace")):
            yield HostObservation("file_ioc", {**base, "kind": indicator.kind, "value": indicator.value,
                                               "source": indicator.source, "date": indicator.date,
                                               "note": indicator.note},
                                  path=path, key=f"{path}\x1f{indicator.kind}:{indicator.value}")
    if elf:
        elf_facts = _elf_facts(ctx, path, data, sha256)
        if elf_facts is not None:
            elf_facts["ioc_sha256"] = known is not None
            elf_facts["yara_rules"] = names
            yield HostObservation("suspicious_binary", elf_facts, path=path, key=path)


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    rules = yara_rules(ctx)
    budget = Budget(
        files=int(ctx.options.get("files_max_files", MAX_FILES)),
        total_bytes=int(ctx.options.get("files_max_total_bytes", MAX_TOTAL_BYTES)),
        file_bytes=int(ctx.options.get("files_max_file_bytes", MAX_FILE_BYTES)),
    )
    seen: set[str] = set()
    for top in drop_places(ctx):
        if budget.exhausted:
            ctx.error("files", f"scan budget reached ({budget.used_files} files, {budget.used_bytes} bytes): "
                      f"{top} and later places were not scanned")
            break
        for path, size in _walk(ctx, top, budget):
            if path in seen:
                continue
            seen.add(path)
            if budget.exhausted:
                break
            try:
                yield from _scan_file(ctx, rules, path, size, budget)
            except OSError as exc:  # a file vanishing or changing type mid-read
                ctx.error(path, f"cannot scan {path}: {exc}")
    if budget.skipped_large:
        shown = ", ".join(budget.skipped_large[:5])
        ctx.error("files", f"{len(budget.skipped_large)} files larger than {budget.file_bytes} bytes were not "
                  f"scanned (e.g. {shown})")

