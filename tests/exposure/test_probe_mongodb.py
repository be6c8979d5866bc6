"""The MongoDB probe.

MongoDB cannot be installed on this machine; this stand-in replays the documented OP_MSG replies
(tests/exposure/standins/mongodb_standin.py: hello, isMaster, buildInfo and listDatabases as the
MongoDB manual shows them, with and without access control, plus pre-`hello` and pre-OP_MSG
servers). The probe is also run against the real services the harness starts, which must not be
mistaken for MongoDB.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from cloudward.core.rules import load_rules
from cloudward.exposure.evaluate import compile_rules, evaluate, validate_rule
from cloudward.exposure.net import Limits
from cloudward.exposure.probes.base import Observation, ProbeContext
from cloudward.exposure.probes.mongodb import PROBES, MongoDbProbe, op_msg, parse_reply
from tests.exposure.standins.mongodb_standin import MongoStandin

RULES = compile_rules(load_rules(["cloudward.exposure"], validators={"exposure": validate_rule}))
PROBE = PROBES[0]
FAST = Limits(connect_timeout=1.0, io_timeout=1.0)
READ_ONLY = {"hello", "isMaster", "buildInfo", "listDatabases"}


def probe(host: str, port: int, limits: Limits | None = None) -> Observation | None:
    return asyncio.run(PROBE.identify(ProbeContext(host, port, limits or Limits()), False))


def fired(observation: Observation) -> dict[str, dict]:
    return {f.rule_id: f.evidence for f in evaluate(observation, RULES)}


def test_open_mongodb_is_critical():
    with MongoStandin("open") as server:
        obs = probe(server.host, server.port)
        commands = list(server.commands)
    assert obs is not None and obs.service == "mongodb"
    assert obs.facts["auth_required"] is False
    assert obs.facts["version"] == "7.0.14" and obs.facts["max_wire_version"] == 21
    assert obs.facts["database_count"] == 4 and "shop" in obs.facts["databases"]
    evidence = fired(obs)["mongodb.unauthenticated"]
    assert evidence["version"] == "7.0.14" and evidence["database_count"] == 4
    assert commands == ["hello", "buildInfo", "listDatabases"]


def test_access_control_is_identified_without_findings():
    with MongoStandin("auth") as server:
        obs = probe(server.host, server.port)
    assert obs is not None and obs.service == "mongodb"
    assert obs.facts["auth_required"] is True
    assert "requires authentication" in obs.facts["list_databases_error"]
    assert "database_count" not in obs.facts
    assert not fired(obs)


def test_server_without_hello_gets_ismaster():
    with MongoStandin("no_hello") as server:
        obs = probe(server.host, server.port)
        commands = list(server.commands)
    assert obs.facts["version"] == "4.2.25" and obs.facts["auth_required"] is False
    assert commands[:2] == ["hello", "isMaster"]


def test_server_without_op_msg_is_asked_with_op_query():
    with MongoStandin("legacy") as server:
        obs = probe(server.host, server.port)
        commands = list(server.commands)
    assert obs is not None and obs.facts["version"] == "3.4.24" and obs.facts["max_wire_version"] == 5
    assert obs.facts["is_primary"] is True
    assert "mongodb.unauthenticated" in fired(obs)
    assert set(commands) <= READ_ONLY


@pytest.mark.parametrize("mode", ["open", "auth", "no_hello", "legacy"])
def test_only_read_only_commands_are_sent(mode):
    with MongoStandin(mode) as server:
        probe(server.host, server.port)
        assert server.commands and set(server.commands) <= READ_ONLY


@pytest.mark.parametrize("mode", ["garbage", "huge_length", "wrong_response_to"])
def test_broken_or_foreign_replies_are_not_mongodb(mode):
    with MongoStandin(mode) as server:
        assert probe(server.host, server.port, FAST) is None


def test_silent_port_is_rejected_quickly():
    with MongoStandin("silent") as server:
        started = time.monotonic()
        assert probe(server.host, server.port, FAST) is None
        assert time.monotonic() - started < 2.5


def test_real_services_are_not_mongodb(redis_server, postgres_trust, sshd_keys_only):
    for service in (redis_server, postgres_trust, sshd_keys_only):
        assert probe(service.host, service.port, FAST) is None


def test_op_msg_round_trip():
    message = op_msg(42, {"hello": 1})
    length = int.from_bytes(message[:4], "little")
    assert length == len(message) and int.from_bytes(message[12:16], "little") == 2013
    assert parse_reply(2013, message[16:]) == {"hello": 1}


def test_probe_class_contract():
    assert MongoDbProbe.family == "raw" and MongoDbProbe.name == "mongodb" and 27017 in MongoDbProbe.ports
