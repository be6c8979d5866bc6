"""A moto server over HTTP on a loopback port (one per session), planted with a weak and a hardened
account in two regions (tests/conformity/aws/accounts.py). Tests talk to it through a proxy that also
answers the few APIs moto does not serve (missing_apis.py: SSM managed instances, AWS Backup
selections); other proxies in front of that throttle or deny chosen API calls."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.conformity.aws import accounts
from tests.conformity.aws.missing_apis import MotoPlus
from tests.conformity.aws.proxy import Proxy, signing_service
from tests.harness.services import start_process

__all__ = ["Proxy", "run_scan", "signing_service"]

MOTO = Path(sys.executable).parent / "moto_server"
MOTO_ENV = {"MOTO_IAM_LOAD_MANAGED_POLICIES": "true", "MOTO_EC2_LOAD_DEFAULT_AMIS": "false"}
CREDS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": accounts.HOME}


@pytest.fixture(scope="session")
def aws_creds() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        for name, value in CREDS.items():
            mp.setenv(name, value)
        for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
            mp.delenv(name, raising=False)
        mp.setenv("AWS_CONFIG_FILE", "/nonexistent/cloudward-test-config")
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent/cloudward-test-credentials")
        yield


@pytest.fixture(scope="session")
def moto_endpoint(aws_creds: None) -> Iterator[str]:
    """moto, plus the APIs it lacks answered from what the accounts planted outside it."""
    assert MOTO.exists(), "moto_server is missing: run scripts/setup (moto[server] is a dev dependency)"
    with start_process("moto-conformity", lambda s: [str(MOTO), "-H", s.host, "-p", str(s.port)],
                       env={**os.environ, **MOTO_ENV}) as service:
        raw = f"http://{service.host}:{service.port}"
        outside = accounts.OutsideMoto()
        accounts.plant_weak(raw, outside)
        accounts.plant_hardened(raw, outside)
        with MotoPlus(raw, outside) as plus:
            yield plus.url


def run_scan(endpoint: str, account: str, regions: tuple[str, ...] = accounts.REGIONS,
             services: list[str] | None = None, **session: Any) -> Any:
    """The library path of `conformity scan aws`: session, collectors, link, rules -> ScanResult."""
    from cloudward.cli.common import load_all_rules
    from cloudward.conformity.aws.collectors import COLLECTORS
    from cloudward.conformity.aws.scan import Judge, collect_account, to_result
    from cloudward.conformity.aws.session import SessionOptions, open_session

    opened = open_session(SessionOptions(endpoint_url=endpoint, region=accounts.HOME,
                                         assume_role=f"arn:aws:iam::{account}:role/audit", **session))
    scan = collect_account(opened, list(regions), services or list(COLLECTORS))
    return to_result(scan, Judge(load_all_rules()))


@pytest.fixture(scope="session")
def weak(moto_endpoint: str) -> Any:
    return run_scan(moto_endpoint, accounts.WEAK)


@pytest.fixture(scope="session")
def hardened(moto_endpoint: str) -> Any:
    return run_scan(moto_endpoint, accounts.HARDENED)


