"""SSH authorized_keys of every account: each key's type, fingerprint, comment, options; file permissions; known_hosts.

Why: a public key appended to /root/.ssh/authorized_keys is the most common way TeamTNT and other
cloud intruders keep a door open, often written through an unauthenticated Redis (`CONFIG SET dir
/root/.ssh`, `dbfilename authorized_keys`), which leaves Redis's dump header in the file. Each key
(`authorized_key`) is described with its SHA256 fingerprint as `ssh-keygen -lf` prints it, its
comment (matched against the IOC file: `key_comment` indicators and actor domains), its options
(`command=`, `from=`), and — when the caller passes `options["authorized_keys_baseline"]`, a set
of fingerprints known good — whether it is new. Each file (`authorized_keys_file`) is described
with its mode and owner: a world-writable file or .ssh directory lets any local user add a key.
known_hosts files are listed (`ssh_known_hosts`) as the inventory of where stolen keys could go.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

from cloudward.workload.collectors._homes import Account, accounts
from cloudward.workload.observation import HostContext, HostObservation

READ = 1024 * 1024
MAX_KEYS = 2000  # per file
DEFAULT_FILES = (".ssh/authorized_keys", ".ssh/authorized_keys2")
_KEY_TYPE = re.compile(r"^(?:ssh-(?:rsa|dss|ed25519|ed448)|ecdsa-sha2-nistp\d+|sk-[\w@.-]+|"
                       r"[\w.-]+-cert-v0\d@openssh\.com|rsa-sha2-\d+)$")
_REDIS_HEADER = re.compile(rb"^REDIS\d{4}")


def fingerprint(blob_b64: str) -> str | None:
    """`SHA256:<unpadded base64>` of the decoded key blob, as ssh-keygen -l prints it."""
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except (binascii.Error, ValueError):
        return None
    return "SHA256:" + base64.b64encode(hashlib.sha256(blob).digest()).decode().rstrip("=")


def blob_matches_type(blob_b64: str, key_type: str) -> bool:
    """Whether the decoded key blob starts with its own type name, as every SSH public key blob does."""
    try:
        blob = base64.b64decode(blob_b64, validate=True)
    except (binascii.Error, ValueError):
        return False
    size = int.from_bytes(blob[:4], "big")
    return len(blob) >= 4 + size and blob[4:4 + size] == key_type.encode("ascii", "replace")


def _split_options(text: str) -> tuple[str, str]:
    """(options, rest) where options is the leading comma-separated list (quotes may hold spaces)."""
    quoted = False
    for i, char in enumerate(text):
        if char == '"':
            quoted = not quoted
        elif char in " \t" and not quoted:
            return text[:i], text[i:].lstrip()
    return text, ""


def parse_key_line(line: str) -> dict[str, Any] | None:
    """options/type/blob/comment of an authorized_keys line; None for blank, comment or garbage lines."""
    stripped = line.strip()
    if not stripped or stripped.startswith("#"):
        return None
    options = ""
    parts = stripped.split(None, 2)
    if not _KEY_TYPE.match(parts[0]):
        options, rest = _split_options(stripped)
        parts = rest.split(None, 2)
        if not parts or not _KEY_TYPE.match(parts[0]):
            return None
    if len(parts) < 2:
        return None
    option_map: dict[str, str] = {}
    for item in re.findall(r'(?:[^,"]|"[^"]*")+', options)[:50]:
        name, _, value = item.partition("=")
        option_map[name.strip().lower()] = value.strip().strip('"')
    return {"key_type": parts[0], "blob": parts[1], "comment": parts[2].strip() if len(parts) > 2 else "",
            "options": sorted(option_map), "forced_command": option_map.get("command", "")[:1024],
            "from": option_map.get("from", "")[:1024]}


def _configured_files(ctx: HostContext) -> list[str]:
    """AuthorizedKeysFile patterns from sshd_config when simple (%h, %u, %%, or home-relative); else defaults."""
    files: list[str] = []
    for path in ["/etc/ssh/sshd_config", *ctx.root.glob("/etc/ssh/sshd_config.d", ".conf")[:100]]:
        try:
            text = ctx.root.read_text(path, READ)
        except OSError:
            continue
        for line in text.split("\n"):
            words = line.split("#", 1)[0].split()
            if len(words) >= 2 and words[0].lower() == "authorizedkeysfile":
                for pattern in words[1:]:
                    if pattern.lower() != "none" and not re.search(r"%[^huU%]", pattern) and pattern not in files:
                        files.append(pattern)
                break  # sshd uses the first value it meets
        if files:
            break
    return files or list(DEFAULT_FILES)


def _expand(pattern: str, account: Account) -> str:
    path = pattern.replace("%h", account.home).replace("%u", account.name).replace("%U", str(account.uid))
    path = path.replace("%%", "%")
    return path if path.startswith("/") else f"{account.home.rstrip('/')}/{path}"


def _mode_facts(ctx: HostContext, path: str) -> dict[str, Any]:
    facts: dict[str, Any] = {}
    try:
        info = ctx.root.lstat(path)
    except OSError:
        return facts
    facts.update(mode=oct(stat.S_IMODE(info.st_mode)), owner_uid=info.st_uid,
                 world_writable=bool(info.st_mode & stat.S_IWOTH), group_writable=bool(info.st_mode & stat.S_IWGRP),
                 symlink=stat.S_ISLNK(info.st_mode),
                 mtime=datetime.fromtimestamp(info.st_mtime, UTC).isoformat(timespec="seconds"))
    parent = path.rsplit("/", 1)[0] or "/"
    try:
        dir_info = ctx.root.stat(parent)
        facts["dir_world_writable"] = bool(dir_info.st_mode & stat.S_IWOTH) and not dir_info.st_mode & stat.S_ISVTX
    except OSError:
        pass
    return facts


def _keys_file(ctx: HostContext, account: Account, path: str, baseline: set[str] | None) -> Iterator[HostObservation]:
    try:
        if not ctx.root.is_file(path):
            return
        raw = ctx.root.read_bytes(path, READ)
    except OSError as exc:
        ctx.error(path, f"cannot read {path}: {exc}")
        return
    by_redis = bool(_REDIS_HEADER.match(raw))
    modes = _mode_facts(ctx, path)
    keys = 0
    for number, line in enumerate(raw.decode("utf-8", "replace").split("\n"), 1):
        if keys >= MAX_KEYS:
            ctx.error(path, f"{path}: more than {MAX_KEYS} keys, the rest were not read")
            break
        parsed = parse_key_line(line[:16384])
        if parsed is None:
            continue
        keys += 1
        blob = parsed.pop("blob")
        print_ = fingerprint(blob)
        comment = parsed["comment"][:512]
        hits = {ind.value for ind in ctx.iocs.find_in_text(comment)}
        if comment and ctx.iocs.get("key_comment", comment) is not None:
            hits.add(comment)
        facts: dict[str, Any] = {
            "user": account.name, "uid": account.uid, "root_user": account.uid == 0, "file": path,
            "legacy_file": path.endswith("authorized_keys2"), **parsed, "comment": comment,
            "fingerprint": print_ or "", "valid_blob": blob_matches_type(blob, parsed["key_type"]),
            "ioc_hits": sorted(hits), "baseline_known": baseline is not None,
            "file_written_by_redis": by_redis, "file_world_writable": bool(modes.get("world_writable")),
            "dir_world_writable": bool(modes.get("dir_world_writable")), "file_mtime": modes.get("mtime", ""),
        }
        if baseline is not None:
            facts["in_baseline"] = print_ in baseline
        yield HostObservation("authorized_key", facts, path=path, line=number,
                              key=f"{account.name}:{print_ or blob[:64]}")
    dir_path = path.rsplit("/", 1)[0]
    dir_facts = _mode_facts(ctx, dir_path)
    file_facts: dict[str, Any] = {
        "user": account.name, "uid": account.uid, "root_user": account.uid == 0, "key_count": keys,
        "file_written_by_redis": by_redis, **modes,
        "ssh_dir_mode": dir_facts.get("mode", ""), "ssh_dir_world_writable": bool(dir_facts.get("world_writable")),
        "owner_matches": modes.get("owner_uid") in (account.uid, 0),
    }
    yield HostObservation("authorized_keys_file", file_facts, path=path, key=f"{account.name}:{path}")


def _known_hosts(ctx: HostContext, account: Account) -> Iterator[HostObservation]:
    for name in ("known_hosts", "known_hosts2"):
        path = f"{account.home.rstrip('/')}/.ssh/{name}"
        try:
            if not ctx.root.is_file(path):
                continue
            text = ctx.root.read_text(path, READ)
        except OSError:
            continue
        lines = [ln for ln in text.split("\n") if ln.strip() and not ln.startswith("#")]
        hashed = sum(1 for ln in lines if ln.startswith("|1|"))
        yield HostObservation("ssh_known_hosts", {"user": account.name, "uid": account.uid, "entries": len(lines),
                                                  "hashed": hashed}, path=path, key=f"{account.name}:{path}")


def collect(ctx: HostContext) -> Iterator[HostObservation]:
    raw_baseline = ctx.options.get("authorized_keys_baseline")
    baseline = {str(f) for f in raw_baseline} if raw_baseline is not None else None
    patterns = _configured_files(ctx)
    for account in accounts(ctx):
        seen: set[str] = set()
        for pattern in patterns:
            path = _expand(pattern, account)
            if path in seen:
                continue
            seen.add(path)
            yield from _keys_file(ctx, account, path, baseline)
        yield from _known_hosts(ctx, account)
