"""Workload audit, side by side with Lynis, rkhunter and chkrootkit, on this machine and on fixture roots.

Inputs: (a) this machine; (b) fixture roots from tests/harness/hostroot.py: the clean and the hardened
base, one compromised root per plant of `tests.harness.plants.all_plants()` (its base, then the plant),
and the "all plants" roots (every plant applied to one root per base; plants that write the same
file go to a second root, and so on). Reported: wall clock and peak memory of each tool on each input,
and a coverage table: for each planted artifact, which tool reported it.

How a tool "reports" an artifact:
- cloudward: a finding whose rule id is one of the plant's own `rule_ids` on the plant's root (in the
  all-plants root: such a finding at one of the paths the plant wrote).
- a peer: one of its warnings (Lynis: `warning[]` and `suggestion[]` of its report file; rkhunter:
  `Warning:` entries of its log; chkrootkit: lines of its WARNING / INFECTED / suspicious results) is
  NEW compared with the same tool's output on the plant's base root, and names one of the paths the
  plant wrote or created (found by comparing the planted root with its base) or one of the plant's
  keywords (KEYWORDS below).

Peers see a fixture root through: chkrootkit `-r ROOT`; Lynis `--rootdir ROOT/` (undocumented, and
many of its tests still read the live system); rkhunter has no such option (1.4.6 accepts `--rootdir`
but ignores it, "deprecated"), so it runs chrooted in an overlay of the root over this machine's `/`
(the fixture's copies of /bin/true are left out, so the real tools run). Peers are slow (rkhunter
takes minutes per run), so by default they run on the base and all-plants roots and the coverage is
read off those (`--peers per-plant` runs them on every plant root as well).

No traffic leaves 127.0.0.0/8: every peer run, on this machine too, and every fixture-root run of
cloudward is inside a fresh network namespace with no interface up (`unshare --net`), so nothing
can leave even if a tool tries. Belt and braces on this machine: Lynis also runs with a profile that
turns off its repository refresh, its upgrade check and its nameserver queries, and rkhunter never
runs `--update` (WEB_CMD is /bin/false in Debian's config). cloudward's own audit of this machine
runs outside a namespace, so that it sees this machine's sockets; it sends nothing.

    python benchmarks/workload/run.py [--peers grouped|per-plant|none] [--no-live] [--no-write] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import ROOT, machine, measure, today, write_section
from tests.harness import hostroot
from tests.harness.hostroot import Plant, build_clean_root, build_hardened_root
from tests.harness.plants import all_plants

CLOUDWARD = str(ROOT / ".venv" / "bin" / "cloudward")
PEERS = ("lynis", "rkhunter", "chkrootkit")
CHEAP_PEERS = ("chkrootkit",)  # under a second a root: always run on every plant root as well
NETNS = ["unshare", "--net", "--"]  # a new network namespace: no interface up, nothing can leave

# Lynis: no `apt-get update` (refresh-repositories), no DNS TXT lookup of its latest version, no
# queries to the nameservers of /etc/resolv.conf (NETW-2704, and NETW-2705 which counts their answers),
# no `getent hosts localhost` (NAME-4408: without a ::1 line in /etc/hosts glibc asks the nameserver).
# Checked with `strace -f -e trace=connect,sendto`: no socket outside 127.0.0.0/8 and local UNIX sockets.
LYNIS_PROFILE = """\
refresh-repositories=no
skip-upgrade-test=yes
skip-test=NETW-2704
skip-test=NETW-2705
skip-test=NAME-4408
"""

# Words a peer's warning may use for an artifact besides the paths the plant wrote (matched
# case-insensitively). Generous on purpose: a peer gets the benefit of the doubt.
KEYWORDS: dict[str, tuple[str, ...]] = {
    # hardening
    "ssh_password_dropin": ("PasswordAuthentication",),
    "ssh_permit_root_login": ("PermitRootLogin", "root login"),
    "ssh_match_password": ("PasswordAuthentication", "Match "),
    "ssh_empty_passwords": ("PermitEmptyPasswords", "empty password"),
    "account_extra_uid0": ("toor", "uid 0", "uid-0", "root equivalent", "AUTH-9204"),
    "account_empty_password": ("backup2", "empty password", "no password", "password set", "AUTH-9283"),
    "sudoers_nopasswd_all": ("NOPASSWD", "sudoers"),
    "path_world_writable": ("/opt/tools", "world writable", "world-writable"),
    "redis_open": ("redis", "DBS-1884", "protected-mode"),
    "redis_weak_password": ("redis", "requirepass", "DBS-1884"),
    "docker_daemon_json_tcp": ("daemon.json", "2375", "CONT-"),
    "docker_unit_tcp": ("docker.service", "dockerd", "2375", "CONT-"),
    "docker_socket_mode": ("docker.socket", "docker.sock", "CONT-"),
    "kubelet_anonymous": ("kubelet", "anonymous"),
    "kubelet_read_only_port": ("kubelet", "10255"),
    "etcd_open": ("etcd", "2379"),
    "suid_in_tmp": ("suid", "setuid", "SUID"),
    "suid_unowned": ("suid", "setuid", "SUID"),
    # persistence
    "ld-so-preload-processhider": ("ld.so.preload", "preload", "processhider"),
    "cron-curl-pipe-sh": ("cron",),
    "cron-base64-bash": ("cron", "base64"),
    "cron-written-by-redis": ("cron", "REDIS0009"),
    "systemd-unit-from-tmp": ("dbus-helper", "X11-cache"),
    "systemd-unpackaged-miner": ("xmrig", "miner"),
    "root-authorized-keys-world-writable": ("authorized_keys",),
    "root-authorized-keys-by-redis": ("authorized_keys",),
    "history-linked-to-dev-null": ("history",),
    "history-dropper-and-log-wipe": ("history",),
    "history-disabled-in-bashrc": ("bashrc", "HISTFILE"),
    "diamorphine-modules-load": ("diamorphine",),
    "kernel-module-in-tmp": ("dia.ko", "kernel module", "LKM"),
    # artifacts
    "xmrig-config": ("xmrig", "miner", "Rocke"),
    "dockerd-in-tmp": (".dockerd",),
    "kworker-binary": ("kworker",),
    "hidden-sshd": (".sshd",),
    "agent-uninstall-dropper": ("aegis", "aliyun", "kinsing", "kdevtmpfsi", ".ICE-unix"),
    "key-dropper": ("authorized_keys", "setup.sh"),
    "credential-stealer": ("teamtnt", "credentials", "/dev/shm/.s"),
    "aegis-leftover": ("aegis",),
    "ssm-agent-masked": ("amazon-ssm-agent", "ssm"),
    "tmate-launcher": ("tmate",),
    "miner-binary": ("xmrig", "miner", "sysupdate", "Rocke"),
    "irc-bot": ("tsunami", "kaiten", "irc", "/tmp/.b"),
    "masscan-dropped": ("masscan", "/root/.m"),
    "pool-url-in-cron": ("stratum", "miner", "cron", "sysupdate"),
    # logs
    "auth-log-password-guessed": ("203.0.113.77", "failed password", "brute", "failed login"),
    "auth-log-backdoor-account": ("sysd", "useradd", "uid 0", "uid=0"),
}


@dataclass
class Run:
    tool: str
    input: str
    seconds: float
    peak_rss_mib: float
    returncode: int
    items: list[str] = field(default_factory=list)  # normalized warnings (peers) or "rule_id path" (cloudward)
    findings: list[dict] = field(default_factory=list)  # cloudward only
    error: str = ""


@dataclass
class FixtureRoot:
    name: str
    path: Path
    base: str  # "clean" or "hardened": the root its peers' output is compared with
    plants: list[Plant]
    written: dict[str, set[str]]  # plant name -> inner paths it wrote or created


# ----------------------------------------------------------------------------------------------- roots

def _snapshot(root: Path) -> dict[str, tuple]:
    """inner path -> (kind, mode, content digest or link target), for every entry under root."""
    entries: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = Path(dirpath) / name
            inner = "/" + str(full.relative_to(root))
            st = full.lstat()
            if full.is_symlink():
                entries[inner] = ("l", os.readlink(full))
            elif full.is_dir():
                entries[inner] = ("d", st.st_mode)
            else:
                entries[inner] = ("f", st.st_mode, st.st_size, full.read_bytes())
    return entries


def _written(base: dict[str, tuple], planted: Path) -> set[str]:
    after = _snapshot(planted)
    return {inner for inner, entry in after.items() if base.get(inner) != entry} | {
        inner for inner in base if inner not in after}


def build_roots(work: Path, only: set[str] | None = None
                ) -> tuple[dict[str, FixtureRoot], list[FixtureRoot], list[FixtureRoot]]:
    """The two bases, one root per plant, and the all-plants roots (grouped without file conflicts)."""
    bases = {"clean": build_clean_root, "hardened": build_hardened_root}
    base_roots: dict[str, FixtureRoot] = {}
    snapshots: dict[str, dict[str, tuple]] = {}
    for name, build in bases.items():
        path = build(work / name)
        base_roots[name] = FixtureRoot(name, path, name, [], {})
        snapshots[name] = _snapshot(path)
    plant_roots: list[FixtureRoot] = []
    for plant in all_plants():
        if only and plant.name not in only:
            continue
        base = plant.base if plant.base in bases else "clean"
        path = bases[base](work / "plant" / plant.name)
        plant.apply(path)
        plant_roots.append(FixtureRoot(plant.name, path, base, [plant], {plant.name: _written(snapshots[base], path)}))
    # All plants of one base in one root; a plant that writes a path another one already wrote
    # starts (or joins) the next root of that base.
    groups: list[tuple[str, list[FixtureRoot]]] = []
    for pr in plant_roots:
        paths = pr.written[pr.name]
        for base, members in groups:
            taken = set().union(*(m.written[m.name] for m in members))
            # A hardened-base plant undoes part of the hardening; two of them in one root could mask each
            # other (a Match block that re-enables passwords weakens nothing once a drop-in enabled them).
            # A plant that writes /etc/ld.so.preload makes the loader complain in every program the peers
            # run in that root (the stand-in is text, not a library): it gets a root of its own too.
            alone = "/etc/ld.so.preload" in paths | taken
            if base == pr.base and base == "clean" and not alone and not (
                    _with_parents(paths) & _with_parents(taken)) - _dirs_of_base(snapshots[base]):
                members.append(pr)
                break
        else:
            groups.append((pr.base, [pr]))
    group_roots: list[FixtureRoot] = []
    counters: dict[str, int] = {}
    for base, members in groups:
        counters[base] = counters.get(base, 0) + 1
        name = f"all-plants-{base}-{counters[base]}"
        path = bases[base](work / name)
        for m in members:
            m.plants[0].apply(path)
        group_roots.append(FixtureRoot(name, path, base, [m.plants[0] for m in members],
                                       {m.name: m.written[m.name] for m in members}))
    return base_roots, plant_roots, group_roots


def _with_parents(paths: set[str]) -> set[str]:
    out = set(paths)
    for p in paths:
        out.update(str(parent) for parent in Path(p).parents)
    return out


def _dirs_of_base(snapshot: dict[str, tuple]) -> set[str]:
    return {"/"} | {inner for inner, entry in snapshot.items() if entry[0] == "d"}


# ----------------------------------------------------------------------------------------------- tools

def run_cloudward(target: Path | None, label: str, out: Path) -> Run:
    report = out / f"cloudward-{label}.json"
    argv = [CLOUDWARD, "host", "audit", str(target or "/"), "--no-store", "-f", "json", "-o", str(report)]
    m = measure(argv if target is None else NETNS + argv)
    run = Run("cloudward", label, m.seconds, m.peak_rss_mib, m.returncode)
    if m.returncode not in (0, 1) or not report.exists():
        run.error = (m.stderr or m.stdout)[-500:]
        return run
    run.findings = json.loads(report.read_text())["findings"]
    run.items = sorted({f"{f['rule_id']} {(f.get('location') or {}).get('path', '')}" for f in run.findings})
    return run


# What every program prints in a root whose /etc/ld.so.preload names a stand-in (text, not a library).
_PRELOAD_NOISE = re.compile(
    r"ERROR: ld\.so: object '[^']*' from /etc/ld\.so\.preload cannot be preloaded[^\n]*?ignored\.")


def _normalize(text: str, target: Path | None) -> str:
    text = _PRELOAD_NOISE.sub("", text)
    if target is not None:
        text = text.replace(str(target).rstrip("/"), "")
    return re.sub(r"\s+", " ", text).strip()


def run_lynis(target: Path | None, label: str, out: Path) -> Run:
    profile = out / "bench.prf"
    profile.write_text(LYNIS_PROFILE)
    report, log = out / f"lynis-{label}.dat", out / f"lynis-{label}.log"
    argv = ["lynis", "audit", "system", "--quick", "--no-colors", "--profile", str(profile),
            "--report-file", str(report), "--log-file", str(log)]
    if target is not None:
        argv = [*argv, "--rootdir", f"{target}/"]
    m = measure(NETNS + argv, timeout=1800)
    run = Run("lynis", label, m.seconds, m.peak_rss_mib, m.returncode)
    if not report.exists():
        run.error = (m.stderr or m.stdout)[-500:]
        return run
    for line in report.read_text(errors="replace").splitlines():
        kind, _, value = line.partition("[]=")
        if kind in ("warning", "suggestion"):
            run.items.append(_normalize(f"{kind[0].upper()} {value}", target))
    return run


@contextmanager
def overlay(target: Path, work: Path) -> Iterator[Path]:
    """`target` laid over this machine's / (without the fixture's /bin/true stand-ins of real
    programs), writable through a scratch upper layer, with /proc, /sys and /dev bound in."""
    # Every layer on a tmpfs of its own: overlayfs refuses layers that lie inside another one (ELOOP),
    # and / is a layer.
    work.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1g,mode=0700", "tmpfs", str(work)], check=True)
    mounts: list[Path] = [work]
    lower, upper, scratch, merged = (work / n for n in ("lower", "upper", "scratch", "merged"))
    try:
        for d in (upper, scratch, merged):
            d.mkdir(parents=True)
        stand_ins = set(hostroot._BINARIES)
        shutil.copytree(target, lower, symlinks=True, ignore=lambda d, names: [
            n for n in names if str((Path(d) / n).relative_to(target)) in stand_ins])
        # This machine is merged-/usr (/bin -> usr/bin ...): a real /bin in the top layer would hide the
        # link and the programs behind it, so the fixture's /bin, /lib ... go where the links point.
        for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
            if Path("/", name).is_symlink() and (lower / name).is_dir() and not (lower / name).is_symlink():
                shutil.copytree(lower / name, lower / os.readlink(Path("/", name)), symlinks=True,
                                dirs_exist_ok=True)
                shutil.rmtree(lower / name)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={lower}:/,upperdir={upper},workdir={scratch}", str(merged)], check=True)
        mounts.append(merged)
        for special in ("proc", "sys", "dev"):
            subprocess.run(["mount", "--bind", f"/{special}", str(merged / special)], check=True)
            mounts.append(merged / special)
        if (lower / "dev/shm").is_dir():  # the fixture's /dev/shm, not this machine's
            subprocess.run(["mount", "--bind", str(lower / "dev/shm"), str(merged / "dev/shm")], check=True)
            mounts.append(merged / "dev/shm")
        yield merged
    finally:
        for mount in reversed(mounts):
            subprocess.run(["umount", "-l", str(mount)], check=False)


def _rkhunter_items(log_text: str, target: Path | None) -> list[str]:
    items: list[str] = []
    current: list[str] | None = None
    for raw in log_text.splitlines():
        stamped = re.match(r"^\[\d\d:\d\d:\d\d\] ?(.*)$", raw)
        body = stamped.group(1) if stamped else raw
        if body.startswith("Warning:"):
            if current:
                items.append(" ".join(current))
            current = [body]
        elif current is not None and ((not stamped and body.strip()) or body.startswith("      ")):
            current.append(body.strip())
        elif current is not None:
            items.append(" ".join(current))
            current = None
    if current:
        items.append(" ".join(current))
    return [_normalize(i, target) for i in items]


def run_rkhunter(target: Path | None, label: str, out: Path) -> Run:
    log = out / f"rkhunter-{label}.log"
    argv = ["rkhunter", "--check", "--sk", "--nocolors", "--nomow", "--noappend-log"]
    if target is None:
        m = measure([*NETNS, *argv, "--logfile", str(log)], timeout=3600)
        text = log.read_text(errors="replace") if log.exists() else ""
    else:
        with overlay(target, out / f"overlay-{label}") as merged:
            m = measure([*NETNS, "chroot", str(merged), *argv, "--logfile", "/var/log/rkhunter-bench.log"],
                        timeout=3600)
            inner_log = out / f"overlay-{label}" / "upper" / "var/log/rkhunter-bench.log"
            text = inner_log.read_text(errors="replace") if inner_log.exists() else ""
            log.write_text(text)
        (out / f"overlay-{label}").rmdir()
    run = Run("rkhunter", label, m.seconds, m.peak_rss_mib, m.returncode)
    if not text:
        run.error = (m.stderr or m.stdout)[-500:]
    # The overlay root is this machine with the fixture on top: drop nothing, the base run has the same noise.
    run.items = _rkhunter_items(text, None)
    return run


_CHK_START = re.compile(r"^(Checking `|Searching for )")


def _chkrootkit_items(stdout: str, target: Path | None) -> list[str]:
    """Each line of a test whose result says INFECTED / WARNING / suspicious, with the test's name."""
    items: list[str] = []
    test = ""
    flagged = False
    for line in stdout.splitlines():
        if _CHK_START.match(line):
            test = re.split(r"\.\.\.|'", line)[0].strip() if "`" not in line else line.split("'")[0] + "'"
            result = line.rsplit("  ", 1)[-1].strip() if "  " in line else ""
            flagged = bool(re.search(r"INFECTED|WARNING|suspicious|Vulnerable|found", result)) and \
                "not found" not in result and "nothing found" not in result
            if flagged:
                items.append(_normalize(f"{test}: {result}", target))
            continue
        if not line.strip():
            continue
        if flagged or re.search(r"INFECTED|WARNING|suspicious", line):
            items.append(_normalize(f"{test}: {line}", target))
    return items


def run_chkrootkit(target: Path | None, label: str, out: Path) -> Run:
    argv = [*NETNS, "chkrootkit"] if target is None else [*NETNS, "chkrootkit", "-r", str(target)]
    m = measure(argv, timeout=1800)
    (out / f"chkrootkit-{label}.out").write_text(m.stdout + m.stderr)
    run = Run("chkrootkit", label, m.seconds, m.peak_rss_mib, m.returncode)
    run.items = _chkrootkit_items(m.stdout, target)
    if not m.stdout:
        run.error = m.stderr[-500:]
    return run


RUNNERS = {"cloudward": run_cloudward, "lynis": run_lynis, "rkhunter": run_rkhunter, "chkrootkit": run_chkrootkit}


# ----------------------------------------------------------------------------------------------- judging

def _mentions(item: str, plant: Plant, written: set[str]) -> bool:
    low = item.lower()
    aliases = {f"/usr{p}" for p in written if p.split("/")[1] in ("bin", "sbin", "lib")}  # merged /usr
    for path in written | aliases:
        if re.search(re.escape(path.lower()) + r"(?![\w.-])", low):
            return True
    return any(word.lower() in low for word in KEYWORDS.get(plant.name, ()))


def _created_dirs(written: set[str], base_dirs: set[str]) -> set[str]:
    """The paths a plant wrote plus the directories it created (a peer may name only the folder)."""
    out = set(written)
    for p in written:
        for parent in Path(p).parents:
            if str(parent) not in base_dirs:
                out.add(str(parent))
    return out


def peer_reported(run: Run | None, base_run: Run | None, plant: Plant, written: set[str],
                  neighbours: set[str] | None = None) -> list[str]:
    """New warnings that name the plant's paths, or its keywords but no path of another plant in the root."""
    if run is None or base_run is None:
        return []
    new = [i for i in dict.fromkeys(run.items) if i not in set(base_run.items)]
    nobody = Plant("", lambda _: None, (), "")
    return [i for i in new if _mentions(i, nobody, written)
            or (_mentions(i, plant, set()) and not _mentions(i, nobody, (neighbours or set()) - written))]


def cloudward_reported(run: Run | None, plant: Plant, written: set[str] | None) -> list[str]:
    if run is None:
        return []
    hits = [f for f in run.findings if f["rule_id"] in plant.rule_ids]
    if written is not None:  # a root with other plants: the finding must be at one of this plant's paths
        hits = [f for f in hits if any(p in json.dumps(f.get("location")) + json.dumps(f.get("evidence"))
                                       for p in written)]
    return sorted({f["rule_id"] for f in hits})


# ----------------------------------------------------------------------------------------------- report

def _fmt_s(run: Run | None) -> str:
    if run is None:
        return "-"
    if run.error and not run.items and run.tool != "cloudward":
        return f"{run.seconds:.1f} s (failed)"
    return f"{run.seconds:.1f} s / {run.peak_rss_mib:.0f} MiB"


def _cell(hits: list[str]) -> str:
    return "yes" if hits else "-"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", choices=("grouped", "per-plant", "none"), default="grouped")
    parser.add_argument("--no-live", action="store_true", help="skip the audit of this machine")
    parser.add_argument("--no-write", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (roots, peer logs)")
    parser.add_argument("--plants", help="comma-separated plant names (default: all)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: the peers need it, and rkhunter runs chrooted in an overlay mount")
    peers = [] if args.peers == "none" else [p for p in PEERS if shutil.which(p)]
    if args.peers != "none" and len(peers) < len(PEERS):
        raise SystemExit("missing peers: run benchmarks/workload/setup")
    work = Path(tempfile.mkdtemp(prefix="cloudward-bench-workload-"))
    out = work / "out"
    out.mkdir()
    log = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    runs: dict[tuple[str, str], Run] = {}

    def go(tool: str, target: Path | None, label: str) -> Run:
        run = RUNNERS[tool](target, label.replace(" ", "-"), out)  # the label names its output files
        run.input = label
        runs[(tool, label)] = run
        count = len(run.findings) if tool == "cloudward" else len(run.items)
        log(f"{tool:10} {label:40} {run.seconds:7.1f} s {run.peak_rss_mib:5.0f} MiB {count} items"
            + (f" ERROR {run.error}" if run.error else ""))
        return run

    if not args.no_live:
        if "rkhunter" in peers:  # its file-properties baseline of this machine, as its docs ask
            subprocess.run(["rkhunter", "--propupd", "--nocolors", "--sk"], capture_output=True, check=False)
        for tool in ["cloudward", *peers]:
            go(tool, None, "this machine")
    # Built after the live audits, which would otherwise find the planted artifacts under /tmp.
    base_roots, plant_roots, group_roots = build_roots(work, set(args.plants.split(",")) if args.plants else None)
    log(f"roots: 2 bases, {len(plant_roots)} plants, {len(group_roots)} all-plants roots in {work}")
    for fr in [*base_roots.values(), *group_roots]:
        for tool in ["cloudward", *peers]:
            go(tool, fr.path, fr.name)
    for fr in plant_roots:
        go("cloudward", fr.path, fr.name)
        for tool in peers:
            if args.peers == "per-plant" or tool in CHEAP_PEERS:
                go(tool, fr.path, fr.name)

    body = report(base_roots, plant_roots, group_roots, runs, peers, args)
    print(body)
    if not args.no_write:
        write_section("workload", body)
    if args.keep:
        log(f"kept {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


def report(base_roots: dict[str, FixtureRoot], plant_roots: list[FixtureRoot], group_roots: list[FixtureRoot],
           runs: dict[tuple[str, str], Run], peers: list[str], args: argparse.Namespace) -> str:
    tools = ["cloudward", *peers]
    base_dirs = {name: _dirs_of_base(_snapshot(fr.path)) for name, fr in base_roots.items()}
    group_of = {p.name: g for g in group_roots for p in g.plants}

    # Coverage, one row per plant.
    rows, misses, counts = [], [], {t: 0 for t in tools}
    counts["cloudward (all-plants root)"] = 0
    for fr in plant_roots:
        plant = fr.plants[0]
        written = _created_dirs(fr.written[plant.name], base_dirs[fr.base])
        cw = cloudward_reported(runs.get(("cloudward", fr.name)), plant, None)
        g = group_of[plant.name]
        cw_all = cloudward_reported(runs.get(("cloudward", g.name)), plant, fr.written[plant.name])
        cells = [", ".join(f"`{r}`" for r in cw) or "**missed**", f"{'yes' if cw_all else '**no**'} ({g.name[11:]})"]
        counts["cloudward"] += bool(cw)
        counts["cloudward (all-plants root)"] += bool(cw_all)
        if not cw:
            got = [f["rule_id"] for f in runs[("cloudward", fr.name)].findings]
            base_got = [f["rule_id"] for f in runs[("cloudward", fr.base)].findings]
            misses.append(f"- `{plant.name}` ({plant.description}; base {fr.base}): expected one of "
                          f"{', '.join(f'`{r}`' for r in plant.rule_ids)}; cloudward returned "
                          f"{', '.join(sorted(set(got) - set(base_got))) or 'nothing beyond the base root'}")
        neighbours = set().union(*(_created_dirs(w, base_dirs[g.base]) for w in g.written.values()))
        for tool in peers:
            if args.peers == "per-plant" or tool in CHEAP_PEERS:
                hits = peer_reported(runs.get((tool, fr.name)), runs.get((tool, fr.base)), plant, written)
            else:
                hits = peer_reported(runs.get((tool, g.name)), runs.get((tool, g.base)), plant, written, neighbours)
            counts[tool] += bool(hits)
            cells.append(_cell(hits) if not hits else "yes: " + "; ".join(
                f"`{h[:110].replace('|', '/')}`" for h in hits[:2]))
        rows.append(f"| `{plant.name}` | {plant.description.replace('|', chr(92) + '|')} | {' | '.join(cells)} |")
    n = len(plant_roots)

    # Timing.
    def t(tool: str, label: str) -> Run | None:
        return runs.get((tool, label))

    inputs = ([] if args.no_live else ["this machine"]) + ["clean", "hardened"] + [g.name for g in group_roots]
    timing = []
    for label in inputs:
        cw = t("cloudward", label)
        cells = [_fmt_s(t(tool, label)) for tool in tools]
        ly = t("lynis", label)
        ratio = f"{ly.seconds / cw.seconds:.1f}x" if ly and cw and cw.seconds else "-"
        timing.append(f"| {label} | {' | '.join(cells)} | {ratio} |")
    per_plant = [runs[("cloudward", fr.name)].seconds for fr in plant_roots]

    # Clean roots.
    clean_rows = []
    for name in ("clean", "hardened", *([] if args.no_live else ["this machine"])):
        cw = t("cloudward", name)
        sev = {s: sum(f["severity"] == s for f in cw.findings) for s in ("critical", "high", "medium", "low", "info")}
        highs = sorted({f["rule_id"] for f in cw.findings if f["severity"] in ("critical", "high")})
        peer_cells = []
        for tool in peers:
            run = t(tool, name)
            if run is None:
                peer_cells.append("-")
            elif tool == "lynis":
                w = sum(i.startswith("W ") for i in run.items)
                peer_cells.append(f"{w} warnings, {len(run.items) - w} suggestions")
            else:
                peer_cells.append(f"{len(run.items)} warning lines")
        high = f"{sev['high']}" + (f" ({', '.join(highs)})" if highs else "")
        clean_rows.append(f"| {name} | {sev['critical']} | {high} "
                          f"| {sev['medium']} / {sev['low']} / {sev['info']} | {' | '.join(peer_cells)} |")
    live = t("cloudward", "this machine")
    live_line = ""
    if live:
        def scratch(f: dict) -> bool:
            path = str((f.get("location") or {}).get("path", ""))
            return path.startswith(("/tmp/", "/var/tmp/", "/dev/shm/"))

        rest = [f for f in live.findings if not scratch(f)]
        crit_high = [f for f in rest if f["severity"] in ("critical", "high")]
        tmp = [f for f in live.findings if scratch(f)]
        live_line = (
            f"On this machine cloudward reported {len(live.findings)} findings "
            f"({sum(f['severity'] == 'critical' for f in live.findings)} critical, "
            f"{sum(f['severity'] == 'high' for f in live.findings)} high). {len(tmp)} of them "
            f"({sum(f['severity'] in ('critical', 'high') for f in tmp)} critical/high) are files in /tmp, /var/tmp "
            "and /dev/shm: test fixtures and scratch files that other test runs and helpers on this shared machine "
            "left there (planted roots of the test suite among them). Outside those directories: "
            f"{len(rest)} findings, {sum(f['severity'] == 'critical' for f in rest)} critical and "
            f"{sum(f['severity'] == 'high' for f in rest)} high"
            + (": " + "; ".join(sorted({f"`{f['rule_id']}` {(f.get('location') or {}).get('path', '')}"
                                         for f in crit_high})) if crit_high else "") + ".")

    headline = []
    for label in (["this machine"] if not args.no_live else []) + [group_roots[0].name]:
        cw, ly = t("cloudward", label), t("lynis", label)
        if cw and ly:
            headline.append(f"{label}: Lynis {ly.seconds:.1f} s / cloudward {cw.seconds:.1f} s = "
                            f"**{ly.seconds / cw.seconds:.1f}x**")
    peer_mode = ("every plant root" if args.peers == "per-plant" else
                 "every plant root for chkrootkit; the all-plants roots for Lynis and rkhunter, which take "
                 "half a minute and two minutes a run")
    versions = ", ".join(_version(p) for p in peers)
    lines = [
        f"## Workload audit vs Lynis, rkhunter and chkrootkit ({today()})",
        "",
        f"Machine: {machine()}. `python benchmarks/workload/run.py` (`make bench`; peers from "
        f"`benchmarks/workload/setup`: {versions or 'not run'}).",
        "",
        f"Inputs: this machine; the clean and the hardened fixture root of `tests/harness/hostroot.py`; "
        f"{n} compromised roots, one per plant of `tests/harness/plants/` (its base root + the plant); and "
        f"{len(group_roots)} all-plants roots (every plant in one root per base; plants that write the same file "
        "are spread over more roots, each hardened-base plant and the ld.so.preload plant get one of their own: "
        f"{', '.join(f'`{g.name}` {len(g.plants)}' for g in group_roots)}).",
        "",
        "Commands: `cloudward host audit ROOT --no-store -f json` (on this machine `/`, with live processes); "
        "`lynis audit system --quick --no-colors --profile bench.prf [--rootdir ROOT/]`; "
        "`rkhunter --check --sk --nocolors --nomow` (after `--propupd` on this machine); `chkrootkit [-r ROOT]`. "
        "Lynis' profile turns off its repository refresh, upgrade check and nameserver queries (NETW-2704/2705, "
        "NAME-4408). "
        "rkhunter 1.4.6 has no offline-root option (`--rootdir` is accepted and ignored as deprecated), so on a "
        "fixture root it runs chrooted in an overlay of the root on top of this machine's `/` (the fixture's "
        "/bin/true stand-ins for real programs left out). Lynis' `--rootdir` is undocumented and partial: many "
        "of its tests still read the live /etc and processes. Fixture-root runs of every tool are inside "
        "`unshare --net` (no network at all).",
        "",
        "### Wall clock and peak memory",
        "",
        f"| input | {' | '.join(tools)} | Lynis / cloudward |",
        f"|---|{'---:|' * len(tools)}---:|",
        *timing,
        "",
        f"cloudward on the {n} single-plant roots: median {statistics.median(per_plant):.2f} s, "
        f"max {max(per_plant):.2f} s.",
        "",
        "Ratio against Lynis (goal: at least 5x): " + "; ".join(headline) + ".",
        "",
        "### Clean roots",
        "",
        f"| root | cloudward critical | cloudward high | cloudward medium / low / info | {' | '.join(peers)} |",
        f"|---|---:|---|---|{'---|' * len(peers)}",
        *clean_rows,
        "",
        live_line,
        "",
        "### Coverage of the planted artifacts",
        "",
        f"cloudward: {counts['cloudward']}/{n} on the single-plant roots, "
        f"{counts['cloudward (all-plants root)']}/{n} in the all-plants roots; "
        + ", ".join(f"{p}: {counts[p]}/{n}" for p in peers) + f" (peers judged on {peer_mode}).",
        "",
        "Method. cloudward counts only if a finding of one of the plant's own rule ids appears (in an "
        "all-plants root: at one of the paths the plant wrote). A peer counts if one of its warnings is new "
        "compared with its output on the plant's base root (clean or hardened) and names a path the plant wrote "
        "or a directory it created, or one of the plant's keywords (`KEYWORDS` in the script: e.g. "
        "`ld.so.preload`, `diamorphine`, `authorized_keys`, `PermitRootLogin`, `toor`, `redis`). Lynis: "
        "`warning[]` and `suggestion[]` lines of its report file (W/S); rkhunter: `Warning:` entries of its "
        "log; chkrootkit: the lines of any test that says WARNING, INFECTED or suspicious. Keywords are "
        "generous (a whole family like `cron` or `redis`). In an all-plants root a warning that names a path of "
        "another plant there is credited to that plant only, not through a keyword; the loader's complaint "
        "about the stand-in in /etc/ld.so.preload, which every program in that root prints, is removed from "
        "the peers' text before comparing.",
        "",
        f"| plant | artifact | cloudward (plant root) | cloudward (all-plants root) | {' | '.join(peers)} |",
        f"|---|---|---|---|{'---|' * len(peers)}",
        *rows,
        "",
        "Missed by cloudward: " + ("none." if not misses else ""),
        *misses,
    ]
    return "\n".join(lines)


def _version(tool: str) -> str:
    argv = {"lynis": ["lynis", "--version"], "rkhunter": ["rkhunter", "--version"], "chkrootkit": ["chkrootkit", "-V"]}
    try:
        done = subprocess.run(argv[tool], capture_output=True, text=True, timeout=30)
        text = done.stdout + done.stderr
    except (OSError, subprocess.TimeoutExpired):
        return tool
    found = re.search(r"(\d+\.\d+(?:\.\d+)?)", text)
    return f"{tool} {found.group(1)}" if found else tool


if __name__ == "__main__":
    main()
