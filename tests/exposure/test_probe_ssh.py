"""The SSH probe against Debian's real sshd (tests/harness), plus banner parsing and scripted
servers that misbehave after (or instead of) a valid banner."""

from __future__ import annotations

import asyncio
import struct
import subprocess
import time

import pytest

from cloudward.core.rules import load_rules
from cloudward.engines.versions import LooseVersion
from cloudward.exposure.evaluate import compile_rules, evaluate, validate_rule
from cloudward.exposure.net import Limits
from cloudward.exposure.probes.base import Observation, ProbeContext
from cloudward.exposure.probes.ssh import PROBES, SshProbe, parse_banner, parse_kexinit
from tests.exposure.scripted import Handler, run_scripted

RULES = compile_rules(load_rules(["cloudward.exposure"], validators={"exposure": validate_rule}))
PROBE = PROBES[0]
FAST = Limits(connect_timeout=1.0, io_timeout=1.0)


def probe(host: str, port: int, limits: Limits | None = None) -> Observation | None:
    return asyncio.run(PROBE.identify(ProbeContext(host, port, limits or Limits()), False))


def fired(observation: Observation) -> dict[str, dict]:
    return {f.rule_id: f.evidence for f in evaluate(observation, RULES)}


def installed_openssh() -> tuple[str, str]:
    """(upstream version, Debian revision) of the installed openssh-server, e.g. 9.2p1, 2+deb12u10."""
    version = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", "openssh-server"],
                             capture_output=True, text=True, check=True).stdout.strip()
    upstream, _, revision = version.split(":", 1)[-1].partition("-")
    return upstream, revision


def test_password_sshd_is_reported(sshd_password):
    obs = probe(sshd_password.host, sshd_password.port)
    assert obs is not None and obs.service == "ssh"
    assert obs.facts["auth_methods"] == ["publickey", "password"]
    assert obs.facts["password_auth"] is True and obs.facts["keyboard_interactive"] is False
    assert obs.facts["host_key_type"] == "ssh-ed25519"
    evidence = fired(obs)["ssh.password_authentication_enabled"]
    assert evidence["auth_methods"] == ["publickey", "password"]


def test_keys_only_sshd_has_no_password_finding(sshd_keys_only):
    obs = probe(sshd_keys_only.host, sshd_keys_only.port)
    assert obs is not None and obs.facts["auth_methods"] == ["publickey"]
    assert obs.facts["password_auth"] is False
    assert "ssh.password_authentication_enabled" not in fired(obs)
    assert "probe_errors" not in obs.facts


def test_debian_banner_and_backported_fixes(sshd_keys_only):
    """The banner carries Debian's package revision; a revision with the regreSSHion fix
    (2+deb12u3 or later) must not be reported, and strict KEX (Terrapin fix, 2+deb12u2) shows in
    the KEXINIT whatever the version string says."""
    upstream, revision = installed_openssh()
    obs = probe(sshd_keys_only.host, sshd_keys_only.port)
    assert obs.facts["software"] == "OpenSSH"
    assert obs.facts["version"] == upstream
    assert obs.facts["distro"] == "Debian" and obs.facts["distro_revision"] == revision
    findings = fired(obs)
    regresshion_fixed = upstream != "9.2p1" or LooseVersion(revision) >= LooseVersion("2+deb12u3")
    assert ("ssh.cve_2024_6387_regresshion" in findings) is not regresshion_fixed
    assert "ssh.cve_2018_15473_user_enumeration" not in findings
    assert "kex-strict-s-v00@openssh.com" in obs.facts["kex_algorithms"]
    assert "ssh.cve_2023_48795_terrapin" not in findings


def test_probe_asks_as_a_random_unknown_user_and_sends_no_password(services):
    from tests.harness.services import start_sshd

    server = services.start(start_sshd, password_auth=True)
    probe(server.host, server.port)
    probe(server.host, server.port)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline and server.log_tail(200).count("Invalid user cloudward-probe-") < 2:
        time.sleep(0.05)
    log = server.log_tail(200)
    users = {line.split("Invalid user ", 1)[1].split()[0]
             for line in log.splitlines() if "Invalid user" in line}
    assert len(users) == 2 and all(u.startswith("cloudward-probe-") for u in users)
    assert "Failed password" not in log and "Accepted" not in log


def test_other_services_are_not_ssh(redis_server, postgres_trust):
    for service in (redis_server, postgres_trust):
        assert probe(service.host, service.port, FAST) is None


# --------------------------------------------------------------------------- banner parsing


@pytest.mark.parametrize(("raw", "expected"), [
    (b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u7\r\n",
     {"software": "OpenSSH", "version": "9.2p1", "comment": "Debian-2+deb12u7", "distro": "Debian",
      "distro_revision": "2+deb12u7", "protocol": "2.0"}),
    (b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.10\r\n",
     {"software": "OpenSSH", "version": "8.9p1", "distro": "Ubuntu", "distro_revision": "3ubuntu0.10"}),
    (b"SSH-2.0-OpenSSH_9.7 FreeBSD-20240701\r\n",
     {"version": "9.7", "distro": "FreeBSD", "distro_revision": "20240701"}),
    (b"SSH-2.0-OpenSSH_8.7\r\n", {"software": "OpenSSH", "version": "8.7"}),
    (b"SSH-2.0-OpenSSH_for_Windows_8.1\r\n", {"software": "OpenSSH_for_Windows", "version": "8.1"}),
    (b"SSH-2.0-dropbear_2022.83\r\n", {"software": "dropbear", "version": "2022.83"}),
    (b"SSH-1.99-Cisco-1.25\r\n", {"software": "Cisco", "version": "1.25", "protocol": "1.99"}),
    (b"SSH-2.0-Go\r\n", {"software": "Go"}),
])
def test_parse_banner(raw, expected):
    facts = parse_banner(raw)
    assert facts is not None
    for key, value in expected.items():
        assert facts[key] == value, key
    if "version" not in expected:
        assert "version" not in facts


@pytest.mark.parametrize("raw", [b"", b"HTTP/1.1 400 Bad Request\r\n", b"SSH-\r\n", b"SSH-2.0-\r\n",
                                 b"220 mail ESMTP\r\n"])
def test_parse_banner_rejects_non_ssh(raw):
    assert parse_banner(raw) is None


def test_banner_is_capped():
    facts = parse_banner(b"SSH-2.0-OpenSSH_9.2p1 " + b"x" * 100_000)
    assert facts is not None and len(facts["banner"]) == 255


def _name_list(names: list[str]) -> bytes:
    data = ",".join(names).encode()
    return struct.pack(">I", len(data)) + data


def kexinit_payload(kex: list[str], ciphers: list[str], macs: list[str]) -> bytes:
    lists = [kex, ["ssh-ed25519"], ciphers, ciphers, macs, macs, ["none"], ["none"], [], []]
    return bytes([20]) + b"\x00" * 16 + b"".join(_name_list(x) for x in lists) + b"\x00" + b"\x00" * 4


def test_parse_kexinit():
    lists = parse_kexinit(kexinit_payload(["curve25519-sha256"], ["aes128-ctr"], ["hmac-sha2-256"]))
    assert lists["kex_algorithms"] == ["curve25519-sha256"]
    assert lists["ciphers_s2c"] == ["aes128-ctr"] and lists["languages_c2s"] == []


# --------------------------------------------------------------------------- scripted servers

def probe_scripted(handler: Handler, limits: Limits = FAST) -> Observation | None:
    return run_scripted(PROBE, handler, limits)


def _sends(*chunks: bytes, linger: float = 0.0) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            for chunk in chunks:
                writer.write(chunk)
                await writer.drain()
            if linger:
                await asyncio.sleep(linger)
        except ConnectionError:
            pass
        writer.close()

    return handler


def _packet(payload: bytes) -> bytes:
    padding = 8 - (len(payload) + 5) % 8 + 4
    return struct.pack(">IB", len(payload) + padding + 1, padding) + payload + b"\x00" * padding


def test_vulnerable_kexinit_from_a_scripted_server_is_reported():
    """A server without strict KEX that offers chacha20-poly1305: Terrapin applies. The auth
    query then fails (the script stops after KEXINIT), which is recorded, not raised."""
    payload = kexinit_payload(["curve25519-sha256"], ["chacha20-poly1305@openssh.com", "aes128-ctr"],
                              ["hmac-sha2-256-etm@openssh.com"])
    obs = probe_scripted(_sends(b"SSH-2.0-OpenSSH_9.3p1\r\n", _packet(payload), linger=0.2))
    assert obs is not None and obs.facts["ciphers"][0] == "chacha20-poly1305@openssh.com"
    assert any(e.startswith("auth methods:") for e in obs.facts["probe_errors"])
    findings = fired(obs)
    assert "ssh.cve_2023_48795_terrapin" in findings
    assert "ssh.cve_2024_6387_regresshion" in findings  # upstream 9.3p1, no distro revision
    assert "ssh.password_authentication_enabled" not in findings  # not observed, not reported


@pytest.mark.parametrize("after_banner", [
    struct.pack(">I", 0xFFFFFFFF) + b"\x00" * 8,  # absurd packet length
    _packet(b"\x15" + b"\x00" * 40),  # not KEXINIT
    _packet(bytes([20]) + b"\x00" * 16 + struct.pack(">I", 10_000)),  # name-list overruns
    b"",  # closes after the banner
])
def test_broken_kexinit_keeps_the_banner_facts(after_banner):
    obs = probe_scripted(_sends(b"SSH-2.0-OpenSSH_8.4p1 Debian-5+deb11u3\r\n", after_banner))
    assert obs is not None and obs.facts["version"] == "8.4p1"
    errors = obs.facts["probe_errors"]
    assert any(e.startswith("kexinit:") for e in errors)
    assert any(e.startswith("auth methods:") for e in errors)


@pytest.mark.parametrize("script", [
    _sends(b"HTTP/1.0 400 Bad Request\r\n\r\n"),
    _sends(b"x" * 1_000_000),  # endless banner without a newline
    _sends(linger=3.0),  # silent
])
def test_non_ssh_is_rejected_quickly(script):
    started = time.monotonic()
    assert probe_scripted(script) is None
    assert time.monotonic() - started < 2.5


def test_probe_class_contract():
    assert SshProbe.family == "banner" and SshProbe.name == "ssh" and 22 in SshProbe.ports
