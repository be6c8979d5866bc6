"""Pure functions of the store: which findings a scan covered, and `--expires` parsing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from cloudward.core.errors import UsageError
from cloudward.store import parse_expiry
from cloudward.store.scope import Subject, covers, errored, parse_network_target, parse_ports, split_host_port


def service(host: str, port: int = 6379, with_location: bool = True) -> Subject:
    location = {"host": host, "port": port} if with_location else {}
    name = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    return Subject("service", name, location)


@pytest.mark.parametrize(("target", "host", "expected"), [
    ("10.0.0.5", "10.0.0.5", True),
    ("10.0.0.5", "10.0.0.6", False),
    ("10.0.0.0/24", "10.0.0.255", True),
    ("10.0.0.0/24", "10.0.1.0", False),
    ("10.0.0.7/24", "10.0.0.1", True),  # host bits set: still the /24 the user meant
    ("10.0.0.10-20", "10.0.0.15", True),
    ("10.0.0.10-20", "10.0.0.21", False),
    ("10.0.0.250-10.0.1.5", "10.0.1.2", True),
    ("2001:db8::/64", "2001:db8::1", True),
    ("2001:db8::/64", "10.0.0.1", False),
    ("::1", "::1", True),
    ("Redis.Example.COM.", "redis.example.com", True),
    ("redis.example.com", "10.0.0.5", False),  # no resolving here: not covered, left open
    ("garbage target !", "10.0.0.5", False),
])
def test_exposure_scope_by_host(target: str, host: str, expected: bool) -> None:
    assert covers("exposure", [target], {}, service(host)) is expected


def test_exposure_scope_with_ports() -> None:
    assert covers("exposure", ["10.0.0.5:6379"], {}, service("10.0.0.5", 6379))
    assert not covers("exposure", ["10.0.0.5:6379"], {}, service("10.0.0.5", 2375))
    assert covers("exposure", ["[2001:db8::1]:6379"], {}, service("2001:db8::1", 6379))
    assert covers("exposure", ["10.0.0.5"], {"ports": "1-1024,6379"}, service("10.0.0.5", 6379))
    assert not covers("exposure", ["10.0.0.5"], {"ports": [22, "80-443"]}, service("10.0.0.5", 6379))
    # A ports value we cannot read covers nothing rather than everything.
    assert not covers("exposure", ["10.0.0.5"], {"ports": {"weird": 1}}, service("10.0.0.5", 6379))


def test_exposure_scope_falls_back_to_the_target_name() -> None:
    assert covers("exposure", ["10.0.0.0/8"], {}, service("10.1.2.3", with_location=False))


def test_no_targets_means_the_whole_kind() -> None:
    assert covers("exposure", [], {}, service("192.0.2.1"))


def test_generic_scope() -> None:
    path = Subject("path", "/srv/app/.env", {"path": "/srv/app/.env"})
    assert covers("secrets", ["/srv"], {}, path)
    assert covers("secrets", ["/srv/"], {}, path)
    assert covers("secrets", ["/"], {}, path)
    assert not covers("secrets", ["/sr"], {}, path)  # a prefix of a name is not a parent directory
    obj = Subject("object", "bucket/key/file.zip")
    assert covers("storage", ["s3://bucket"], {}, obj)
    assert not covers("storage", ["s3://bucket2"], {}, obj)
    assert covers("image", ["registry.local/app"], {}, Subject("image", "registry.local/app:1.2"))
    assert covers("image", ["registry.local/app"], {}, Subject("image", "registry.local/app@sha256:ab"))
    assert not covers("image", ["registry.local/app"], {}, Subject("image", "registry.local/apple:1"))
    assert not covers("secrets", ["/srv/a"], {}, Subject("path", "/srv/a:b", {"path": "/srv/a:b"}))


def test_host_scope_is_the_audited_root_and_never_partial() -> None:
    subject = Subject("host", "web1", {"root": "/mnt/snap", "path": "/etc/ssh/sshd_config"})
    assert covers("host", ["/mnt/snap"], {"partial": False}, subject)
    assert not covers("host", ["/"], {"partial": False}, subject)
    assert not covers("host", ["/mnt/snap"], {"partial": True}, subject)


def test_machine_wide_audit_closes_nothing_when_partial() -> None:
    assert covers("audit", ["127.0.0.1:6379"], {}, service("127.0.0.1"))
    assert not covers("audit", ["127.0.0.1:6379"], {"partial": True}, service("127.0.0.1"))


def test_error_targets() -> None:
    assert errored(["10.0.0.5:6379"], service("10.0.0.5"))
    assert errored(["10.0.0.0/24"], service("10.0.0.5"))
    assert not errored(["10.0.0.6"], service("10.0.0.5"))
    assert not errored([], service("10.0.0.5"))


def test_parsers() -> None:
    assert split_host_port("[::1]:80") == ("::1", 80)
    assert split_host_port("::1") == ("::1", None)
    assert split_host_port("host:http") == ("host:http", None)
    assert parse_network_target("10.0.0.1-300") is None
    assert parse_network_target("10.0.0.1-2001:db8::1") is None
    assert parse_ports(["x"]) is None
    assert parse_ports(True) is None
    ports = parse_ports("22, 8000-8100")
    assert ports is not None and ports(8080) and not ports(None) and not ports(23)


NOW = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(("text", "expected"), [
    ("30d", NOW + timedelta(days=30)),
    ("12h", NOW + timedelta(hours=12)),
    (" 2W ", NOW + timedelta(weeks=2)),
    ("90m", NOW + timedelta(minutes=90)),
    ("2025-12-31", datetime(2025, 12, 31, tzinfo=UTC)),
    ("2025-12-31T18:00", datetime(2025, 12, 31, 18, tzinfo=UTC)),
    ("2025-12-31T18:00+02:00", datetime(2025, 12, 31, 16, tzinfo=UTC)),
])
def test_parse_expiry(text: str, expected: datetime) -> None:
    assert parse_expiry(text, NOW) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("2020-01-01", "in the past"),
    ("0d", "already over"),
    ("soon", "neither an ISO date"),
    ("30y", "neither an ISO date"),
    ("99999999999d", "too far"),
])
def test_parse_expiry_rejects(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_expiry(text, NOW)
