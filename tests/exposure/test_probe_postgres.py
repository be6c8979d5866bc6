"""The PostgreSQL probe against real PostgreSQL 15 servers (tests/harness): trust and SCRAM as the
harness starts them, then one server reconfigured through pg_hba.conf, TLS and MD5-stored
passwords to walk every method the rules judge; plus scripted servers that only look similar."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from collections.abc import Iterator

import psycopg
import pytest

from cloudward.core.rules import load_rules
from cloudward.exposure.evaluate import compile_rules, evaluate, validate_rule
from cloudward.exposure.net import Limits
from cloudward.exposure.probes.base import Observation, ProbeContext
from cloudward.exposure.probes.postgres import PROBES, PostgresProbe, startup_message
from tests.exposure.scripted import Handler, run_scripted
from tests.harness.services import PostgresService, start_postgres

RULES = compile_rules(load_rules(["cloudward.exposure"], validators={"exposure": validate_rule}))
PROBE = PROBES[0]
FAST = Limits(connect_timeout=1.0, io_timeout=1.0)


def probe(host: str, port: int, limits: Limits | None = None) -> Observation | None:
    return asyncio.run(PROBE.identify(ProbeContext(host, port, limits or Limits()), False))


def fired(observation: Observation) -> dict[str, dict]:
    return {f.rule_id: f.evidence for f in evaluate(observation, RULES)}


def test_trust_is_critical_with_server_version(postgres_trust):
    obs = probe(postgres_trust.host, postgres_trust.port)
    assert obs is not None and obs.service == "postgres"
    assert obs.facts["auth_method"] == "trust" and obs.facts["auth_code"] == 0
    assert obs.facts["is_superuser"] == "on"
    evidence = fired(obs)["postgres.trust_authentication"]
    assert evidence["server_version"].startswith("15.")
    assert evidence["ssl_supported"] is False


def test_scram_is_identified_without_findings(postgres_scram):
    obs = probe(postgres_scram.host, postgres_scram.port)
    assert obs is not None and obs.service == "postgres"
    assert obs.facts["auth_method"] == "sasl"
    assert obs.facts["sasl_mechanisms"] == ["SCRAM-SHA-256"]
    assert not fired(obs)


def test_probe_leaves_no_errors_in_the_server_log(services):
    server = services.start(start_postgres, auth="scram-sha-256")
    probe(server.host, server.port)
    time.sleep(0.2)
    assert "FATAL" not in server.log_tail(50) and "ERROR" not in server.log_tail(50)


def test_other_services_are_not_postgres(redis_server, sshd_keys_only):
    for service in (redis_server, sshd_keys_only):
        assert probe(service.host, service.port, FAST) is None


# --------------------------------------------------------------------------- pg_hba.conf walk


class Reconfigurable:
    """One real server whose pg_hba.conf is rewritten and reloaded between probes."""

    def __init__(self, server: PostgresService) -> None:
        self.server = server
        key, cert = server.dir / "server.key", server.dir / "server.crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key),
                        "-out", str(cert), "-subj", "/CN=localhost", "-days", "1"],
                       check=True, capture_output=True)
        for path in (key, cert):
            shutil.chown(path, "postgres", "postgres")
        key.chmod(0o600)
        self.admin = psycopg.connect(server.dsn, autocommit=True, sslmode="disable")
        self.admin.execute("ALTER SYSTEM SET ssl = on")
        self.admin.execute(f"ALTER SYSTEM SET ssl_cert_file = '{cert}'")
        self.admin.execute(f"ALTER SYSTEM SET ssl_key_file = '{key}'")
        # An MD5-stored password, so that the `md5` method really asks for MD5.
        self.admin.execute("SET password_encryption = 'md5'")
        self.admin.execute("ALTER ROLE postgres PASSWORD 'not-used-by-the-probe'")

    def hba(self, *lines: str) -> None:
        (self.server.dir / "data" / "pg_hba.conf").write_text("\n".join(lines) + "\n")
        self.admin.execute("SELECT pg_reload_conf()")
        time.sleep(0.5)  # the postmaster reloads asynchronously after the signal

    def probe(self) -> Observation:
        obs = probe(self.server.host, self.server.port)
        assert obs is not None and obs.service == "postgres"
        return obs


@pytest.fixture(scope="module")
def reconfigurable() -> Iterator[Reconfigurable]:
    server = start_postgres(auth="scram-sha-256")
    try:
        target = Reconfigurable(server)
        yield target
        target.admin.close()
    finally:
        server.stop()


def test_md5_required_over_tls_only(reconfigurable):
    reconfigurable.hba("hostssl all all 127.0.0.0/8 md5")
    obs = reconfigurable.probe()
    assert obs.facts["ssl_supported"] is True
    assert obs.facts["auth_method"] == "md5" and obs.facts["auth_over_tls"] is True
    assert "error_code" not in obs.facts
    assert set(fired(obs)) == {"postgres.md5_password_authentication"}


def test_cleartext_password_over_plain_tcp(reconfigurable):
    reconfigurable.hba("host all all 127.0.0.0/8 password")
    obs = reconfigurable.probe()
    assert obs.facts["auth_method"] == "password" and obs.facts["auth_over_tls"] is False
    assert set(fired(obs)) == {"postgres.cleartext_password_authentication"}


def test_cleartext_password_inside_tls_is_not_reported(reconfigurable):
    reconfigurable.hba("hostssl all all 127.0.0.0/8 password")
    obs = reconfigurable.probe()
    assert obs.facts["auth_method"] == "password" and obs.facts["auth_over_tls"] is True
    assert not fired(obs)


def test_trust_over_tls_is_still_critical(reconfigurable):
    reconfigurable.hba("hostssl all all 127.0.0.0/8 trust")
    obs = reconfigurable.probe()
    assert obs.facts["auth_method"] == "trust" and obs.facts["auth_over_tls"] is True
    assert obs.facts["server_version"].startswith("15.")
    assert "postgres.trust_authentication" in fired(obs)


def test_no_matching_hba_entry_still_identifies_postgres(reconfigurable):
    reconfigurable.hba("host all all 10.0.0.0/8 scram-sha-256")
    obs = reconfigurable.probe()
    assert obs.facts["auth_method"] == "rejected" and obs.facts["error_code"] == "28000"
    assert "pg_hba.conf" in obs.facts["error_message"]
    assert not fired(obs)


# --------------------------------------------------------------------------- scripted servers

def probe_scripted(handler: Handler, limits: Limits = FAST) -> Observation | None:
    return run_scripted(PROBE, handler, limits)


def _answers(first: bytes, startup: bytes) -> Handler:
    """Answer the SSLRequest connection with `first` and the startup connection with `startup`."""
    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        data = await reader.read(1024)
        writer.write(first if len(data) == 8 else startup)
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        await asyncio.sleep(0.05)
        writer.close()

    return handler


def _error_response(code: str, message: str) -> bytes:
    body = b"SFATAL\0VFATAL\0C" + code.encode() + b"\0M" + message.encode() + b"\0\0"
    return b"E" + len(body + b"1234").to_bytes(4, "big") + body


def test_too_many_clients_still_identifies_postgres():
    obs = probe_scripted(_answers(b"N", _error_response("53300", "sorry, too many clients already")))
    assert obs is not None and obs.facts["auth_method"] == "error" and obs.facts["error_code"] == "53300"


@pytest.mark.parametrize(("first", "startup"), [
    (b"HTTP/1.1 400 Bad Request\r\n\r\n", b""),
    (b"N", b"HTTP/1.1 400 Bad Request\r\n\r\n"),
    (b"N", b"R\xff\xff\xff\xff"),  # absurd length
    (b"N", b"E\x00\x00\x00\x0cnot-fields"),  # an "error" without severity or SQLSTATE
    (b"N", b""),  # closes on startup
])
def test_lookalikes_are_not_postgres(first, startup):
    assert probe_scripted(_answers(first, startup)) is None


def test_silent_port_is_rejected_quickly():
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(4)
        writer.close()

    started = time.monotonic()
    assert probe_scripted(silent) is None
    assert time.monotonic() - started < 2.5


def test_startup_message_shape():
    message = startup_message()
    assert int.from_bytes(message[:4], "big") == len(message)
    assert message[4:8] == (196608).to_bytes(4, "big")
    assert b"user\0postgres\0database\0postgres\0" in message and message.endswith(b"\0\0")


def test_probe_class_contract():
    assert PostgresProbe.family == "raw" and PostgresProbe.name == "postgres" and 5432 in PostgresProbe.ports
