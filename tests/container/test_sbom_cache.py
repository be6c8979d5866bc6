"""`image sbom` re-scans: the second run of the same command on an unchanged image is answered from
the SBOM cache by `cli/image_replay.py` (no typer, no analysis, no cyclonedx-python-lib), and
anything that changed what the document would say is not.

The first run of each command goes through typer in-process (CliRunner), which writes the cache;
the re-scans run `python -m cloudward` as a user would, with `-X importtime`, so a test can see
which modules a run loaded: a replayed run never loads typer.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from typer.testing import CliRunner

from cloudward.cli.app import app
from cloudward.engines.osv.db import update
from tests.harness.images import make_tar, write_docker_archive

OSV = Path(__file__).parents[1] / "engines" / "data" / "osv"
OS_RELEASE = 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\nID=debian\n'
SITE = "usr/local/lib/python3.11/site-packages"


def _dpkg(widget: str) -> str:
    return (f"Package: libwidget2\nStatus: install ok installed\nArchitecture: amd64\nSource: widget\n"
            f"Version: {widget}\nMaintainer: T <t@example.invalid>\nDescription: widgets\n\n"
            "Package: base-files\nStatus: install ok installed\nArchitecture: amd64\nVersion: 12.4+deb12u5\n"
            "Maintainer: T <t@example.invalid>\nDescription: base system files\n")


def build_image(out: Path, widget: str = "1:2.4-3", requests: str = "2.19.0") -> Path:
    """Two layers: the OS (dpkg status, os-release), then a Python package with a licence."""
    base = make_tar([("etc/os-release", "file", OS_RELEASE), ("var/lib/dpkg/status", "file", _dpkg(widget))])
    app_layer = make_tar([(f"{SITE}/requests-{requests}.dist-info/METADATA", "file",
                           f"Metadata-Version: 2.1\nName: requests\nVersion: {requests}\nLicense: Apache-2.0\n")])
    return write_docker_archive(out, [base, app_layer], tag="cwtest/sbom:1")


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private data dir named by a cloudward.toml, and no CLOUDWARD_* variables from outside."""
    for name in [n for n in os.environ if n.startswith("CLOUDWARD_")]:
        monkeypatch.delenv(name)
    (tmp_path / "data").mkdir()
    (tmp_path / "cloudward.toml").write_text(f'data_dir = "{tmp_path / "data"}"\n')
    yield tmp_path


def first(home: Path, *args: str) -> str:
    """A run through typer (which analyses, then writes the cache); returns stderr."""
    result = CliRunner().invoke(app, ["image", "sbom", *args, "--config", str(home / "cloudward.toml")])
    assert result.exit_code == 0, result.output
    return result.stderr


def again(home: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], bool]:
    """A run as a user runs it; also says whether it was replayed (typer never imported)."""
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "cloudward", "image", "sbom", *args,
                           "--config", str(home / "cloudward.toml")],
                          capture_output=True, text=True, timeout=120, check=False, cwd=home)
    loaded = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    messages = "\n".join(line for line in done.stderr.splitlines() if not line.startswith("import time:"))
    done.stderr = messages
    return done, not any(m == "typer" or m.startswith(("cyclonedx", "pydantic")) for m in loaded)


def stable(doc: dict[str, Any]) -> dict[str, Any]:
    """The document without what must differ between runs."""
    doc = json.loads(json.dumps(doc))
    doc.pop("serialNumber", None)
    doc.get("metadata", {}).pop("timestamp", None)
    doc.pop("documentNamespace", None)
    doc.get("creationInfo", {}).pop("created", None)
    return doc


def test_a_rescan_is_replayed_equal_but_for_its_serial_and_time(home: Path) -> None:
    image = build_image(home / "app.tar")
    out1, out2, out3 = home / "one.json", home / "two.json", home / "three.json"
    stderr = first(home, str(image), "-o", str(out1))
    assert stderr == f"wrote cyclonedx SBOM of {image} (3 packages) to {out1}\n"
    done, replayed = again(home, str(image), "-o", str(out2))
    assert done.returncode == 0, done.stderr
    assert replayed
    assert done.stderr == f"wrote cyclonedx SBOM of {image} (3 packages) to {out2}"
    done, replayed = again(home, str(image), "-f", "cyclonedx", "--output", str(out3))
    assert replayed and done.returncode == 0
    texts = [p.read_text() for p in (out1, out2, out3)]
    validator = JsonStrictValidator(SchemaVersion.V1_6)
    for text in texts:
        assert validator.validate_str(text) is None
    docs = [json.loads(t) for t in texts]
    assert stable(docs[0]) == stable(docs[1]) == stable(docs[2])
    assert len({d["serialNumber"] for d in docs}) == 3
    for doc in docs:
        assert doc["metadata"]["timestamp"].endswith("+00:00") and len(doc["metadata"]["timestamp"]) == 25
    assert {c["name"] for c in docs[1]["components"]} >= {"libwidget2", "requests"}


def test_spdx_to_stdout_is_replayed_too(home: Path) -> None:
    image = build_image(home / "app.tar")
    result = CliRunner().invoke(app, ["image", "sbom", str(image), "--format", "spdx-json",
                                      "--config", str(home / "cloudward.toml")])
    assert result.exit_code == 0, result.output
    done, replayed = again(home, str(image), "--format=spdx-json")
    assert replayed and done.returncode == 0 and done.stderr == ""
    docs = [json.loads(result.stdout), json.loads(done.stdout)]
    assert stable(docs[0]) == stable(docs[1])
    assert docs[0]["documentNamespace"] != docs[1]["documentNamespace"]
    assert docs[1]["creationInfo"]["created"].endswith("Z")


def test_a_changed_layer_is_not_served_from_the_cache(home: Path) -> None:
    image = build_image(home / "app.tar")
    first(home, str(image), "-o", str(home / "old.json"))
    build_image(image, requests="2.32.3")  # the same path, one layer different
    done, replayed = again(home, str(image), "-o", str(home / "new.json"))
    assert done.returncode == 0, done.stderr
    assert not replayed
    versions = {c["name"]: c["version"] for c in json.loads((home / "new.json").read_text())["components"]}
    assert versions["requests"] == "2.32.3"
    done, replayed = again(home, str(image), "-o", str(home / "newer.json"))  # and now that one is known
    assert replayed and stable(json.loads((home / "newer.json").read_text())) == stable(
        json.loads((home / "new.json").read_text()))


def test_a_changed_option_or_advisory_database_is_not_served_from_the_cache(home: Path) -> None:
    image = build_image(home / "app.tar")
    first(home, str(image), "-o", str(home / "plain.json"))
    sources = home / "osv"
    sources.mkdir()
    (sources / "debian.json").write_text((OSV / "debian.json").read_text())
    update([str(sources)], None, home / "data" / "advisories.db")
    done, replayed = again(home, str(image), "--vulns", "-o", str(home / "vulns.json"))
    assert done.returncode == 0, done.stderr
    assert not replayed
    assert "DSA-TEST-0001" in {v["id"] for v in json.loads((home / "vulns.json").read_text())["vulnerabilities"]}
    done, replayed = again(home, str(image), "--vulns", "-o", str(home / "vulns2.json"))
    assert replayed
    # the database changes (the advisory is gone): the document must follow it
    (sources / "debian.json").write_text(json.dumps([r for r in json.loads((OSV / "debian.json").read_text())
                                                     if r["id"] != "DSA-TEST-0001"]))
    update([str(sources)], None, home / "data" / "advisories.db")
    done, replayed = again(home, str(image), "--vulns", "-o", str(home / "vulns3.json"))
    assert done.returncode == 0 and not replayed
    assert "DSA-TEST-0001" not in {v["id"] for v in json.loads((home / "vulns3.json").read_text())["vulnerabilities"]}
    # the plain document stayed plain
    assert "vulnerabilities" not in json.loads((home / "plain.json").read_text())


def test_a_damaged_entry_is_ignored_with_a_warning_and_rebuilt(home: Path) -> None:
    image = build_image(home / "app.tar")
    first(home, str(image), "-o", str(home / "one.json"))
    (entry,) = (home / "data" / "cache" / "sboms").glob("*.sbom")
    data = bytearray(entry.read_bytes())
    data[-40:-30] = b"0123456789"  # inside the document: its checksum no longer holds
    entry.write_bytes(bytes(data))
    done, replayed = again(home, str(image), "-o", str(home / "two.json"))
    assert done.returncode == 0, done.stderr
    assert not replayed
    assert "warning: ignoring a damaged SBOM cache entry" in done.stderr and "checksum" in done.stderr
    assert "0123456789" not in (home / "two.json").read_text()
    assert stable(json.loads((home / "one.json").read_text())) == stable(json.loads((home / "two.json").read_text()))
    done, replayed = again(home, str(image), "-o", str(home / "three.json"))
    assert replayed and "warning" not in done.stderr


def test_settings_the_command_has_not_validated_are_never_replayed(home: Path) -> None:
    image = build_image(home / "app.tar")
    first(home, str(image), "-o", str(home / "one.json"))
    config = home / "cloudward.toml"
    config.write_text(config.read_text() + "[exposure]\nconcurrency = 0\n")
    done, replayed = again(home, str(image), "-o", str(home / "two.json"))
    assert not replayed
    assert done.returncode == 2 and "invalid settings" in done.stderr


def test_the_platform_asked_for_is_what_a_replay_matches(home: Path) -> None:
    """--platform is part of the command line, whatever the archive's own platform (here amd64)."""
    image = build_image(home / "app.tar")
    first(home, str(image), "--platform", "linux/arm64", "-o", str(home / "one.json"))
    done, replayed = again(home, str(image), "--platform", "linux/arm64", "-o", str(home / "two.json"))
    assert replayed and done.returncode == 0
    done, replayed = again(home, str(image), "-o", str(home / "three.json"))  # another command line
    assert not replayed and done.returncode == 0


def test_no_cache_and_unknown_spellings_go_through_typer(home: Path) -> None:
    image = build_image(home / "app.tar")
    first(home, str(image), "-o", str(home / "one.json"))
    done, replayed = again(home, str(image), "--no-cache", "-o", str(home / "two.json"))
    assert done.returncode == 0 and not replayed
    done, replayed = again(home, str(image), "--format", "cyclonedx", "--format", "spdx-json")
    assert not replayed and done.returncode == 0
    assert json.loads(done.stdout)["spdxVersion"] == "SPDX-2.3"  # typer: the last one wins
