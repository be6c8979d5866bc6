"""The Redis probe against real redis-server instances (tests/harness), plus scripted servers for
the replies a loopback redis cannot produce (protected mode's -DENIED) and for hostile ones."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from cloudward.core.rules import load_rules
from cloudward.exposure.evaluate import compile_rules, evaluate, validate_rule
from cloudward.exposure.net import Limits
from cloudward.exposure.probes.base import Observation, ProbeContext
from cloudward.exposure.probes.redis import PROBES, RedisProbe, parse_info
from tests.exposure.scripted import Handler, run_scripted
from tests.harness.services import start_redis

RULES = compile_rules(load_rules(["cloudward.exposure"], validators={"exposure": validate_rule}))
PROBE = PROBES[0]
FAST = Limits(connect_timeout=1.0, io_timeout=0.5)


def probe(host: str, port: int, limits: Limits | None = None) -> Observation | None:
    return asyncio.run(PROBE.identify(ProbeContext(host, port, limits or Limits()), False))


def fired(observation: Observation) -> dict[str, dict]:
    return {f.rule_id: f.evidence for f in evaluate(observation, RULES)}


def probe_scripted(handler: Handler, limits: Limits = FAST) -> Observation | None:
    return run_scripted(PROBE, handler, limits)


def raw_command(host: str, port: int, line: bytes) -> bytes:
    """One inline command over a plain socket, so test bookkeeping adds no client commands."""
    with socket.create_connection((host, port), timeout=2) as sock:
        sock.sendall(line + b"\r\n")
        time.sleep(0.2)
        return sock.recv(65536)


def test_open_redis_is_critical_with_version_and_role(redis_server):
    obs = probe(redis_server.host, redis_server.port)
    assert obs is not None and obs.service == "redis"
    assert obs.facts["auth_required"] is False
    assert obs.facts["role"] == "master" and obs.facts["mode"] == "standalone"
    assert obs.facts["bind"] == redis_server.host
    findings = fired(obs)
    evidence = findings["redis.unauthenticated"]
    assert evidence["version"] == obs.facts["version"]
    assert evidence["role"] == "master"
    # The harness starts it with --protected-mode no, which CONFIG GET reveals.
    assert obs.facts["protected_mode"] is False
    assert "redis.protected_mode_disabled" in findings
    assert "redis.persistence_path_hijacked" not in findings


def test_version_matches_the_installed_server(redis_server):
    reply = raw_command(redis_server.host, redis_server.port, b"INFO server").decode()
    expected = parse_info(reply.split("\r\n", 1)[1])["redis_version"]
    assert probe(redis_server.host, redis_server.port).facts["version"] == expected


def test_version_advisories_follow_the_reported_version(redis_server):
    """Debian 12's redis-server reports 7.0.15 whatever security patches its package carries: the
    7.0 branch never got upstream releases for CVE-2024-31449 and CVE-2025-49844, so those rules
    fire (their descriptions say to confirm backports), while 7.0.12/7.0.11 fixes count."""
    obs = probe(redis_server.host, redis_server.port)
    advisories = {r for r in fired(obs) if ".cve_" in r}
    assert obs.facts["version"] == "7.0.15", "expectations are written for Debian 12's redis-server"
    assert advisories == {"redis.cve_2025_49844_redishell", "redis.cve_2024_31449_lua_bit"}


def test_password_protected_redis_is_identified_without_findings(redis_server_with_password):
    obs = probe(redis_server_with_password.host, redis_server_with_password.port)
    assert obs is not None and obs.service == "redis"
    assert obs.facts["auth_required"] is True
    assert obs.facts["ping_reply"].startswith("NOAUTH")
    assert "version" not in obs.facts  # nothing beyond PING is asked without credentials
    assert not fired(obs)


def test_protected_mode_on_is_not_reported_as_disabled(redis_protected):
    obs = probe(redis_protected.host, redis_protected.port)
    assert obs.facts["protected_mode"] is True  # loopback clients still get in
    findings = fired(obs)
    assert "redis.unauthenticated" in findings
    assert "redis.protected_mode_disabled" not in findings


def test_redis_on_an_unusual_address_and_port_is_identified(services):
    server = services.start(start_redis, "127.0.1.17")
    assert server.port != 6379
    obs = probe(server.host, server.port)
    assert obs is not None and obs.service == "redis" and obs.host == "127.0.1.17"
    assert "redis.unauthenticated" in fired(obs)


def test_probe_sends_only_read_only_commands(services):
    server = services.start(start_redis)
    probe(server.host, server.port)
    stats = raw_command(server.host, server.port, b"INFO commandstats").decode()
    used = {line.split(":", 1)[0].removeprefix("cmdstat_") for line in stats.splitlines()
            if line.startswith("cmdstat_")}
    # "info" also counts our own INFO commandstats; "ping" includes the harness readiness check.
    assert used <= {"ping", "info", "config|get"}, used
    assert "config|get" in used


def test_other_services_are_not_redis(sshd_keys_only, postgres_trust):
    for service in (sshd_keys_only, postgres_trust):
        assert probe(service.host, service.port, FAST) is None


# --------------------------------------------------------------------------- scripted servers


def _replying(*chunks: bytes, then_close: bool = True) -> Handler:
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        for chunk in chunks:
            writer.write(chunk)
            await writer.drain()
        if not then_close:
            await asyncio.sleep(5)
        writer.close()

    return handler


DENIED = (b"-DENIED Redis is running in protected mode because protected mode is enabled and no "
          b"password is set for the default user. In this mode connections are only accepted from "
          b"the loopback interface.\r\n")


def test_protected_mode_refusal_is_identified_but_not_open():
    obs = probe_scripted(_replying(DENIED))
    assert obs is not None and obs.service == "redis"
    assert obs.facts["protected_mode"] is True and obs.facts["denied"] is True
    assert "auth_required" not in obs.facts
    assert not fired(obs)


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n",
    b"ERROR\r\n",  # memcached
    b"\x00\x00\x00\x08garbage",
    b"+OK not a pong\r\n",
    b"-ERR something unrelated\r\n",
])
def test_other_protocols_are_not_redis(reply):
    assert probe_scripted(_replying(reply)) is None


def test_silent_port_costs_one_read_timeout():
    started = time.monotonic()
    assert probe_scripted(_replying(then_close=False)) is None
    assert time.monotonic() - started < 3 * FAST.io_timeout


def test_endless_first_line_is_capped():
    assert probe_scripted(_replying(b"+" + b"A" * 200_000)) is None


def test_huge_info_reply_is_capped_and_reported():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"+PONG\r\n")
        await reader.read(1024)
        writer.write(b"$500000000\r\n")
        try:
            for _ in range(200):
                writer.write(b"x" * 65536)
                await writer.drain()
        except ConnectionError:
            pass
        writer.close()

    obs = probe_scripted(handler)
    assert obs is not None and obs.facts["auth_required"] is False
    assert "larger than" in obs.facts["probe_errors"][0]
    assert "redis.unauthenticated" in fired(obs)


def test_reply_cut_mid_way_keeps_what_was_learnt():
    obs = probe_scripted(_replying(b"+PONG\r\n", b"$1000\r\n# Server\r\nredis_ver"))
    assert obs is not None and obs.facts["auth_required"] is False
    assert obs.facts["probe_errors"]


def test_renamed_ping_is_confirmed_by_info():
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(1024)
        writer.write(b"-ERR unknown command 'PING', with args beginning with: \r\n")
        await writer.drain()
        while data := await reader.read(1024):
            if b"INFO" in data:
                body = b"# Server\r\nredis_version:6.2.6\r\nredis_mode:standalone\r\n"
                writer.write(b"$%d\r\n%s\r\n" % (len(body), body))
            else:
                writer.write(b"-ERR unknown command\r\n")
            await writer.drain()
        writer.close()

    obs = probe_scripted(handler)
    assert obs is not None and obs.facts["version"] == "6.2.6" and obs.facts["auth_required"] is False


def test_probe_class_contract():
    assert RedisProbe.family == "raw" and RedisProbe.name == "redis" and 6379 in RedisProbe.ports
