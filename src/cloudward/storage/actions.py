"""What File Storage Security does with a verdict, by policy: tag the object, quarantine it, promote
a clean one, notify a webhook.

Specs (`--action`, repeatable):

    tag                          cloudward-scan-result / -scan-date / -rules tags, merged with the
                                 object's own tags (S3 allows 10: the user's are kept, ours replaced)
    quarantine=s3://bucket[/p]   move objects whose verdict is in `quarantine_on` (default malicious
                                 and secret) to bucket/p/<key>: copy, verify, tag the copy, then delete
                                 the original
    promote=s3://bucket[/p]      copy clean objects to bucket/p/<key> (verified, tagged); the original
                                 stays
    webhook=URL                  POST a JSON summary of each object whose verdict is in `notify_on`
                                 (default malicious, secret and error) and that was judged now (not a
                                 remembered verdict); https, or plain http to loopback only unless
                                 allowed

An action never loses an object: every step that could fail comes before the delete, the copy is
made from exactly the scanned content (`CopySourceIfMatch`, or the version the scan read), and the
original is deleted only while it still holds that content (its version, or `If-Match` on the
delete). Any failure leaves the original where it was and becomes an error naming the object and
the step. Actions also run for remembered verdicts (an unchanged object is not read again, but a new
policy still applies to it); tagging is then a no-op when the tags already say the same.
"""

from __future__ import annotations

import ipaddress
import json
import re
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from cloudward import __version__
from cloudward.core.errors import UsageError
from cloudward.storage.objects import _describe, _status, parse_s3_url
from cloudward.storage.scan import VERDICTS, ObjectResult

__all__ = [
    "TAG_DATE",
    "TAG_RESULT",
    "TAG_RULES",
    "ActionOutcome",
    "ActionSpec",
    "Actions",
    "BackgroundActions",
    "Location",
    "parse_actions",
    "parse_verdicts",
]

TAG_RESULT = "cloudward-scan-result"
TAG_DATE = "cloudward-scan-date"
TAG_RULES = "cloudward-rules"
OUR_TAGS = (TAG_RESULT, TAG_DATE, TAG_RULES)
MAX_TAGS = 10
MAX_TAG_VALUE = 256
SINGLE_COPY_MAX = 256 * 1024 * 1024  # above this, boto3's managed (multipart, parallel) copy
DEFAULT_QUARANTINE_ON = ("malicious", "secret")
DEFAULT_NOTIFY_ON = ("malicious", "secret", "error")
WEBHOOK_TIMEOUT = 10.0
WEBHOOK_RETRIES = 2
_TAG_UNSAFE = re.compile(r"[^\w\s+\-=.:/@]")  # what S3 accepts in a tag value


class ActionError(Exception):
    """One step of one action failed; the message names the step, the object and what happened."""


@dataclass(frozen=True)
class Location:
    """Where quarantined or promoted objects go: a bucket and an optional key prefix."""

    bucket: str
    prefix: str = ""

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    def key_for(self, key: str) -> str:
        if not self.prefix:
            return key
        return self.prefix + key if self.prefix.endswith("/") else f"{self.prefix}/{key}"

    def holds(self, bucket: str | None, key: str) -> bool:
        """Is this object already inside the location (scanning the quarantine itself)?"""
        if bucket != self.bucket:
            return False
        if not self.prefix:
            return True
        prefix = self.prefix if self.prefix.endswith("/") else self.prefix + "/"
        return key.startswith(prefix)


@dataclass(frozen=True)
class ActionSpec:
    kind: str  # tag | quarantine | promote | webhook
    location: Location | None = None
    url: str | None = None

    @property
    def needs_s3(self) -> bool:
        return self.kind != "webhook"


@dataclass
class ActionOutcome:
    """What the actions did to one object: `done` for people ("tagged", "quarantined to s3://..."),
    `errors` each naming the object and the step, `moved` when the original is gone (quarantined)."""

    done: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    moved: bool = False


def parse_verdicts(text: str | None, option: str, default: tuple[str, ...]) -> tuple[str, ...]:
    """`malicious,secret` -> ("malicious", "secret"); `all` is every verdict."""
    if text is None:
        return default
    if text.strip() == "all":
        return VERDICTS
    chosen = tuple(v.strip() for v in text.split(",") if v.strip())
    unknown = [v for v in chosen if v not in VERDICTS]
    if unknown or not chosen:
        raise UsageError(f"{option}: unknown verdict {', '.join(unknown) or repr(text)} "
                         f"(choose from {', '.join(VERDICTS)}, or all)")
    return chosen


def parse_actions(specs: list[str] | None, *, allow_http_webhook: bool = False) -> list[ActionSpec]:
    """`--action` values -> specs; anything malformed is a UsageError naming it."""
    out: list[ActionSpec] = []
    for raw in specs or []:
        kind, sep, value = raw.partition("=")
        kind = kind.strip()
        if kind == "tag" and not sep:
            out.append(ActionSpec("tag"))
        elif kind in ("quarantine", "promote") and value:
            try:
                bucket, prefix = parse_s3_url(value)
            except ValueError as exc:
                raise UsageError(f"--action {kind}: {exc} (expected {kind}=s3://bucket[/prefix])") from None
            out.append(ActionSpec(kind, location=Location(bucket, prefix)))
        elif kind == "webhook" and value:
            out.append(ActionSpec("webhook", url=_webhook_url(value, allow_http_webhook)))
        else:
            raise UsageError(f"--action {raw!r}: expected tag, quarantine=s3://bucket[/prefix], "
                             "promote=s3://bucket[/prefix] or webhook=URL")
    kinds = [a.kind for a in out]
    for kind in ("tag", "quarantine", "promote"):
        if kinds.count(kind) > 1:
            raise UsageError(f"--action {kind}: given more than once")
    return out


def _webhook_url(url: str, allow_http: bool) -> str:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--action webhook: {_show(url)}: expected an http(s):// URL")
    if parts.scheme == "http" and not allow_http and not _loopback(parts.hostname):
        raise UsageError(f"--action webhook: {_show(url)}: plain http only to loopback "
                         "(use https, or --allow-http-webhook)")
    return url


def _loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _show(url: str) -> str:
    """A webhook URL as it may be printed: its path and query often hold a token."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{parts.port}' if parts.port else ''}/..."


def _etag(value: Any) -> str:
    return str(value or "").strip('"')


def tag_value(text: str) -> str:
    """What S3 accepts in a tag value: letters, digits, space and + - = . _ : / @; at most 256."""
    return _TAG_UNSAFE.sub("_", text)[:MAX_TAG_VALUE]


def rules_value(rule_ids: list[str]) -> str:
    """Rule ids, space separated (commas are not allowed in tag values), cut at a whole id."""
    out = ""
    for rule in rule_ids:
        piece = tag_value(rule)
        candidate = f"{out} {piece}" if out else piece
        if len(candidate) > MAX_TAG_VALUE:
            return (out + " ...") if len(out) + 4 <= MAX_TAG_VALUE else out[: MAX_TAG_VALUE - 4] + " ..."
        out = candidate
    return out


class Actions:
    """The actions of one scan or listener, applied to one ObjectResult at a time (thread-safe: the
    listener applies them from its workers). `stats` counts what was done."""

    def __init__(self, specs: list[ActionSpec], *, s3: Any = None,
                 quarantine_on: tuple[str, ...] = DEFAULT_QUARANTINE_ON,
                 notify_on: tuple[str, ...] = DEFAULT_NOTIFY_ON, webhook_timeout: float = WEBHOOK_TIMEOUT,
                 webhook_retries: int = WEBHOOK_RETRIES, tool_version: str = __version__) -> None:
        self.specs = specs
        self.s3 = s3
        self.quarantine_on, self.notify_on = quarantine_on, notify_on
        self.webhook_timeout, self.webhook_retries = webhook_timeout, webhook_retries
        self.tool_version = tool_version
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(("tagged", "quarantined", "promoted", "notified", "action_errors"), 0)
        self._http: Any = None
        self.tag = any(s.kind == "tag" for s in specs)
        self.quarantine = next((s.location for s in specs if s.kind == "quarantine"), None)
        self.promote = next((s.location for s in specs if s.kind == "promote"), None)
        self.webhooks = [s.url for s in specs if s.kind == "webhook" and s.url]
        if any(s.needs_s3 for s in specs) and s3 is None:
            raise ValueError("S3 actions need an S3 client")

    def __bool__(self) -> bool:
        return bool(self.specs)

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def check_targets(self, targets: list[str]) -> None:
        """Refuse, before anything is read, what cannot work: S3 actions on local files, and a
        quarantine or promotion into the very bucket being scanned without a prefix."""
        s3_actions = [s.kind for s in self.specs if s.needs_s3]
        for target in targets:
            if not target.startswith("s3://"):
                if s3_actions:
                    raise UsageError(f"--action {s3_actions[0]}: only for s3:// targets ({target} is local; "
                                     "only webhook applies to local files)")
                continue
            bucket, _ = parse_s3_url(target)
            for spec in self.specs:
                if spec.location is not None and spec.location.bucket == bucket and not spec.location.prefix:
                    raise UsageError(f"--action {spec.kind}={spec.location.url}: the scanned bucket itself; "
                                     f"give a prefix ({spec.kind}=s3://{bucket}/{spec.kind}/)")

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- one object ------------------------------------------------------------------------------

    def apply(self, res: ObjectResult) -> ActionOutcome:
        """Run every configured action on one scanned object; never raises for S3 or HTTP failures."""
        outcome = ActionOutcome()
        obj = res.obj
        s3_object = obj.bucket is not None
        if self.tag and s3_object:
            self._step(outcome, "tag", lambda: self._tag_original(res, outcome))
        if self.quarantine is not None and s3_object and res.verdict in self.quarantine_on:
            self._step(outcome, "quarantine", lambda: self._quarantine(res, outcome))
        if self.promote is not None and s3_object and res.verdict == "clean" and not outcome.moved:
            self._step(outcome, "promote", lambda: self._promote(res, outcome))
        if self.webhooks and res.verdict in self.notify_on and not res.remembered:
            for url in self.webhooks:
                self._step(outcome, "webhook", lambda url=url: self._notify(url, res, outcome))
        return outcome

    def _step(self, outcome: ActionOutcome, name: str, run: Any) -> None:
        try:
            run()
        except Exception as exc:  # ActionError names the step; anything else still names the action
            message = str(exc) if isinstance(exc, ActionError) else f"{name}: {type(exc).__name__}: {exc}"
            if name in ("quarantine", "promote") and "left in place" not in message:
                message += "; the original was left in place"
            outcome.errors.append(message)
            self._count("action_errors")

    # -- tag -------------------------------------------------------------------------------------

    def _our_tags(self, res: ObjectResult) -> list[dict[str, str]]:
        tags = [{"Key": TAG_RESULT, "Value": tag_value(res.verdict)},
                {"Key": TAG_DATE, "Value": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}]
        if res.rule_ids:
            tags.append({"Key": TAG_RULES, "Value": rules_value(res.rule_ids)})
        return tags

    def _tag_original(self, res: ObjectResult, outcome: ActionOutcome) -> None:
        obj = res.obj
        assert obj.bucket is not None
        head = self._head(obj.bucket, obj.key, obj.version_id, step="tag")
        if head is None:
            raise ActionError(f"tag: {obj.url}: the object is gone")
        if obj.etag and _etag(head.get("ETag")) != obj.etag:
            raise ActionError(f"tag: {obj.url}: changed since it was scanned (ETag {obj.etag}, now "
                              f"{_etag(head.get('ETag'))}): not tagged")
        version = obj.version_id or _version(head)
        written, left_out = self._put_tags(obj.bucket, obj.key, version, res, step="tag")
        if written:
            self._count("tagged")
            outcome.done.append("tagged")
        else:
            outcome.done.append("tags unchanged")
        if left_out:
            raise ActionError(left_out)

    def _put_tags(self, bucket: str, key: str, version: str | None, res: ObjectResult, *,
                  step: str) -> tuple[bool, str | None]:
        """Merge our tags into the object's (the user's kept, ours replaced). Returns whether tags
        were written (not when the object already carries the same verdict and rules: a remembered
        result) and, when the user's tags left no room for all of ours, the error saying so."""
        url = f"s3://{bucket}/{key}"
        where: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version:
            where["VersionId"] = version
        try:
            existing = self.s3.get_object_tagging(**where).get("TagSet", [])
        except Exception as exc:
            raise ActionError(f"{step}: {url}: cannot read its tags: {_describe(exc)}") from None
        ours = self._our_tags(res)
        current = {t["Key"]: t["Value"] for t in existing}
        wanted = {t["Key"]: t["Value"] for t in ours}
        if all(current.get(k) == wanted.get(k) for k in (TAG_RESULT, TAG_RULES)) and TAG_DATE in current:
            return False, None
        users = [t for t in existing if t["Key"] not in OUR_TAGS]
        room = MAX_TAGS - len(users)
        kept, dropped = ours[:max(room, 0)], ours[max(room, 0):]
        if not kept:
            raise ActionError(f"{step}: {url}: already has {len(users)} tags of its own (S3 allows "
                              f"{MAX_TAGS}): not tagged, the user's tags kept")
        try:
            self.s3.put_object_tagging(**where, Tagging={"TagSet": users + kept})
        except Exception as exc:
            raise ActionError(f"{step}: {url}: cannot write tags: {_describe(exc)}") from None
        if dropped:
            return True, (f"{step}: {url}: {len(users)} tags of its own leave room for only {len(kept)} of "
                          f"cloudward's; left out {', '.join(t['Key'] for t in dropped)}")
        return True, None

    # -- quarantine and promote ------------------------------------------------------------------

    def _quarantine(self, res: ObjectResult, outcome: ActionOutcome) -> None:
        obj, dest = res.obj, self.quarantine
        assert obj.bucket is not None and dest is not None
        if dest.holds(obj.bucket, obj.key):  # e.g. the listener hearing of the quarantine's own copies
            outcome.done.append("already in quarantine")
            return
        dest_key = dest.key_for(obj.key)
        dest_url = f"s3://{dest.bucket}/{dest_key}"
        source = self._source(res, "quarantine")
        existing = self._head(dest.bucket, dest_key, None, step=f"quarantine (check {dest_url})", url=obj.url)
        if existing is not None and not (_etag(existing.get("ETag")) == source.etag
                                         and int(existing.get("ContentLength", -1)) == source.size):
            if _version(existing) is None:
                raise ActionError(f"quarantine (check {dest_url}): {obj.url}: the quarantine already holds a "
                                  "different object under this key and keeps no versions: not overwritten, "
                                  "the original was left in place")
            existing = None  # a versioned quarantine keeps the earlier object: copy over it
        if existing is None:
            self._copy(source, dest.bucket, dest_key, "quarantine")
        self._verify(source, dest.bucket, dest_key, "quarantine", copied=existing is None)
        # the copy carries at least the verdict (or this raises); the user's own tags came along
        self._put_tags(dest.bucket, dest_key, None, res, step=f"quarantine (tag {dest_url})")
        self._delete(source, dest_url)
        outcome.moved = True
        outcome.done.append(f"quarantined to {dest_url}")
        self._count("quarantined")

    def _promote(self, res: ObjectResult, outcome: ActionOutcome) -> None:
        obj, dest = res.obj, self.promote
        assert obj.bucket is not None and dest is not None
        if dest.holds(obj.bucket, obj.key):
            return  # already where clean objects go
        dest_key = dest.key_for(obj.key)
        dest_url = f"s3://{dest.bucket}/{dest_key}"
        source = self._source(res, "promote")
        self._copy(source, dest.bucket, dest_key, "promote")
        self._verify(source, dest.bucket, dest_key, "promote", copied=True)
        self._put_tags(dest.bucket, dest_key, None, res, step=f"promote (tag {dest_url})")
        outcome.done.append(f"promoted to {dest_url}")
        self._count("promoted")

    def _source(self, res: ObjectResult, action: str) -> _Source:
        """The object as it is now, which must be what was scanned: same ETag (and version)."""
        obj = res.obj
        assert obj.bucket is not None
        head = self._head(obj.bucket, obj.key, obj.version_id, step=f"{action} (check)", url=obj.url)
        if head is None:
            raise ActionError(f"{action} (check): {obj.url}: the object is gone")
        etag = _etag(head.get("ETag"))
        if obj.etag and etag != obj.etag:
            raise ActionError(f"{action} (check): {obj.url}: changed since it was scanned (ETag {obj.etag}, "
                              f"now {etag}): left in place")
        encryption = str(head.get("ServerSideEncryption") or "")
        return _Source(url=obj.url, bucket=obj.bucket, key=obj.key, etag=etag,
                       size=int(head.get("ContentLength", 0)), version=obj.version_id or _version(head),
                       etag_is_md5="-" not in etag and not encryption.startswith("aws:kms")
                       and not head.get("SSECustomerAlgorithm"),
                       content_type=head.get("ContentType"), metadata=head.get("Metadata") or {})

    def _copy(self, source: _Source, bucket: str, key: str, action: str) -> None:
        dest_url = f"s3://{bucket}/{key}"
        copy_source: dict[str, str] = {"Bucket": source.bucket, "Key": source.key}
        if source.version:
            copy_source["VersionId"] = source.version
        try:
            if source.size <= SINGLE_COPY_MAX:
                self.s3.copy_object(Bucket=bucket, Key=key, CopySource=copy_source, CopySourceIfMatch=source.etag,
                                    MetadataDirective="COPY", TaggingDirective="COPY")
            else:
                from boto3.s3.transfer import TransferConfig

                extra: dict[str, Any] = {"CopySourceIfMatch": source.etag, "Metadata": source.metadata}
                if source.content_type:
                    extra["ContentType"] = source.content_type
                self.s3.copy(copy_source, bucket, key, ExtraArgs=extra,
                             Config=TransferConfig(multipart_threshold=SINGLE_COPY_MAX,
                                                   multipart_chunksize=64 * 1024 * 1024, max_concurrency=8))
        except Exception as exc:
            raise ActionError(f"{action} (copy to {dest_url}): {source.url}: {_describe(exc)}; "
                              "the original was left in place") from None

    def _verify(self, source: _Source, bucket: str, key: str, action: str, *, copied: bool) -> None:
        dest_url = f"s3://{bucket}/{key}"
        head = self._head(bucket, key, None, step=f"{action} (verify {dest_url})", url=source.url)
        if head is None:
            raise ActionError(f"{action} (verify {dest_url}): {source.url}: the copy is not there; "
                              "the original was left in place")
        size, etag = int(head.get("ContentLength", -1)), _etag(head.get("ETag"))
        single = copied and source.size <= SINGLE_COPY_MAX
        if size != source.size or (single and source.etag_is_md5 and etag != source.etag):
            raise ActionError(f"{action} (verify {dest_url}): {source.url}: the copy differs ({size} bytes, "
                              f"ETag {etag}; the original: {source.size} bytes, ETag {source.etag}); "
                              "the original was left in place")

    def _delete(self, source: _Source, dest_url: str) -> None:
        step = "quarantine (delete the original)"
        where: dict[str, Any] = {"Bucket": source.bucket, "Key": source.key}
        if source.version:
            where["VersionId"] = source.version  # exactly the scanned content, however the key moved on
        else:
            head = self._head(source.bucket, source.key, None, step=step, url=source.url)
            if head is None or _etag(head.get("ETag")) != source.etag:
                raise ActionError(f"{step}: {source.url}: changed since it was scanned: left in place "
                                  f"(the copy is at {dest_url})")
            where["IfMatch"] = source.etag
        try:
            self.s3.delete_object(**where)
        except Exception as exc:
            if where.pop("IfMatch", None) and _code(exc) == "NotImplemented":
                try:  # an endpoint without conditional deletes: the check above stands in
                    self.s3.delete_object(**where)
                    return
                except Exception as again:
                    exc = again
            raise ActionError(f"{step}: {source.url}: {_describe(exc)}; left in place "
                              f"(the copy is at {dest_url})") from None

    def _head(self, bucket: str, key: str, version: str | None, *, step: str, url: str | None = None) -> Any:
        """HEAD an object: its response, None when it does not exist, ActionError otherwise."""
        where: dict[str, Any] = {"Bucket": bucket, "Key": key}
        if version:
            where["VersionId"] = version
        try:
            return self.s3.head_object(**where)
        except Exception as exc:
            if _status(exc) == 404 and self._bucket_exists(bucket):
                return None
            raise ActionError(f"{step}: {url or f's3://{bucket}/{key}'}: s3://{bucket}: {_why(exc)}") from None

    def _bucket_exists(self, bucket: str) -> bool:
        try:
            self.s3.head_bucket(Bucket=bucket)
            return True
        except Exception:
            return False

    # -- webhook ---------------------------------------------------------------------------------

    def payload(self, res: ObjectResult, outcome: ActionOutcome) -> dict[str, Any]:
        """The JSON a webhook receives: the object, the verdict, the findings as reported (their
        evidence is masked by the engines), what was done. Never any of the object's content."""
        obj = res.obj
        return {
            "schema": "cloudward/storage-scan/v1",
            "tool": {"name": "cloudward", "version": self.tool_version},
            "scanned_at": datetime.now(UTC).isoformat(),
            "object": {"url": obj.url, "bucket": obj.bucket, "key": obj.key, "version_id": obj.version_id,
                       "etag": obj.etag, "size": obj.size},
            "verdict": res.verdict,
            "rule_ids": res.rule_ids,
            "findings": [f.model_dump(mode="json", include={"rule_id", "title", "severity", "category",
                                                            "fingerprint", "location", "evidence"})
                         for f in res.findings],
            "errors": list(res.errors) + list(outcome.errors),
            "actions": list(outcome.done),
        }

    def _notify(self, url: str, res: ObjectResult, outcome: ActionOutcome) -> None:
        import httpx

        if self._http is None:
            with self._lock:
                if self._http is None:
                    host = urlsplit(url).hostname or ""
                    self._http = httpx.Client(timeout=httpx.Timeout(self.webhook_timeout, connect=5.0),
                                              follow_redirects=False, trust_env=not _loopback(host),
                                              headers={"User-Agent": f"cloudward/{self.tool_version}"})
        body = json.dumps(self.payload(res, outcome), separators=(",", ":")).encode()
        last = "no attempt"
        for attempt in range(self.webhook_retries + 1):
            if attempt:
                time.sleep(0.5 * attempt)
            try:
                response = self._http.post(url, content=body, headers={"Content-Type": "application/json"})
            except httpx.HTTPError as exc:
                last = f"{type(exc).__name__}: {exc}"
                continue
            if 200 <= response.status_code < 300:
                outcome.done.append("notified")
                self._count("notified")
                return
            last = f"HTTP {response.status_code}"
            if response.status_code < 500 and response.status_code != 429:
                break  # the receiver refused the request: sending it again will not help
        raise ActionError(f"webhook ({_show(url)}): {res.obj.url}: not delivered after "
                          f"{attempt + 1} attempt(s): {last}")


class BackgroundActions:
    """Actions off the scan's own thread, so a bucket scan is not slowed to one S3 round trip at a
    time: `submit` (scan_objects' `on_result`) hands each result to `workers` threads, with at most
    four times as many waiting (then it waits for the oldest); `drain()` waits for the rest.
    `on_outcome(result, outcome)` always runs in the submitting thread, in submission order, so
    the caller's bookkeeping needs no lock."""

    def __init__(self, actions: Actions, workers: int,
                 on_outcome: Callable[[ObjectResult, ActionOutcome], None]) -> None:
        from concurrent.futures import ThreadPoolExecutor

        self.actions, self.on_outcome = actions, on_outcome
        self.limit = max(1, workers) * 4
        self._pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="storage-action")
        self._pending: deque[tuple[ObjectResult, Future[ActionOutcome]]] = deque()

    def submit(self, res: ObjectResult) -> None:
        self._pending.append((res, self._pool.submit(self.actions.apply, res)))
        while len(self._pending) > self.limit:
            self._collect()

    def _collect(self) -> None:
        res, future = self._pending.popleft()
        self.on_outcome(res, future.result())

    def drain(self) -> None:
        """Wait for every submitted action (a quarantine half-way is finished, never abandoned)."""
        try:
            while self._pending:
                self._collect()
        finally:
            self._pool.shutdown(wait=True)


@dataclass(frozen=True)
class _Source:
    url: str
    bucket: str
    key: str
    etag: str
    size: int
    version: str | None
    etag_is_md5: bool
    content_type: str | None
    metadata: dict[str, str]


def _version(head: Any) -> str | None:
    version = head.get("VersionId") if isinstance(head, dict) else None
    return str(version) if version and version != "null" else None


def _code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _why(exc: BaseException) -> str:
    """A HEAD error has no body: say what its status means."""
    status = _status(exc)
    known = {403: "access denied", 404: "no such bucket", 400: "bad request (wrong region or SSE-C object?)"}
    return known.get(status, _describe(exc)) if status is not None else _describe(exc)
