"""ScanResults built by hand from the core models, shared by every writer's tests."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from cloudward.core.finding import Finding, Target
from cloudward.core.scan import ScanResult, ScanStatus

# What a hostile service might put in a banner: markup, an attribute break-out, a terminal escape,
# rich markup, a bidi override and a lone surrogate (from a surrogateescape decode).
HOSTILE = (
    'SSH-2.0-OpenSSH_9.2p1 <script>alert("pwned")</script>"><img src=x onerror=alert(1)>'
    "\x1b[2J\x1b[31m[bold red]boom[/] \u202etxt.exe \udcff"
)
RAW_SECRET = "AKIAIOSFODNN7EXAMPLE"
MASKED_SECRET = "AKIA************MPLE"


def make_findings() -> list[Finding]:
    return [
        Finding(
            rule_id="ssh.password_authentication_enabled",
            title="SSH server accepts password logins",
            severity="medium",
            category="exposure",
            target=Target(kind="service", name="127.0.0.1:22"),
            location={"host": "127.0.0.1", "port": 22, "protocol": "tcp", "tls": False},
            evidence={"service": "ssh", "tls": False, "banner": HOSTILE},
            description="Password logins let attackers brute-force their way in.",
            remediation="Set `PasswordAuthentication no` in sshd_config and use keys.",
            references=["https://man.openbsd.org/sshd_config", "javascript:alert(1)"],
            attack=["T1110.001"],
            tags=["ssh", "teamtnt"],
        ),
        Finding(
            rule_id="redis.unauthenticated",
            title="Redis answers without authentication",
            severity="critical",
            category="exposure",
            target=Target(kind="service", name="127.0.0.1:6379"),
            location={"host": "127.0.0.1", "port": 6379, "protocol": "tcp", "tls": False},
            evidence={"service": "redis", "tls": False, "version": "7.2.4", "role": "master"},
            description="Anyone who reaches the port can read and write data and abuse CONFIG SET.",
            remediation="Require a password (ACLs) and bind Redis to localhost.",
            references=["https://redis.io/docs/latest/operate/oss_and_stack/management/security/"],
            attack=["T1190"],
            compliance={"cis-redis": ["1.1"]},
            tags=["redis", "teamtnt"],
        ),
        Finding(
            rule_id="redis.unauthenticated",
            title="Redis answers without authentication",
            severity="critical",
            category="exposure",
            target=Target(kind="service", name="[::1]:6379"),
            evidence={"service": "redis", "tls": False, "version": "6.0.16"},
            remediation="Require a password (ACLs) and bind Redis to localhost.",
            references=["https://redis.io/docs/latest/operate/oss_and_stack/management/security/"],
            attack=["T1190"],
            tags=["redis"],
        ),
        Finding(
            rule_id="secret.aws_access_key",
            title="AWS access key in a file",
            severity="high",
            category="secret",
            target=Target(kind="path", name="config/app settings.env"),
            location={"line": 12, "column": 5},
            evidence={"secret": MASKED_SECRET, "type": "aws_access_key"},
            remediation="Rotate the key and remove it from the file.",
            attack=["T1552.001"],
            key="hmac-of-the-secret",
        ),
        Finding(
            rule_id="http.server_banner",
            title="HTTP server discloses its version",
            severity="info",
            category="exposure",
            target=Target(kind="service", name="127.0.0.1:8080"),
            evidence={"server": "nginx/1.25.3"},
        ),
        Finding(
            rule_id="docker.image_outdated_base",
            title="Image built on an end-of-life base",
            severity="low",
            category="vulnerability",
            target=Target(kind="image", name="registry.local/app@sha256:0123abcd"),
            evidence={"base": "debian:10"},
        ),
    ]


def make_result(
    findings: list[Finding] | None = None, status: ScanStatus = ScanStatus.COMPLETED
) -> ScanResult:
    result = ScanResult(
        id="5c0ffee5",
        kind="exposure",
        started=datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC),
        finished=datetime(2025, 1, 2, 3, 4, 17, tzinfo=UTC),
        status=status,
        targets=["127.0.0.0/29", "::1"],
        findings=make_findings() if findings is None else findings,
        inventory=[
            {"endpoint": "127.0.0.1:6379", "service": "redis", "version": "7.2.4"},
            {"endpoint": "127.0.0.1:22", "service": "ssh", "banner": HOSTILE},
        ],
        stats={"hosts": 8, "open_ports": 3},
    )
    result.add_error("127.0.0.5:2375", "connection reset by peer <b>mid-banner</b>", "probe")
    result.add_error("127.0.0.3:443", "TLS handshake timed out", "connect")
    return result


@pytest.fixture
def result() -> ScanResult:
    return make_result()


@pytest.fixture
def shuffled(result: ScanResult) -> ScanResult:
    """The same scan with findings and errors in another arrival order."""
    copy = result.model_copy(deep=True)
    random.Random(7).shuffle(copy.findings)
    copy.errors.reverse()
    return copy
