"""moto's server over HTTP on a loopback port for the storage tests (S3 and SQS), one per session;
each test makes its own buckets, so tests never see each other's objects."""

from __future__ import annotations

import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness.services import Service, start_process

MOTO = Path(sys.executable).parent / "moto_server"


@pytest.fixture(scope="session")
def moto() -> Iterator[Service]:
    assert MOTO.exists(), "moto_server is missing: run `make test` (moto[server] is a dev dependency)"
    with start_process("moto", lambda s: [str(MOTO), "-H", s.host, "-p", str(s.port)]) as service:
        yield service


@pytest.fixture
def aws_env(moto: Service, monkeypatch: pytest.MonkeyPatch) -> str:
    """Fake credentials and the moto endpoint, as a user would set them; returns the endpoint URL."""
    endpoint = f"http://{moto.host}:{moto.port}"
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return endpoint


@pytest.fixture
def s3(aws_env: str) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=aws_env, region_name="us-east-1")


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"cw-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name
