"""Hardening gaps and privilege backdoors of the THREAT-MAP (initial access through SSH, Redis,
Docker, kubelet and etcd; persistence through uid-0 users, sudoers and SUID files), each planted as
configuration text into a fixture root. Nothing here is a real credential or a real binary of
interest: the "SUID shell" is a copy of /bin/true."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.harness.hostroot import Plant, write


def _append(root: Path, inner: str, text: str) -> None:
    path = root / inner.lstrip("/")
    path.write_text(path.read_text() + text)


def _true_binary(root: Path, inner: str, mode: int) -> None:
    target = root / inner.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(shutil.which("true") or "/bin/true", target)
    target.chmod(mode)


def ssh_password_dropin(root: Path) -> None:
    # Sorted before 50-hardening.conf, so sshd reads this value first and keeps it.
    write(root, "/etc/ssh/sshd_config.d/10-cloud-init.conf", "PasswordAuthentication yes\n")


def ssh_root_login(root: Path) -> None:
    write(root, "/etc/ssh/sshd_config.d/00-root.conf", "PermitRootLogin yes\n")


def ssh_match_password(root: Path) -> None:
    _append(root, "/etc/ssh/sshd_config", "Match User deploy Address 0.0.0.0/0\n    PasswordAuthentication yes\n")


def ssh_empty_passwords(root: Path) -> None:
    write(root, "/etc/ssh/sshd_config.d/01-legacy.conf", "permitemptypasswords=yes\n")


def extra_uid0(root: Path) -> None:
    _append(root, "/etc/passwd", "toor:x:0:0::/root:/bin/bash\n")
    _append(root, "/etc/shadow", "toor:$y$j9T$fixturesalt$Tm90QVJlYWxIYXNoSnVzdEFGaXh0dXJl:19701:0:99999:7:::\n")


def empty_password(root: Path) -> None:
    _append(root, "/etc/passwd", "backup2:x:1001:1001::/home/backup2:/bin/bash\n")
    _append(root, "/etc/shadow", "backup2::19701:0:99999:7:::\n")


def sudo_nopasswd(root: Path) -> None:
    write(root, "/etc/sudoers.d/90-svc", "# added by provisioning\nsvc ALL=(ALL) \\\n    NOPASSWD: ALL\n", 0o440)


def path_world_writable(root: Path) -> None:
    directory = root / "opt/tools/bin"
    directory.mkdir(parents=True, exist_ok=True)
    directory.chmod(0o777)
    write(root, "/root/.profile", 'PATH="/opt/tools/bin:$PATH"\nexport PATH\n')


def redis_open(root: Path) -> None:
    write(root, "/etc/redis/redis.conf", "bind 0.0.0.0\nprotected-mode no\nport 6379\ndir /var/lib/redis\n", 0o640)


def redis_weak_password(root: Path) -> None:
    write(root, "/etc/redis/redis.conf", "bind 127.0.0.1 -::1\nprotected-mode yes\nrequirepass foobared\n", 0o640)


def docker_daemon_json_tcp(root: Path) -> None:
    write(root, "/etc/docker/daemon.json",
          '{\n  "hosts": ["unix:///var/run/docker.sock", "tcp://0.0.0.0:2375"]\n}\n')


def docker_unit_tcp(root: Path) -> None:
    write(root, "/lib/systemd/system/docker.service",
          "[Service]\nExecStart=/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock\n")
    write(root, "/etc/systemd/system/docker.service.d/override.conf",
          "[Service]\nExecStart=\nExecStart=/usr/bin/dockerd -H fd:// \\\n  -H tcp://0.0.0.0:2375\n")


def docker_socket_mode(root: Path) -> None:
    write(root, "/lib/systemd/system/docker.socket",
          "[Socket]\nListenStream=/run/docker.sock\nSocketMode=0666\nSocketUser=root\nSocketGroup=docker\n")


def kubelet_anonymous(root: Path) -> None:
    write(root, "/var/lib/kubelet/config.yaml", """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
authentication:
  anonymous:
    enabled: true
  webhook:
    enabled: false
authorization:
  mode: AlwaysAllow
""")


def kubelet_read_only_port(root: Path) -> None:
    write(root, "/var/lib/kubelet/config.yaml", """\
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
readOnlyPort: 10255
""")


def etcd_open(root: Path) -> None:
    write(root, "/etc/etcd/etcd.conf.yml", """\
name: etcd-0
data-dir: /var/lib/etcd
listen-client-urls: http://0.0.0.0:2379
advertise-client-urls: http://10.0.0.5:2379
""")


def suid_in_tmp(root: Path) -> None:
    _true_binary(root, "/tmp/.ICE-unix/.x/bash", 0o4755)


def suid_unowned(root: Path) -> None:
    # A package database that owns the stock SUID binaries, and one SUID file it does not know.
    lists = {"sudo": ["/usr/bin/sudo"], "passwd": ["/usr/bin/passwd"], "util-linux": ["/usr/bin/su"],
             "mount": ["/usr/bin/mount"], "coreutils": ["/bin/ls", "/bin/cat"]}
    for package, files in lists.items():
        write(root, f"/var/lib/dpkg/info/{package}.list", "/.\n/usr\n/usr/bin\n" + "\n".join(files) + "\n")
    _true_binary(root, "/usr/local/sbin/.sshd-helper", 0o4755)


PLANTS = [
    Plant("ssh_password_dropin", ssh_password_dropin, ("host.ssh.password_authentication",),
          "a cloud-init style drop-in, read before the hardening one, re-enables SSH password logins",
          base="hardened"),
    Plant("ssh_permit_root_login", ssh_root_login, ("host.ssh.root_login_password",),
          "PermitRootLogin yes in an sshd_config.d drop-in"),
    Plant("ssh_match_password", ssh_match_password, ("host.ssh.match_weakens_authentication",),
          "a Match User block turns password logins back on for one account on a key-only host",
          base="hardened"),
    Plant("ssh_empty_passwords", ssh_empty_passwords, ("host.ssh.empty_passwords",),
          "PermitEmptyPasswords yes (keyword in lower case, `=` syntax)"),
    Plant("account_extra_uid0", extra_uid0, ("host.accounts.extra_uid0",),
          "a second uid-0 account `toor` (backdoor user)"),
    Plant("account_empty_password", empty_password, ("host.accounts.empty_password",),
          "an account whose /etc/shadow password field is empty"),
    Plant("sudoers_nopasswd_all", sudo_nopasswd, ("host.accounts.sudo_nopasswd_all",),
          "an /etc/sudoers.d file granting NOPASSWD: ALL (continued over two lines)"),
    Plant("path_world_writable", path_world_writable, ("host.accounts.path_world_writable",),
          "a world-writable directory first on root's PATH (/root/.profile)"),
    Plant("redis_open", redis_open, ("host.redis.unauthenticated_exposed",),
          "redis.conf: bind 0.0.0.0, protected-mode no, no password"),
    Plant("redis_weak_password", redis_weak_password, ("host.redis.weak_password",),
          "redis.conf: requirepass set to the stock example `foobared`"),
    Plant("docker_daemon_json_tcp", docker_daemon_json_tcp, ("host.docker.api_tcp_without_tls",),
          "daemon.json hosts tcp://0.0.0.0:2375 without tlsverify"),
    Plant("docker_unit_tcp", docker_unit_tcp, ("host.docker.api_tcp_without_tls",),
          "a docker.service drop-in resets ExecStart and adds -H tcp://0.0.0.0:2375"),
    Plant("docker_socket_mode", docker_socket_mode, ("host.docker.socket_unit_world_writable",),
          "docker.socket with SocketMode=0666"),
    Plant("kubelet_anonymous", kubelet_anonymous, ("host.kubelet.anonymous_always_allow",),
          "KubeletConfiguration with anonymous auth and AlwaysAllow"),
    Plant("kubelet_read_only_port", kubelet_read_only_port, ("host.kubelet.read_only_port",),
          "KubeletConfiguration with readOnlyPort 10255"),
    Plant("etcd_open", etcd_open, ("host.etcd.no_client_cert_auth",),
          "etcd listening on http://0.0.0.0:2379 without client-cert-auth"),
    Plant("suid_in_tmp", suid_in_tmp, ("host.accounts.suid_in_temp_or_home",),
          "a SUID-root copy of a binary hidden under /tmp/.ICE-unix"),
    Plant("suid_unowned", suid_unowned, ("host.accounts.suid_unpackaged",),
          "a SUID-root file in /usr/local/sbin that the (planted) dpkg database does not own"),
]
