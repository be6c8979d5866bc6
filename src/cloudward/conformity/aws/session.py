"""How the account is reached: the standard boto3 credential chain, an optional profile, an optional
role assumed through STS, an optional endpoint (moto, LocalStack, a proxy), and retries.

Every client is made here, with botocore's retry modes (`standard` by default, `adaptive` on
request) so throttling (`ThrottlingException`, `RequestLimitExceeded`, 429/503) is retried with
backoff instead of costing a service its findings. Clients are made per (service, region) and are
thread-safe once built; building them is not, so construction is serialised.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from cloudward.core.errors import UsageError

DEFAULT_REGION = "us-east-1"
RETRY_MODES = ("standard", "adaptive", "legacy")


@dataclass
class SessionOptions:
    profile: str | None = None
    assume_role: str | None = None
    external_id: str | None = None
    endpoint_url: str | None = None
    region: str | None = None  # the home region: where global services (IAM, S3 listing) are asked
    retry_mode: str = "standard"
    max_attempts: int = 10
    timeout: float = 30.0


@dataclass
class AwsSession:
    """One authenticated session and the clients made from it."""

    options: SessionOptions
    boto: Any
    account: str = ""
    partition: str = "aws"
    principal: str = ""
    _clients: dict[tuple[str, str], Any] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def home_region(self) -> str:
        return self.options.region or self.boto.region_name or DEFAULT_REGION

    def client(self, service: str, region: str | None = None) -> Any:
        region = region or self.home_region
        key = (service, region)
        with self._lock:
            cached = self._clients.get(key)
            if cached is None:
                cached = self.boto.client(service, region_name=region, endpoint_url=self.options.endpoint_url,
                                          config=client_config(self.options))
                if service == "s3control" and self.options.endpoint_url:
                    keep_endpoint_host(cached, self.options.endpoint_url)
                self._clients[key] = cached
            return cached

    def enabled_regions(self) -> list[str]:
        """Every region this account has enabled (EC2 DescribeRegions without AllRegions)."""
        answer = self.client("ec2").describe_regions()
        regions = sorted(r["RegionName"] for r in answer.get("Regions", [])
                         if r.get("OptInStatus", "opt-in-not-required") != "not-opted-in")
        if not regions:
            raise UsageError("--regions all: DescribeRegions returned no regions")
        return regions


def keep_endpoint_host(client: Any, endpoint_url: str) -> None:
    """S3 Control's endpoint rules put `<account>.` in front of the host, which a custom endpoint
    (moto, LocalStack, a proxy) does not resolve: send those calls to the endpoint as given."""
    from urllib.parse import urlsplit, urlunsplit

    wanted = urlsplit(endpoint_url).netloc

    def rewrite(request: Any, **_: Any) -> None:
        parts = urlsplit(request.url)
        prefix, _sep, rest = parts.netloc.partition(".")
        if rest == wanted and prefix.isdigit():
            request.url = urlunsplit(parts._replace(netloc=wanted))

    client.meta.events.register("before-sign.s3-control", rewrite)


def client_config(options: SessionOptions) -> Any:
    from botocore.config import Config

    return Config(
        retries={"mode": options.retry_mode, "max_attempts": options.max_attempts},
        connect_timeout=options.timeout,
        read_timeout=options.timeout,
        max_pool_connections=16,
        # S3 Control puts the account id in the host name, which a custom endpoint cannot resolve
        inject_host_prefix=options.endpoint_url is None,
        user_agent_extra="cloudward-conformity",
    )


def open_session(options: SessionOptions) -> AwsSession:
    """Authenticate (and assume the role when asked) and learn the account id from STS.

    Raises UsageError when no credentials are found or the role cannot be assumed: nothing could be
    scanned, and the message says why without echoing any secret.
    """
    try:
        import boto3
        from botocore.exceptions import BotoCoreError, ClientError
    except ImportError:  # pragma: no cover - boto3 is the `aws` extra
        raise UsageError("the AWS scan needs boto3: pip install 'cloudward[aws]'") from None
    if options.retry_mode not in RETRY_MODES:
        raise UsageError(f"--retry-mode: choose from {', '.join(RETRY_MODES)}")
    try:
        base = boto3.Session(profile_name=options.profile, region_name=options.region)
    except BotoCoreError as exc:
        raise UsageError(f"--profile: {exc}") from None
    region = options.region or base.region_name or DEFAULT_REGION
    config = client_config(options)
    try:
        if options.assume_role:
            if not options.assume_role.startswith("arn:"):
                raise UsageError(f"--assume-role: not a role ARN: {options.assume_role!r}")
            sts = base.client("sts", region_name=region, endpoint_url=options.endpoint_url, config=config)
            params: dict[str, Any] = {"RoleArn": options.assume_role, "RoleSessionName": "cloudward-conformity"}
            if options.external_id:
                params["ExternalId"] = options.external_id
            creds = sts.assume_role(**params)["Credentials"]
            boto = boto3.Session(aws_access_key_id=creds["AccessKeyId"],
                                 aws_secret_access_key=creds["SecretAccessKey"],
                                 aws_session_token=creds["SessionToken"], region_name=region)
        else:
            boto = base
        identity = boto.client("sts", region_name=region, endpoint_url=options.endpoint_url,
                               config=config).get_caller_identity()
    except ClientError as exc:
        error = exc.response.get("Error", {})
        what = "sts:AssumeRole" if options.assume_role else "sts:GetCallerIdentity"
        code, message = error.get("Code", "?"), error.get("Message", "")
        raise UsageError(f"cannot authenticate ({what}): {code}: {message}") from None
    except BotoCoreError as exc:
        raise UsageError(f"cannot authenticate: {exc}") from None
    arn = str(identity.get("Arn", ""))
    partition = arn.split(":")[1] if arn.count(":") >= 5 else "aws"
    session = AwsSession(options=SessionOptions(**{**options.__dict__, "region": region}), boto=boto,
                         account=str(identity.get("Account", "")), partition=partition, principal=arn)
    return session
