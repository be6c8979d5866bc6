"""The harness itself: each service really starts, speaks its protocol, and leaves nothing behind."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import paramiko
import psycopg
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.harness.services import (
    MissingBinaryError,
    PostgresService,
    Service,
    ServiceError,
    ServicePool,
    check_loopback,
    free_port,
    port_open,
    start_etcd,
    start_jupyter,
    start_podman_api,
    start_postgres,
    start_process,
    start_redis,
    start_registry,
    start_sshd,
    wait_for_port,
)

pytestmark = pytest.mark.services


def http() -> httpx.Client:
    # trust_env=False: never route loopback traffic through a proxy from the environment.
    return httpx.Client(trust_env=False, timeout=10)


def redis_client(service: Service, password: str | None = None) -> redis.Redis:
    # No retries: redis-py 8 otherwise retries a refused login for seconds before raising.
    return redis.Redis(service.host, service.port, password=password, retry=Retry(NoBackoff(), 0))


# --------------------------------------------------------------------------- plumbing


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.1", "::1", "localhost", ""])
def test_only_loopback_addresses_are_accepted(host: str) -> None:
    with pytest.raises(ValueError, match=r"127\.0\.0\.0/8"):
        check_loopback(host)
    with pytest.raises(ValueError):
        start_redis(host)


def test_free_port_never_hands_out_the_same_port_twice() -> None:
    ports = [free_port("127.0.1.3") for _ in range(50)]
    assert len(set(ports)) == len(ports)


def test_wait_for_port_times_out_on_a_closed_port() -> None:
    with pytest.raises(TimeoutError):
        wait_for_port("127.0.1.3", free_port("127.0.1.3"), timeout=0.3)


def test_a_process_that_dies_at_startup_reports_its_log_and_is_cleaned_up() -> None:
    dirs: list[Path] = []

    def argv(service: Service) -> list[str]:
        dirs.append(service.dir)
        return [sys.executable, "-c", "import sys; sys.exit('boom: cannot start')"]

    with pytest.raises(ServiceError, match="boom: cannot start"):
        start_process("dies", argv)
    assert dirs and not dirs[0].exists()


def test_a_process_that_never_gets_ready_times_out_and_is_killed() -> None:
    started: list[Service] = []

    def argv(service: Service) -> list[str]:
        started.append(service)
        return [sys.executable, "-c", "import time; print('sleeping', flush=True); time.sleep(60)"]

    with pytest.raises(ServiceError, match=r"(?s)not ready.*sleeping"):
        start_process("sleeper", argv, timeout=1)
    assert_gone(started[0])


def test_a_missing_binary_fails_and_says_how_to_install_it() -> None:
    with pytest.raises(MissingBinaryError, match="make test"):
        start_process("missing", lambda s: ["cloudward-no-such-daemon", "--port", str(s.port)])


def test_generic_process_serves_on_its_port() -> None:
    argv = lambda s: [sys.executable, "-m", "http.server", "--bind", s.host, str(s.port)]  # noqa: E731
    with start_process("http", argv, host="127.0.1.4") as service:
        assert httpx.get(f"http://{service.host}:{service.port}/", trust_env=False).status_code == 200
    assert_gone(service)


def test_stop_all_is_a_safety_net_for_forgotten_services() -> None:
    """Run in a child interpreter: stop_all() stops every live service of its process, and this
    process holds session-wide services other tests still use."""
    script = (
        "import sys; from tests.harness.services import start_redis, stop_all, port_open\n"
        "s = start_redis('127.0.1.5'); print(s.port, s.dir, flush=True)\n"
        "stop_all(); sys.exit(0 if not port_open(s.host, s.port) and not s.dir.exists() else 1)\n"
    )
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_pool_starts_services_on_many_loopback_addresses_and_stops_them() -> None:
    hosts = [f"127.0.1.{n}" for n in (10, 20, 30)]
    with ServicePool() as pool:
        started = pool.start_many(start_redis, hosts, password="pw")
        assert [s.host for s in started] == hosts
        for service in started:
            assert redis_client(service, "pw").ping()
    for service in started:
        assert_gone(service)


# --------------------------------------------------------------------------- lifecycle of each service

STARTERS: dict[str, Callable[[str], Service]] = {
    "redis": start_redis,
    "etcd": start_etcd,
    "sshd": start_sshd,
    "postgres": start_postgres,
    "registry": start_registry,
    "podman": start_podman_api,
    "jupyter": start_jupyter,
}


@pytest.mark.parametrize("kind", sorted(STARTERS))
def test_service_binds_only_its_host_and_stop_leaves_nothing(kind: str) -> None:
    host = "127.0.1.42"
    with STARTERS[kind](host) as service:
        assert service.running and service.dir.is_dir()
        assert port_open(host, service.port)
        assert not port_open("127.0.0.1", service.port), "bound beyond its own loopback address"
        assert service.startup_seconds is not None
        print(f"{kind} started in {service.startup_seconds:.2f}s")
        logged = bool(service.log_tail())  # a quick start may not have written a line yet
    assert_gone(service)
    assert bool(service.log_tail()) >= logged, "the log should survive stop() for diagnostics"


def assert_gone(service: Service) -> None:
    """Port closed, directory removed, process reaped, and nothing left in its process group."""
    assert not service.running
    assert not port_open(service.host, service.port)
    assert not service.dir.exists()
    assert service.pid is not None
    with pytest.raises(ProcessLookupError):
        os.kill(service.pid, 0)
    with pytest.raises(ProcessLookupError):
        os.killpg(service.pid, 0)


# --------------------------------------------------------------------------- each service answers


def test_redis_answers_without_a_password(redis_server: Service) -> None:
    client = redis_client(redis_server)
    assert client.ping()
    assert client.config_get("protected-mode") == {"protected-mode": "no"}


def test_redis_protected_mode_still_serves_loopback(redis_protected: Service) -> None:
    client = redis_client(redis_protected)
    assert client.config_get("protected-mode") == {"protected-mode": "yes"}


def test_redis_with_password_refuses_anonymous_clients(redis_server_with_password: Service) -> None:
    svc = redis_server_with_password
    with pytest.raises(redis.AuthenticationError):
        redis_client(svc).ping()
    assert redis_client(svc, svc.password).ping()


def test_etcd_v3_gateway_reads_and_writes(etcd_server: Service) -> None:
    key = base64.b64encode(b"/cloudward/harness").decode()
    value = base64.b64encode(b"hello").decode()
    with http() as client:
        assert "etcdserver" in client.get(f"{etcd_server.url}/version").json()
        client.post(f"{etcd_server.url}/v3/kv/put", json={"key": key, "value": value}).raise_for_status()
        got = client.post(f"{etcd_server.url}/v3/kv/range", json={"key": key}).json()
    assert got["kvs"][0]["value"] == value


def offered_auth_methods(service: Service) -> list[str]:
    """What an unauthenticated client learns: the methods sshd would accept next."""
    with socket.create_connection((service.host, service.port), timeout=10) as sock:
        transport = paramiko.Transport(sock)
        try:
            transport.start_client(timeout=10)
            with pytest.raises(paramiko.BadAuthenticationType) as refused:
                transport.auth_none("root")
            return list(refused.value.allowed_types)
        finally:
            transport.close()


def test_sshd_with_passwords_offers_password(sshd_password: Service) -> None:
    assert offered_auth_methods(sshd_password) == ["publickey", "password"]


def test_sshd_keys_only_offers_only_publickey(sshd_keys_only: Service) -> None:
    assert offered_auth_methods(sshd_keys_only) == ["publickey"]


def test_postgres_trust_lets_anyone_in(postgres_trust: PostgresService) -> None:
    assert postgres_trust.password is None
    with psycopg.connect(postgres_trust.dsn) as conn:
        assert conn.execute("select current_setting('listen_addresses')").fetchone() == (postgres_trust.host,)
    assert postgres_trust.sqlalchemy_url.startswith("postgresql+psycopg://postgres@")


def test_postgres_scram_wants_the_password(postgres_scram: PostgresService) -> None:
    svc = postgres_scram
    assert svc.password
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(host=svc.host, port=svc.port, user="postgres", dbname="postgres", connect_timeout=5)
    with psycopg.connect(svc.dsn) as conn:
        assert conn.execute("show password_encryption").fetchone() == ("scram-sha-256",)
    assert svc.sqlalchemy_url == f"postgresql+psycopg://postgres:{svc.password}@{svc.host}:{svc.port}/postgres"


def test_registry_answers_the_v2_api(registry_server: Service) -> None:
    with http() as client:
        base = client.get(f"{registry_server.url}/v2/")
        assert base.status_code == 200
        assert base.headers["Docker-Distribution-Api-Version"] == "registry/2.0"
        catalog = client.get(f"{registry_server.url}/v2/_catalog").json()["repositories"]
    # the registry serves exactly what is stored under its own directory (other tests may have pushed)
    stored = registry_server.dir / "data" / "docker" / "registry" / "v2" / "repositories"
    on_disk = sorted(str(p.parent.relative_to(stored)) for p in stored.rglob("_manifests")) if stored.exists() else []
    assert catalog == on_disk


def test_podman_answers_the_docker_api_with_private_storage(podman_api: Service) -> None:
    with http() as client:
        assert client.get(f"{podman_api.url}/_ping").text == "OK"
        assert client.get(f"{podman_api.url}/version").json()["Components"]
        assert isinstance(client.get(f"{podman_api.url}/images/json").json(), list)
        info = client.get(f"{podman_api.url}/v4.0.0/libpod/info").json()
    # images other tests loaded live in this private store, never in the host's
    assert info["store"]["graphRoot"].startswith(str(podman_api.dir))


def test_jupyter_with_token_refuses_anonymous_clients(jupyter_with_token: Service) -> None:
    svc = jupyter_with_token
    assert svc.token
    with http() as client:
        assert client.get(f"{svc.url}api").json()["version"]
        assert client.get(f"{svc.url}api/contents").status_code == 403
        authed = client.get(f"{svc.url}api/contents", headers={"Authorization": f"token {svc.token}"})
    assert authed.status_code == 200


def test_jupyter_without_token_is_open(jupyter_no_token: Service) -> None:
    assert jupyter_no_token.token == ""
    with http() as client:
        assert client.get(f"{jupyter_no_token.url}api/contents").status_code == 200
