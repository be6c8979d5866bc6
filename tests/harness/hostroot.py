"""Fixture roots for Workload Security: a clean Debian-like system, a hardened one, and the
plumbing to plant one THREAT-MAP artifact into a copy (tests/harness/plants/*).

These are directory trees written by the tests, never a real system: a few binaries are copies of
this machine's own (/bin/true), every "malicious" artifact is a harmless stand-in (text that looks
like a miner config, a script that only *mentions* a download). Lynis, rkhunter and chkrootkit
read the same trees in the workload benchmark.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Plant", "build_clean_root", "build_hardened_root", "write"]

# A Debian 12 sshd_config as shipped (comments trimmed): password logins allowed by default.
DEBIAN_SSHD_CONFIG = """\
Include /etc/ssh/sshd_config.d/*.conf
KbdInteractiveAuthentication no
UsePAM yes
X11Forwarding yes
PrintMotd no
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
"""

HARDENED_SSHD = """\
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin no
PermitEmptyPasswords no
PubkeyAuthentication yes
MaxAuthTries 3
"""

PASSWD = """\
root:x:0:0:root:/root:/bin/bash
daemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin
bin:x:2:2:bin:/bin:/usr/sbin/nologin
sys:x:3:3:sys:/dev:/usr/sbin/nologin
sync:x:4:65534:sync:/bin:/bin/sync
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
sshd:x:100:65534::/run/sshd:/usr/sbin/nologin
redis:x:101:102::/var/lib/redis:/usr/sbin/nologin
admin:x:1000:1000:Admin,,,:/home/admin:/bin/bash
"""

# Hashes are not real passwords: "$y$" + random-looking text, locked accounts use "*" / "!".
SHADOW = """\
root:*:19700:0:99999:7:::
daemon:*:19700:0:99999:7:::
bin:*:19700:0:99999:7:::
sys:*:19700:0:99999:7:::
sync:*:19700:0:99999:7:::
www-data:*:19700:0:99999:7:::
nobody:*:19700:0:99999:7:::
sshd:!:19700::::::
redis:!:19700::::::
admin:$y$j9T$fixturesaltfixture$Qm9ndXNIYXNoRm9yVGVzdHNPbmx5Tm90QVBhc3N3b3Jk:19700:0:99999:7:::
"""

GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:admin
sudo:x:27:admin
www-data:x:33:
docker:x:998:
redis:x:102:
nogroup:x:65534:
admin:x:1000:
"""

SUDOERS = """\
Defaults\tenv_reset
Defaults\tmail_badpass
Defaults\tsecure_path="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
root\tALL=(ALL:ALL) ALL
%sudo\tALL=(ALL:ALL) ALL
@includedir /etc/sudoers.d
"""

CRONTAB = """\
SHELL=/bin/sh
PATH=/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin
17 *\t* * *\troot\tcd / && run-parts --report /etc/cron.hourly
25 6\t* * *\troot\ttest -x /usr/sbin/anacron || { cd / && run-parts --report /etc/cron.daily; }
"""

REDIS_CONF = """\
bind 127.0.0.1 -::1
protected-mode yes
port 6379
daemonize yes
logfile /var/log/redis/redis-server.log
dir /var/lib/redis
"""

OS_RELEASE = """\
PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
NAME="Debian GNU/Linux"
VERSION_ID="12"
VERSION="12 (bookworm)"
VERSION_CODENAME=bookworm
ID=debian
HOME_URL="https://www.debian.org/"
"""

AUTH_LOG = """\
Nov 27 08:00:01 web1 sshd[1201]: Accepted publickey for admin from 192.0.2.10 port 50122 ssh2: ED25519 SHA256:fixture
Nov 27 08:00:01 web1 sshd[1201]: pam_unix(sshd:session): session opened for user admin(uid=1000) by (uid=0)
Nov 27 08:05:12 web1 sudo:    admin : TTY=pts/0 ; PWD=/home/admin ; USER=root ; COMMAND=/usr/bin/apt update
"""

SYSTEMD_SSH_UNIT = """\
[Unit]
Description=OpenBSD Secure Shell server
After=network.target auditd.service

[Service]
ExecStartPre=/usr/sbin/sshd -t
ExecStart=/usr/sbin/sshd -D $SSHD_OPTS
ExecReload=/bin/kill -HUP $MAINPID
Restart=on-failure

[Install]
WantedBy=multi-user.target
"""

# An ed25519 public key made up for fixtures (valid base64 shape, not anyone's key).
# A well-formed ed25519 public key (the 32 key bytes are a SHA-256 of a fixed phrase), so
# collectors can decode and fingerprint it like a real one.
ADMIN_KEY = ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOeKQz8Y88WNVZa+fEj7hDWXKX9GudOgA+i7I2W6F2Uq "
             "admin@workstation\n")

_BINARIES = ("bin/bash", "bin/sh", "bin/ls", "bin/ps", "bin/cat", "usr/bin/curl", "usr/bin/wget",
             "usr/bin/sudo", "usr/bin/passwd", "usr/bin/su", "usr/sbin/sshd", "usr/bin/crontab",
             "usr/bin/ssh", "usr/bin/python3", "usr/sbin/cron", "usr/bin/mount", "usr/bin/chattr")
_SUID = ("usr/bin/sudo", "usr/bin/passwd", "usr/bin/su", "usr/bin/mount")


def write(root: Path, inner: str, text: str | bytes, mode: int = 0o644) -> Path:
    """Write a file at an inner path of a fixture root, creating its directories."""
    path = root / inner.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    path.chmod(mode)
    return path


def build_clean_root(root: Path) -> Path:
    """A small Debian 12-like system with its stock defaults (and their usual weaknesses:
    password SSH logins are allowed, as Debian ships them)."""
    root.mkdir(parents=True, exist_ok=True)
    for directory in ("tmp", "var/tmp", "dev/shm"):
        (root / directory).mkdir(parents=True, exist_ok=True)
        (root / directory).chmod(0o1777)
    for directory in ("proc", "sys", "run", "root", "home/admin/.ssh", "etc/ssh/sshd_config.d", "etc/sudoers.d",
                      "etc/cron.d", "etc/cron.hourly", "etc/cron.daily", "var/spool/cron/crontabs",
                      "etc/systemd/system/multi-user.target.wants", "lib/systemd/system", "var/log",
                      "usr/local/bin", "usr/local/sbin", "usr/lib/openssh", "lib/modules", "var/lib/redis"):
        (root / directory).mkdir(parents=True, exist_ok=True)
    (root / "root").chmod(0o700)
    write(root, "/etc/os-release", OS_RELEASE)
    write(root, "/etc/hostname", "web1\n")
    write(root, "/etc/passwd", PASSWD)
    write(root, "/etc/shadow", SHADOW, 0o640)
    write(root, "/etc/group", GROUP)
    write(root, "/etc/sudoers", SUDOERS, 0o440)
    write(root, "/etc/ssh/sshd_config", DEBIAN_SSHD_CONFIG)
    write(root, "/etc/crontab", CRONTAB)
    write(root, "/etc/redis/redis.conf", REDIS_CONF, 0o640)
    write(root, "/etc/ld.so.conf", "include /etc/ld.so.conf.d/*.conf\n")
    write(root, "/etc/profile", 'PATH="/usr/local/bin:/usr/bin:/bin"\nexport PATH\n')
    write(root, "/etc/environment", "")
    write(root, "/etc/modules", "# /etc/modules: kernel modules to load at boot time.\n")
    write(root, "/home/admin/.ssh/authorized_keys", ADMIN_KEY, 0o600)
    write(root, "/home/admin/.bash_history", "ls -la\nsudo apt update\n", 0o600)
    write(root, "/root/.bash_history", "apt upgrade\n", 0o600)
    write(root, "/var/log/auth.log", AUTH_LOG, 0o640)
    write(root, "/lib/systemd/system/ssh.service", SYSTEMD_SSH_UNIT)
    os.symlink("/lib/systemd/system/ssh.service", root / "etc/systemd/system/multi-user.target.wants/ssh.service")
    true = shutil.which("true") or "/bin/true"
    for binary in _BINARIES:
        target = root / binary
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(true, target)
        target.chmod(0o4755 if binary in _SUID else 0o755)
    return root


def build_hardened_root(root: Path) -> Path:
    """The clean root with the advice applied: key-only SSH, no root login, Redis locked down."""
    build_clean_root(root)
    write(root, "/etc/ssh/sshd_config.d/50-hardening.conf", HARDENED_SSHD)
    write(root, "/etc/redis/redis.conf", REDIS_CONF + "requirepass fixture-not-a-real-password-0\n"
          'rename-command CONFIG ""\nrename-command FLUSHALL ""\nrename-command DEBUG ""\n', 0o640)
    return root


@dataclass(frozen=True)
class Plant:
    """One THREAT-MAP artifact: `apply` writes it into a base root (`build_clean_root`, or
    `build_hardened_root` when `base` is "hardened"); `rule_ids` must then fire (at least one of
    them), and none of them fires on the base root without it. A hardening gap that the stock
    clean root already has (password SSH logins) is planted into the hardened root."""

    name: str
    apply: Callable[[Path], None]
    rule_ids: tuple[str, ...]
    description: str
    base: str = "clean"  # "clean" or "hardened"
