"""What every collector is handed: the region, clients, and calls that turn failures into errors
naming the service, region, API call and missing permission."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from cloudward.conformity.aws.model import CollectError, Resource, UnitResult, permission_for

# Error codes that mean "this is not configured" rather than "the call failed".
NOT_FOUND = ("NoSuchEntity", "NoSuchBucketPolicy", "ServerSideEncryptionConfigurationNotFoundError",
             "NoSuchPublicAccessBlockConfiguration", "ResourceNotFoundException", "NoSuchBucket",
             "RepositoryPolicyNotFoundException", "LifecyclePolicyNotFoundException",
             "NoSuchConfigurationRecorderException", "NoSuchLifecycleConfiguration", "NotFoundException",
             "PolicyNotFound", "ReportNotPresent")


class Context:
    """One (service, region) collection. Collectors call `add`, `call` and `pages`."""

    def __init__(self, session: Any, service: str, region: str, result: UnitResult) -> None:
        self.session = session
        self.service = service
        self.region = region  # "global" for account-wide services
        self.account: str = session.account
        self.partition: str = session.partition
        self.result = result

    @property
    def api_region(self) -> str:
        return self.session.home_region if self.region == "global" else self.region

    def client(self, name: str | None = None) -> Any:
        return self.session.client(name or self.service, self.api_region)

    def add(self, type_: str, id_: str, arn: str = "", region: str | None = None, **facts: Any) -> Resource:
        resource = Resource(service=self.service, type=type_, id=id_, region=region or self.region,
                            account=self.account, arn=arn, facts=facts)
        self.result.resources.append(resource)
        return resource

    def arn(self, service: str, resource: str, region: str | None = None) -> str:
        return f"arn:{self.partition}:{service}:{self.region if region is None else region}:{self.account}:{resource}"

    def call(self, client: Any, operation: str, *, missing_ok: tuple[str, ...] = NOT_FOUND,
             **params: Any) -> dict[str, Any] | None:
        """Call `client.<operation>(**params)`; None when the error code says "not configured";
        CollectError (naming call and permission) for anything else."""
        from botocore.exceptions import BotoCoreError, ClientError

        self.result.calls += 1
        self.result.last_operation = _operation_name(client, operation)
        try:
            answer = getattr(client, operation)(**params)
        except ClientError as exc:
            error = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
            code = str(error.get("Code", "") or "")
            if code in missing_ok:
                return None
            raise self._error(client, exc.operation_name, code, str(error.get("Message", "") or "")) from None
        except BotoCoreError as exc:
            raise self._error(client, _operation_name(client, operation), type(exc).__name__, str(exc)) from None
        if not isinstance(answer, dict):
            raise self._error(client, _operation_name(client, operation), "MalformedResponse",
                              f"expected a document, got {type(answer).__name__}")
        return answer

    def pages(self, client: Any, operation: str, key: str, **params: Any) -> list[Any]:
        """Every item under `key` across all pages of a paginated call."""
        from botocore.exceptions import BotoCoreError, ClientError

        items: list[Any] = []
        self.result.last_operation = _operation_name(client, operation)
        try:
            for page in client.get_paginator(operation).paginate(**params):
                self.result.calls += 1
                value = page.get(key, [])
                if not isinstance(value, list):
                    raise self._error(client, _operation_name(client, operation), "MalformedResponse",
                                      f"{key} is not a list")
                items.extend(value)
        except ClientError as exc:
            error = exc.response.get("Error", {}) if isinstance(exc.response, dict) else {}
            raise self._error(client, exc.operation_name, str(error.get("Code", "") or ""),
                              str(error.get("Message", "") or "")) from None
        except BotoCoreError as exc:
            raise self._error(client, _operation_name(client, operation), type(exc).__name__, str(exc)) from None
        return items

    def guarded(self, resource_path: str, fn: Callable[[], Any], default: Any) -> Any:
        """Run a per-resource call; its failure is recorded for that resource only."""
        try:
            return fn()
        except CollectError as exc:
            exc.resource = resource_path
            self.result.errors.append(exc)
            return default

    def _error(self, client: Any, operation: str, code: str, message: str) -> CollectError:
        name = client.meta.service_model.service_name if hasattr(client, "meta") else self.service
        text = message.strip().splitlines()[0][:300] if message.strip() else ""
        if code and code.isdigit():  # an HTML error page: the API is not offered by this endpoint
            text = f"HTTP {code} from the endpoint (API not offered here?)"
        return CollectError(service=self.service, region=self.region, message=text, operation=operation,
                            permission=permission_for(name, operation),
                            code=code)


def _operation_name(client: Any, method: str) -> str:
    try:
        mapping = client.meta.method_to_api_mapping
        return str(mapping.get(method, method))
    except AttributeError:
        return method


# --- small helpers shared by collectors ------------------------------------------------------------


def days_since(value: Any, now: datetime | None = None) -> int | None:
    """Whole days from a datetime (or ISO string) to now; None when there is no date."""
    if value is None or value == "" or value in ("N/A", "no_information", "not_supported"):
        return None
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return max(0, int(((now or datetime.now(UTC)) - value).days))


def policy_document(value: Any) -> dict[str, Any]:
    """A policy as a dict, whether the API gave a dict, JSON text or URL-encoded JSON (IAM)."""
    if isinstance(value, dict):
        return value
    if not isinstance(value, str) or not value.strip():
        return {}
    text = value if value.lstrip().startswith("{") else unquote(value)
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    return doc if isinstance(doc, dict) else {}


def statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    value = doc.get("Statement", [])
    if isinstance(value, dict):
        value = [value]
    return [s for s in value if isinstance(s, dict)] if isinstance(value, list) else []


def tag_map(tags: Any) -> dict[str, str]:
    """An EC2/RDS tag list ([{Key, Value}]) as a dict."""
    return {str(t.get("Key")): str(t.get("Value", "")) for t in tags or [] if isinstance(t, dict) and t.get("Key")}


def as_list(value: Any) -> list[Any]:
    if value is None:
        return []
    return list(value) if isinstance(value, list | tuple) else [value]


def grants_admin(doc: dict[str, Any]) -> bool:
    """An Allow of every action (`*` or `*:*`) on every resource: admin-equivalent."""
    for stmt in statements(doc):
        if stmt.get("Effect") != "Allow" or "NotAction" in stmt:
            continue
        actions = [str(a) for a in as_list(stmt.get("Action"))]
        resources = [str(r) for r in as_list(stmt.get("Resource"))]
        if any(a in ("*", "*:*") for a in actions) and "*" in resources:
            return True
    return False


def allowed_actions(doc: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for stmt in statements(doc):
        if stmt.get("Effect") == "Allow":
            out.extend(str(a) for a in as_list(stmt.get("Action")))
    return out


def _principal_is_everyone(principal: Any) -> bool:
    if principal == "*":
        return True
    if isinstance(principal, dict):
        return any(v == "*" or (isinstance(v, list) and "*" in v) for k, v in principal.items() if k == "AWS")
    return False


_SCOPING_KEYS = ("aws:sourcearn", "aws:sourceaccount", "aws:sourcevpc", "aws:sourcevpce", "aws:sourceip",
                 "aws:principalorgid", "aws:principalaccount", "aws:principalarn", "aws:sourceowner",
                 "aws:sourceorgid", "aws:userid", "aws:principalorgpaths", "lambda:functionurlauthtype")


def public_statements(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Allow statements open to every principal without a condition that narrows who can use them."""
    out = []
    for stmt in statements(doc):
        if stmt.get("Effect") != "Allow" or not _principal_is_everyone(stmt.get("Principal")):
            continue
        condition = stmt.get("Condition") or {}
        keys = {k.lower() for block in condition.values() if isinstance(block, dict) for k in block}
        if keys & set(_SCOPING_KEYS):
            continue
        out.append(stmt)
    return out


def denies_insecure_transport(doc: dict[str, Any]) -> bool:
    for stmt in statements(doc):
        if stmt.get("Effect") != "Deny":
            continue
        for block in (stmt.get("Condition") or {}).values():
            if isinstance(block, dict) and str(block.get("aws:SecureTransport", "")).lower() == "false":
                return True
    return False
