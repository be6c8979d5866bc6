"""pytest fixtures over the harness, for ``from tests.harness.fixtures import *`` in a conftest.

The named services are session-scoped: starting a daemon costs up to a couple of seconds and the
probes under test only read from them.  A test that changes a service's state, or needs a specific
setup or several hosts, should start its own through the function-scoped ``services`` pool, which
stops everything it started when the test ends, failed or not.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.harness.services import (
    ClamdService,
    PostgresService,
    Service,
    ServicePool,
    start_clamd,
    start_etcd,
    start_jupyter,
    start_podman_api,
    start_postgres,
    start_redis,
    start_registry,
    start_sshd,
)

__all__ = [
    "clamd_server",
    "etcd_server",
    "jupyter_no_token",
    "jupyter_with_token",
    "podman_api",
    "postgres_scram",
    "postgres_trust",
    "redis_protected",
    "redis_server",
    "redis_server_with_password",
    "registry_server",
    "services",
    "session_services",
    "sshd_keys_only",
    "sshd_password",
]


@pytest.fixture
def services() -> Iterator[ServicePool]:
    """``services.start(start_redis, host="127.0.1.10", password="x")``; all stopped after the test."""
    with ServicePool() as pool:
        yield pool


@pytest.fixture(scope="session")
def session_services() -> Iterator[ServicePool]:
    """Like ``services`` but lives for the whole run, for expensive setups shared by many tests."""
    with ServicePool() as pool:
        yield pool


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Service]:
    """redis, no password, protected mode off."""
    with start_redis() as service:
        yield service


@pytest.fixture(scope="session")
def redis_server_with_password() -> Iterator[Service]:
    """redis with requirepass; the password is ``.password``."""
    with start_redis(password="cloudward-test-pw") as service:
        yield service


@pytest.fixture(scope="session")
def redis_protected() -> Iterator[Service]:
    """redis, no password, protected mode on (loopback clients still get in)."""
    with start_redis(protected_mode=True) as service:
        yield service


@pytest.fixture(scope="session")
def etcd_server() -> Iterator[Service]:
    """Single-member etcd without auth; ``.url`` is the client URL."""
    with start_etcd() as service:
        yield service


@pytest.fixture(scope="session")
def sshd_password() -> Iterator[Service]:
    """sshd offering publickey,password and permitting root: the weak setup."""
    with start_sshd(password_auth=True, permit_root_login="yes") as service:
        yield service


@pytest.fixture(scope="session")
def sshd_keys_only() -> Iterator[Service]:
    """sshd offering publickey only, root by key only: the hardened setup."""
    with start_sshd(password_auth=False, permit_root_login="prohibit-password") as service:
        yield service


@pytest.fixture(scope="session")
def postgres_trust() -> Iterator[PostgresService]:
    """PostgreSQL 15 trusting every login; ``.dsn`` carries no password."""
    with start_postgres(auth="trust") as service:
        yield service


@pytest.fixture(scope="session")
def postgres_scram() -> Iterator[PostgresService]:
    """PostgreSQL 15 with scram-sha-256; ``.password`` is the postgres user's."""
    with start_postgres(auth="scram-sha-256") as service:
        yield service


@pytest.fixture(scope="session")
def registry_server() -> Iterator[Service]:
    """Docker registry v2 without auth, deletes enabled."""
    with start_registry() as service:
        yield service


@pytest.fixture(scope="session")
def clamd_server() -> Iterator[ClamdService]:
    """clamd with test signatures (EICAR, CLAMD_MARKER); ``.socket`` and ``.port`` (TCP), or
    ``.unix_address`` and ``.tcp_address`` for the client."""
    with start_clamd() as service:
        yield service


@pytest.fixture(scope="session")
def podman_api() -> Iterator[Service]:
    """podman's Docker-compatible API, unauthenticated on TCP, with private storage."""
    with start_podman_api() as service:
        yield service


@pytest.fixture(scope="session")
def jupyter_with_token() -> Iterator[Service]:
    """jupyter-server with a random token, ``.token``."""
    with start_jupyter() as service:
        yield service


@pytest.fixture(scope="session")
def jupyter_no_token() -> Iterator[Service]:
    """jupyter-server with no authentication at all."""
    with start_jupyter(token="") as service:
        yield service
