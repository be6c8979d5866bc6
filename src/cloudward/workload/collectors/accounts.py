"""Accounts and privilege: uid-0 and passwordless users, sudo NOPASSWD, writable dirs on root's PATH, SUID files.

Why: after getting in, intruders make sure they can come back as root — TeamTNT scripts add a
user with uid 0 or a sudoers.d file granting `NOPASSWD: ALL`, and privilege escalation kits drop a
SUID shell in /tmp. The same places hold plain hardening gaps (an account with no password, a
world-writable directory early on root's PATH). Subjects:
- `account`: one per /etc/passwd entry, with the password state from /etc/shadow (`empty`,
  `locked`, `hash`, …; the hash itself is never reported), uid-0 and duplicate-uid facts;
- `sudo_rule`: one per user specification in /etc/sudoers and its includes (`@include`,
  `@includedir`, `#include`, `#includedir`; backslash continuations, comments, User_Alias and
  Cmnd_Alias expanded), with the commands it allows without a password; `sudo_defaults` for a
  `Defaults !authenticate`;
- `path_dir`: each directory on root's PATH as set in /etc/environment, /etc/profile,
  /etc/login.defs, root's shell startup files and sudo's secure_path, with its owner and mode;
- `suid_file`: each SUID/SGID regular file under /usr, /bin, /sbin, /opt, /tmp, /var/tmp,
  /dev/shm and /home (bounded walk), with whether the package database owns it (True/False, or
  None when the root has no package database);
- `suid_unpacked_tree`: a whole system tree unpacked under /tmp or /home (debootstrap and image
  builds, test fixtures: an etc/passwd or etc/os-release beside a populated usr/bin) whose bin and
  lib directories hold SUID files — one observation per tree rather than one per file.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cloudward.workload.observation import HostContext, HostObservation

__all__ = ["SudoRule", "collect", "parse_sudoers", "path_entries"]

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_ACCOUNTS = 20_000
MAX_SUDO_FILES = 128
MAX_SUDO_DEPTH = 8
SUID_TOPS = ("/usr", "/bin", "/sbin", "/opt", "/tmp", "/var/tmp", "/dev/shm", "/home")  # noqa: S108 - inner paths
SUID_MAX_ENTRIES = 400_000
SUID_MAX_DEPTH = 14
SUID_MAX_REPORTS = 2_000
TEMP = ("/tmp", "/var/tmp", "/dev/shm")  # noqa: S108 - inner paths of the audited root
PRUNE_NAMES = frozenset({"proc", "sys", ".git", "node_modules", "__pycache__"})
PRUNE_PATHS = frozenset({"/usr/share/doc", "/usr/share/man", "/usr/share/locale", "/usr/share/icons",
                         "/usr/share/zoneinfo", "/usr/include", "/usr/src"})
NOLOGIN = ("/usr/sbin/nologin", "/sbin/nologin", "/bin/false", "/usr/bin/false", "/bin/sync")
PATH_FILES = ("/etc/environment", "/etc/profile", "/etc/bash.bashrc", "/root/.profile", "/root/.bashrc",
              "/root/.bash_profile", "/root/.bash_login", "/root/.zshrc", "/root/.zshenv")
_PATH_ASSIGN = re.compile(r"""(?:^|[\s;])(?:export\s+)?PATH=("[^"]*"|'[^']*'|[^\s;]*)""")
_VAR_ASSIGN = re.compile(r"""^\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=("[^"`]*"|'[^']*'|[^\s;`"']*)\s*$""")
_VAR_REF = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")
_TAG = re.compile(r"^\s*(NOPASSWD|PASSWD|SETENV|NOSETENV|NOEXEC|EXEC|LOG_INPUT|NOLOG_INPUT|LOG_OUTPUT|"
                  r"NOLOG_OUTPUT|MAIL|NOMAIL|FOLLOW|NOFOLLOW|INTERCEPT|NOINTERCEPT)\s*:")


def _read(ctx: HostContext, path: str, limit: int = MAX_FILE_BYTES) -> str | None:
    return ctx.read_config(path, limit)


# -- accounts -------------------------------------------------------------------------------------

def _accounts(ctx: HostContext) -> Iterator[HostObservation]:
    passwd = _read(ctx, "/etc/passwd")
    if passwd is None:
        return
    shadow_text = _read(ctx, "/etc/shadow")
    shadow: dict[str, str] = {}
    for line in (shadow_text or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 2 and fields[0]:
            shadow.setdefault(fields[0], fields[1])
    entries: list[tuple[int, list[str]]] = []
    for number, line in enumerate(passwd.splitlines(), 1):
        if not line.strip() or line.startswith(("+", "-", "#")):
            continue  # NIS compat lines and stray comments
        fields = line.split(":")
        if len(fields) < 7 or not fields[2].lstrip("-").isdigit():
            ctx.error(f"/etc/passwd:{number}", "malformed passwd line; skipped")
            continue
        entries.append((number, fields))
        if len(entries) >= MAX_ACCOUNTS:
            ctx.error("/etc/passwd", f"more than {MAX_ACCOUNTS} accounts; the rest were not examined")
            break
    by_uid: dict[int, list[str]] = {}
    for _, fields in entries:
        by_uid.setdefault(int(fields[2]), []).append(fields[0])
    for number, fields in entries:
        name, field_pw, uid, gid, home, shell = fields[0], fields[1], int(fields[2]), fields[3], fields[5], fields[6]
        if name in shadow:
            hashed = shadow[name]
            if hashed == "":
                state = "empty"
            elif hashed.startswith(("!", "*")) or hashed in ("x", "LK", "NP"):
                state = "locked"
            else:
                state = "hash"
        elif field_pw == "":
            state = "empty"
        elif field_pw in ("x", "*") or field_pw.startswith("!"):
            state = "locked" if field_pw != "x" else "no_shadow_entry"
        else:
            state = "hash_in_passwd"
        yield HostObservation("account", {
            "name": name,
            "uid": uid,
            "gid": int(gid) if gid.isdigit() else gid,
            "home": home,
            "shell": shell,
            "login_shell": bool(shell) and shell not in NOLOGIN,
            "password_state": state,
            "password_field_in_passwd": "hash" if state == "hash_in_passwd" else field_pw[:1],
            "extra_uid0": uid == 0 and name != "root",
            "duplicate_uid_with": sorted(n for n in by_uid[uid] if n != name),
            "shadow_read": shadow_text is not None,
        }, path="/etc/passwd", line=number, key=name)


# -- sudoers --------------------------------------------------------------------------------------

@dataclass
class SudoRule:
    users: list[str]
    hosts: str
    commands: list[str]
    nopasswd_commands: list[str]
    runas: list[str]
    path: str
    line: int
    raw: str


@dataclass
class Sudoers:
    rules: list[SudoRule] = field(default_factory=list)
    user_aliases: dict[str, list[str]] = field(default_factory=dict)
    cmnd_aliases: dict[str, list[str]] = field(default_factory=dict)
    defaults: list[tuple[str, str, str, int]] = field(default_factory=list)  # (scope, setting, path, line)
    files: list[str] = field(default_factory=list)


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), 1):
        if not pending:
            start = number
        if raw.endswith("\\"):
            pending += raw[:-1] + " "
            continue
        yield start, pending + raw
        pending = ""
    if pending:
        yield start, pending


def _strip_comment(line: str) -> str:
    text = line.strip()
    if text.startswith(("#include", "#includedir")):
        return text
    if text.startswith("#") and not re.match(r"#\d", text):
        return ""
    return re.sub(r"(?<!\S)#(?!\d).*$", "", text).strip() if "#" in text[1:] else text


def _top_split(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth = max(0, depth - 1)
        if char == sep and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


class _SudoParser:
    def __init__(self, ctx: HostContext) -> None:
        self.ctx = ctx
        self.result = Sudoers()
        self.stack: list[str] = []

    def include(self, target: str, base: str, depth: int, directory: bool) -> None:
        target = target.strip().strip('"')
        if not target.startswith("/"):
            target = f"{base}/{target}"
        if directory:
            for path in self.ctx.root.glob(target):
                name = path.rsplit("/", 1)[1]
                if "." in name or name.endswith("~"):
                    continue  # sudo skips these in an includedir
                if self.ctx.root.is_file(path) or not self.ctx.root.exists(path):
                    self.read(path, depth + 1)
                else:
                    self.ctx.error(path, "not a regular file in a sudoers include directory; skipped")
        else:
            self.read(target, depth + 1)

    def read(self, path: str, depth: int) -> None:
        if path in self.stack:
            self.ctx.error(path, f"sudoers include loop ({' -> '.join([*self.stack, path])}); not followed")
            return
        if depth > MAX_SUDO_DEPTH or len(self.result.files) >= MAX_SUDO_FILES:
            self.ctx.error(path, "sudoers includes nested too deep or too many files; not read")
            return
        text = _read(self.ctx, path, 1024 * 1024)
        if text is None:
            return
        self.result.files.append(path)
        self.stack.append(path)
        base = path.rpartition("/")[0] or "/"
        try:
            for number, raw in _logical_lines(text):
                line = _strip_comment(raw)
                if not line:
                    continue
                head = re.match(r"(\S+)\s*(.*)$", line)
                if head is None:
                    continue
                word, rest = head.group(1), head.group(2)
                if word in ("@include", "#include", "@includedir", "#includedir"):
                    self.include(rest, base, depth, word.endswith("dir"))
                elif word.startswith("Defaults"):
                    scope = word[len("Defaults"):]
                    for setting in _top_split(rest, ","):
                        self.result.defaults.append((scope, setting.strip(), path, number))
                elif word in ("User_Alias", "Cmnd_Alias", "Cmd_Alias"):
                    target = self.result.user_aliases if word == "User_Alias" else self.result.cmnd_aliases
                    for definition in _top_split(rest, ":"):
                        name, _, members = definition.partition("=")
                        target[name.strip()] = _top_split(members, ",")
                elif word in ("Runas_Alias", "Host_Alias"):
                    continue
                else:
                    self.user_spec(line, path, number)
        finally:
            self.stack.pop()

    def user_spec(self, line: str, path: str, number: int) -> None:
        left, eq, right = line.partition("=")
        if not eq:
            return
        left_parts = left.strip().rsplit(None, 1)
        if len(left_parts) != 2:
            return
        users = _top_split(left_parts[0], ",")
        hosts = left_parts[1]
        commands: list[str] = []
        nopasswd: list[str] = []
        runas: list[str] = []
        nopass = False
        for item in _top_split(right, ","):
            text = item
            if text.startswith("("):
                close = text.find(")")
                runas.append(text[1:close].strip() if close > 0 else text[1:])
                text = text[close + 1:] if close > 0 else ""
            while True:
                tag = _TAG.match(text)
                if not tag:
                    break
                if tag.group(1) == "NOPASSWD":
                    nopass = True
                elif tag.group(1) == "PASSWD":
                    nopass = False
                text = text[tag.end():]
            command = text.strip()
            if not command:
                continue
            commands.append(command)
            if nopass:
                nopasswd.append(command)
        self.result.rules.append(SudoRule(users, hosts, commands, nopasswd, runas, path, number, line[:500]))


def parse_sudoers(ctx: HostContext, path: str = "/etc/sudoers") -> Sudoers:
    parser = _SudoParser(ctx)
    parser.read(path, 0)
    return parser.result


def _expand_commands(commands: list[str], aliases: dict[str, list[str]]) -> list[str]:
    out: list[str] = []
    for command in commands:
        negated = command.startswith("!")
        name = command.lstrip("!").strip()
        members = aliases.get(name)
        if members is not None and not negated:
            out.extend(members)
        else:
            out.append(command)
    return out


def _sudo(ctx: HostContext, sudoers: Sudoers) -> Iterator[HostObservation]:
    for rule in sudoers.rules:
        users: list[str] = []
        for user in rule.users:
            users.extend(sudoers.user_aliases.get(user, [user]))
        commands = _expand_commands(rule.commands, sudoers.cmnd_aliases)
        nopasswd = _expand_commands(rule.nopasswd_commands, sudoers.cmnd_aliases)
        yield HostObservation("sudo_rule", {
            "users": users,
            "hosts": rule.hosts,
            "runas": rule.runas,
            "commands": commands,
            "all_commands": "ALL" in commands,
            "nopasswd_commands": nopasswd,
            "nopasswd_all": "ALL" in nopasswd,
            "rule": rule.raw,
        }, path=rule.path, line=rule.line, key=f"{rule.path}|{','.join(rule.users)}|{rule.raw}")
    for scope, setting, path, line in sudoers.defaults:
        if setting.replace(" ", "") == "!authenticate":
            yield HostObservation("sudo_defaults", {"scope": scope or "global", "setting": setting,
                                                    "authenticate_disabled": True},
                                  path=path, line=line, key=f"{path}|Defaults{scope}|{setting}")


# -- root's PATH ----------------------------------------------------------------------------------

def path_entries(text: str, home: str = "/root") -> list[str]:
    """Directories of every PATH assignment in a shell or environment file, in order; simple
    variables assigned in the same file, $HOME and ~ substituted; what stays unresolved is dropped."""
    variables = {"HOME": home}
    entries: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        var = _VAR_ASSIGN.match(line)
        if var and var.group(1) != "PATH":
            value = _VAR_REF.sub(lambda m: variables.get(m.group(1), m.group(0)), var.group(2).strip("\"'"))
            if "$" not in value:
                variables[var.group(1)] = value
        for match in _PATH_ASSIGN.finditer(line):
            value = match.group(1).strip("\"'")
            for entry in value.split(":"):
                if entry in ("$PATH", "${PATH}"):
                    continue
                resolved = _VAR_REF.sub(lambda m: variables.get(m.group(1), m.group(0)), entry)
                if resolved.startswith("~"):
                    resolved = home + resolved[1:]
                if "$" in resolved or "`" in resolved:
                    continue
                entries.append(resolved)
    return entries


def _path_dirs(ctx: HostContext, sudoers: Sudoers) -> Iterator[HostObservation]:
    found: dict[str, list[str]] = {}
    for path in PATH_FILES:
        text = _read(ctx, path, 1024 * 1024)
        if text is None:
            continue
        for entry in path_entries(text):
            found.setdefault(entry, []).append(path)
    text = _read(ctx, "/etc/login.defs", 1024 * 1024)
    for line in (text or "").splitlines():
        match = re.match(r"^\s*ENV_SUPATH\s+PATH=(\S+)", line)
        if match:
            for entry in match.group(1).split(":"):
                found.setdefault(entry, []).append("/etc/login.defs")
    for _scope, setting, path, _line in sudoers.defaults:
        name, _, value = setting.partition("=")
        if name.strip() == "secure_path":
            for entry in value.strip().strip('"').split(":"):
                found.setdefault(entry, []).append(f"{path} (secure_path)")
    for entry, sources in found.items():
        facts: dict[str, Any] = {"dir": entry, "sources": sorted(set(sources)),
                                 "relative": entry in ("", ".") or not entry.startswith("/")}
        if not facts["relative"]:
            try:
                info = ctx.root.stat(entry)
            except FileNotFoundError:
                facts["exists"] = False
            except OSError as exc:
                facts["exists"] = False
                facts["error"] = exc.strerror or str(exc)
            else:
                mode = stat.S_IMODE(info.st_mode)
                facts.update({
                    "exists": True,
                    "is_dir": stat.S_ISDIR(info.st_mode),
                    "mode": f"{mode:04o}",
                    "owner_uid": info.st_uid,
                    "group_gid": info.st_gid,
                    "world_writable": bool(mode & 0o002),
                    "group_writable_non_root": bool(mode & 0o020) and info.st_gid != 0,
                    "sticky": bool(mode & stat.S_ISVTX),
                })
        yield HostObservation("path_dir", facts, path=sources[0], key=entry or "(empty)")


# -- SUID / SGID ----------------------------------------------------------------------------------

def _location(path: str) -> str:
    if any(path == t or path.startswith(t + "/") for t in TEMP):
        return "temp"
    if path.startswith("/home/"):
        return "home"
    if path.startswith("/opt/") or path.startswith("/usr/local/"):
        return "local"
    return "system"


_TREE_BIN = ("usr/bin/", "usr/sbin/", "bin/", "sbin/", "usr/lib/", "usr/libexec/", "lib/", "usr/local/bin/")


def _unpacked_root(ctx: HostContext, path: str, cache: dict[str, bool]) -> str | None:
    """The top of a whole system tree unpacked under /tmp or /home (a debootstrap or image-build
    directory, a test fixture) when `path` is one of its binaries: an ancestor with etc/passwd or
    etc/os-release and a populated usr/bin or bin, `path` lying in its bin/lib directories."""
    parts = path.strip("/").split("/")
    for depth in range(2, len(parts) - 1):
        top = "/" + "/".join(parts[:depth])
        rest = "/".join(parts[depth:])
        if not rest.startswith(_TREE_BIN):
            continue
        if top not in cache:
            cache[top] = _looks_like_tree(ctx, top)
        if cache[top]:
            return top
    return None


def _looks_like_tree(ctx: HostContext, top: str) -> bool:
    if not (ctx.root.is_file(f"{top}/etc/passwd") or ctx.root.is_file(f"{top}/etc/os-release")):
        return False
    for binaries in (f"{top}/usr/bin", f"{top}/bin"):
        try:
            if len(ctx.root.listdir(binaries)) >= 5:
                return True
        except OSError:
            continue
    return False


def _suid(ctx: HostContext) -> Iterator[HostObservation]:
    seen: set[tuple[int, int]] = set()
    packages = ctx.packages()
    budget = SUID_MAX_ENTRIES
    reported = 0
    tree_cache: dict[str, bool] = {}
    trees: dict[str, list[str]] = {}
    for top in SUID_TOPS:
        try:
            if stat.S_ISLNK(ctx.root.lstat(top).st_mode):
                continue  # /bin -> usr/bin on merged-/usr systems: walked under /usr
        except OSError:
            continue
        count = 0
        truncated = [False]
        for inner, info in _walk(ctx, top, budget, truncated):
            count += 1
            if not stat.S_ISREG(info.st_mode) or not info.st_mode & (stat.S_ISUID | stat.S_ISGID):
                continue
            if (info.st_dev, info.st_ino) in seen:
                continue
            seen.add((info.st_dev, info.st_ino))
            location = _location(inner)
            tree = _unpacked_root(ctx, inner, tree_cache) if location in ("temp", "home") else None
            if tree is not None:
                trees.setdefault(tree, []).append(inner)
                continue
            reported += 1
            if reported > SUID_MAX_REPORTS:
                if reported == SUID_MAX_REPORTS + 1:
                    ctx.error(top, f"more than {SUID_MAX_REPORTS} SUID/SGID files; the rest were not reported")
                continue
            owned = packages.owned(inner)
            yield HostObservation("suid_file", {
                "file": inner,
                "setuid": bool(info.st_mode & stat.S_ISUID),
                "setgid": bool(info.st_mode & stat.S_ISGID),
                "mode": f"{stat.S_IMODE(info.st_mode):04o}",
                "owner_uid": info.st_uid,
                "group_gid": info.st_gid,
                "size": info.st_size,
                "owned_by_package": owned,
                "package": packages.owner(inner) if owned else None,
                "location": location,
            }, path=inner, key=inner)
        budget -= count
        if truncated[0]:
            ctx.error(top, f"SUID search stopped after {SUID_MAX_ENTRIES} entries; later directories not walked")
            break
    for tree, files in trees.items():
        yield HostObservation("suid_unpacked_tree", {
            "tree": tree,
            "location": _location(tree + "/"),
            "suid_count": len(files),
            "examples": sorted(files)[:10],
        }, path=tree, key=tree)


def _pruned(inner: str) -> bool:
    return inner.rsplit("/", 1)[1] in PRUNE_NAMES or inner in PRUNE_PATHS


def _walk(ctx: HostContext, top: str, budget: int, truncated: list[bool]) -> Iterator[tuple[str, Any]]:
    """Bounded walk (lstat, symlinks not followed) that skips noisy trees without descending into
    them; at most `budget` entries, `truncated[0]` set when more were left."""
    walk = ctx.root.walk(top, max_depth=SUID_MAX_DEPTH, max_entries=budget + 1, prune=_pruned)
    for seen, (inner, info) in enumerate(walk, 1):
        if seen > budget:
            truncated[0] = True
            return
        yield inner, info


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    yield from _accounts(ctx)
    try:
        sudoers = parse_sudoers(ctx)
    except Exception as exc:  # keep the PATH and SUID checks
        ctx.error("/etc/sudoers", f"cannot parse sudoers: {type(exc).__name__}: {exc}")
        sudoers = Sudoers()
    yield from _sudo(ctx, sudoers)
    yield from _path_dirs(ctx, sudoers)
    yield from _suid(ctx)
