"""AWS: STS GetCallerIdentity signed with the found key pair answers "whose key is this?".

GetCallerIdentity needs no IAM permission and changes nothing, so it is the usual liveness check
(it does appear in the key owner's CloudTrail). botocore is imported lazily: it is an optional
dependency (`pip install cloudward[aws]`). The endpoint is `--verify-endpoint`, else
AWS_ENDPOINT_URL_STS, else AWS_ENDPOINT_URL, else botocore's default for us-east-1. Short timeouts
and a single attempt: a scan must not hang on a slow or unreachable provider.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from cloudward.core.errors import UsageError
from cloudward.secrets.engine import Secret, SecretMatch
from cloudward.secrets.verify import Verifier, VerifyResult

__all__ = ["AwsVerifier", "sts_endpoint"]

KEY_ID_RULE = "secret.aws_access_key_id"
SESSION_TOKEN_RULE = "secret.aws_session_token"  # noqa: S105 - a rule id
#: How far (in lines) the key ID / session token may be from the secret access key.
WITHIN_LINES = 5
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 5.0
REGION = "us-east-1"

# Answers that mean "this credential does not work" (as opposed to "we could not ask").
_INVALID_CODES = frozenset({"InvalidClientTokenId", "SignatureDoesNotMatch", "ExpiredToken",
                            "UnrecognizedClientException", "InvalidAccessKeyId", "AuthFailure",
                            "InvalidToken", "TokenRefreshRequired"})


def sts_endpoint(option: str | None = None) -> str | None:
    """The STS endpoint to use (None: botocore's default), validated as an http(s) URL."""
    endpoint = option or os.environ.get("AWS_ENDPOINT_URL_STS") or os.environ.get("AWS_ENDPOINT_URL") or None
    if endpoint is not None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UsageError(f"--verify-endpoint: {endpoint!r} is not an http(s) URL")
    return endpoint


def _botocore() -> Any:
    try:
        import botocore.config
        import botocore.exceptions
        import botocore.session
    except ImportError:
        raise UsageError("--verify of AWS keys needs botocore: pip install cloudward[aws]") from None
    return botocore


def _nearest(match: SecretMatch, blob_matches: Sequence[SecretMatch], rule_id: str) -> SecretMatch | None:
    best: SecretMatch | None = None
    for other in blob_matches:
        if other.rule_id != rule_id or other.suppressed is not None or other is match:
            continue
        distance = abs(other.line - match.line)
        if distance <= WITHIN_LINES and (best is None or distance < abs(best.line - match.line)):
            best = other
    return best


class AwsVerifier(Verifier):
    """Verifies a secret access key finding with the access key ID (and session token) beside it."""

    rule_ids = ("secret.aws_secret_access_key", "secret.aws_secret_access_key_paired")

    def __init__(self) -> None:
        self.endpoint: str | None = None

    def __repr__(self) -> str:
        return f"AwsVerifier(endpoint={self.endpoint!r})"

    def configure(self, *, endpoint: str | None = None) -> None:
        _botocore()  # fail early, before anything is read, when the extra is missing
        self.endpoint = sts_endpoint(endpoint)

    def collect(self, match: SecretMatch, blob_matches: Sequence[SecretMatch]) -> dict[str, Secret] | None:
        key_id = _nearest(match, blob_matches, KEY_ID_RULE)
        if key_id is None:
            return None
        values = {"access_key_id": key_id.secret, "secret_access_key": match.secret}
        token = _nearest(match, blob_matches, SESSION_TOKEN_RULE)
        if token is not None:
            values["session_token"] = token.secret
        return values

    def verify(self, secret_values: Mapping[str, Secret]) -> VerifyResult:
        botocore = _botocore()
        token = secret_values.get("session_token")
        config = botocore.config.Config(connect_timeout=CONNECT_TIMEOUT, read_timeout=READ_TIMEOUT,
                                        retries={"total_max_attempts": 1, "mode": "standard"},
                                        user_agent_extra="cloudward-verify")
        try:
            client = botocore.session.Session().create_client(
                "sts", region_name=REGION, endpoint_url=self.endpoint, config=config,
                aws_access_key_id=secret_values["access_key_id"].reveal().decode("ascii", "replace"),
                aws_secret_access_key=secret_values["secret_access_key"].reveal().decode("ascii", "replace"),
                aws_session_token=token.reveal().decode("ascii", "replace") if token is not None else None,
            )
            answer = client.get_caller_identity()
        except botocore.exceptions.ClientError as exc:
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            text = f"{code}: {error.get('Message', '')}".strip(": ")
            return VerifyResult("invalid" if code in _INVALID_CODES else "error", message=text)
        except botocore.exceptions.BotoCoreError as exc:
            return VerifyResult("error", message=f"{type(exc).__name__}: {exc}")
        except (OSError, ValueError) as exc:
            return VerifyResult("error", message=type(exc).__name__)
        identity = {"account": str(answer.get("Account", "")), "arn": str(answer.get("Arn", "")),
                    "user_id": str(answer.get("UserId", ""))}
        return VerifyResult("valid", {k: v for k, v in identity.items() if v})
