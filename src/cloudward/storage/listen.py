"""Scan on upload: consume S3 `ObjectCreated` notifications from SQS, scan each new object, act on
the verdict, record the result, and only then delete the message.

The queue is long-polled (WaitTimeSeconds up to 20, up to 10 messages at a time, never more than
there are free workers, so no message waits out its visibility timeout in a local backlog). Each
message is handled by a worker: its records are parsed (keys are URL-encoded with `+` for space),
each object is HEADed, scanned with `scan_object`, acted on (`actions.py`), handed to the caller's
`record` callback (the CLI stores it; this capability never imports the store), remembered in the
scan state, and then the message is deleted. A message whose object is already remembered with the
same ETag and rule set (a duplicate delivery) is not scanned again. While a worker is busy the
message's visibility is extended, so a large object is never handed to a second consumer.

Nothing is lost on failure: the message stays in the queue and comes back after `retry_delay`
seconds; once it has been received `max_attempts` times it is moved to the dead-letter queue when
one is given (sent there first, then deleted), or left to the queue's own RedrivePolicy. A message
that is not an S3 notification at all goes to the dead-letter queue at once. `s3:TestEvent`
messages (sent when notifications are configured) and records other than ObjectCreated are deleted
and ignored; an object deleted before it could be scanned (HEAD says 404 while its bucket exists)
has nothing left to scan, and its message is deleted.

A stop (SIGINT/SIGTERM, or `stop()`) ends receiving; messages in hand are finished. A signal that
arrives during a long poll interrupts it (`stop()` from another thread waits for it to end, at most
WaitTimeSeconds); what that poll had received comes back after its visibility timeout. `once`
drains the queue: it returns when a receive finds nothing and no message is in hand.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from cloudward.core.signals import stop_on_signals as _stop_on_signals
from cloudward.storage.actions import ActionOutcome, Actions
from cloudward.storage.objects import ObjectError, _describe, _status, display_key, s3_object
from cloudward.storage.scan import ObjectResult, StorageScanOptions, _remembered, scan_object

__all__ = ["ListenError", "ListenSettings", "Listener", "Notification", "ParsedMessage", "parse_message",
           "queue_region", "stop_on_signals"]

MAX_MESSAGES = 10
MAX_WAIT = 20
ONCE_WAIT = 1  # --once: a short long-poll (still asks every SQS server, unlike a short poll)

Recorder = Callable[[ObjectResult, ActionOutcome], None]
Log = Callable[[str], None]


class ListenError(Exception):
    """The queue cannot be used at all (missing, no access); the message names it."""


@dataclass(frozen=True)
class Notification:
    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    event: str = "ObjectCreated:Put"

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


@dataclass
class ParsedMessage:
    test: bool = False
    records: list[Notification] = field(default_factory=list)
    ignored: int = 0  # records of other events (ObjectRemoved...)


def parse_message(body: str) -> ParsedMessage:
    """An S3 event notification (straight from S3, or wrapped by SNS) -> the objects it created.
    ValueError when the body is not one."""
    try:
        doc = json.loads(body)
    except ValueError:
        raise ValueError("not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("not a JSON object")
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):  # S3 -> SNS -> SQS
        return parse_message(doc["Message"])
    if doc.get("Event") == "s3:TestEvent":
        return ParsedMessage(test=True)
    records = doc.get("Records")
    if not isinstance(records, list):
        raise ValueError("no Records")
    parsed = ParsedMessage()
    for record in records:
        if not isinstance(record, dict):
            raise ValueError("a record that is not an object")
        name = str(record.get("eventName", "")).removeprefix("s3:")
        if not name.startswith("ObjectCreated:"):
            parsed.ignored += 1
            continue
        s3 = _mapping(record.get("s3"))
        bucket = _mapping(s3.get("bucket")).get("name")
        obj = _mapping(s3.get("object"))
        key = obj.get("key")
        if not isinstance(bucket, str) or not bucket or not isinstance(key, str) or not key:
            raise ValueError(f"{name} record without bucket or key")
        parsed.records.append(Notification(bucket=bucket, key=unquote_plus(key),
                                           version_id=str(obj.get("versionId") or "") or None,
                                           etag=str(obj.get("eTag") or "").strip('"') or None, event=name))
    return parsed


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def queue_region(queue_url: str) -> str | None:
    """The region in an AWS queue URL (`https://sqs.eu-west-1.amazonaws.com/...`), if it says one."""
    from urllib.parse import urlsplit

    host = (urlsplit(queue_url).hostname or "").split(".")
    if len(host) >= 4 and host[0] == "sqs" and host[2] == "amazonaws":
        return host[1]
    if len(host) >= 4 and host[1] == "queue" and host[2] == "amazonaws":
        return host[0]
    return None


@dataclass
class ListenSettings:
    queue_url: str
    dead_letter_queue: str | None = None
    max_attempts: int = 3
    once: bool = False
    concurrency: int = 4
    visibility_timeout: int = 300
    wait_seconds: int = MAX_WAIT
    retry_delay: int = 30


@dataclass
class _InHand:
    message: dict[str, Any]
    extended: float


class _ReceiveInterrupted(BaseException):
    """Raised by the signal handler while the loop waits in a long poll: a stop need not wait for
    it to end. Whatever that receive had returned is delivered again after its visibility timeout."""


class Listener:
    """One consumer of one queue. `run()` blocks until stopped (or drained with `once`)."""

    def __init__(self, sqs: Any, s3: Any, options: StorageScanOptions, settings: ListenSettings, *,
                 actions: Actions | None = None, record: Recorder | None = None, log: Log | None = None) -> None:
        self.sqs, self.s3, self.options, self.settings = sqs, s3, options, settings
        self.actions = actions
        self.record = record
        self.log: Log = log or (lambda _line: None)
        self._stop = threading.Event()
        self.redrive = False  # the queue has its own RedrivePolicy (learnt by check())
        self.receiving = False  # in a long poll, in the thread running run(): a stop may interrupt it
        self._record_lock = threading.Lock()
        self._lock = threading.Lock()
        self._counts: dict[str, int] = dict.fromkeys(
            ("messages", "objects", "clean", "malicious", "secret", "error", "bytes", "duplicates", "gone",
             "test_events", "ignored_records", "deleted", "retried", "dead_lettered", "receive_errors"), 0)

    @property
    def stats(self) -> dict[str, int]:
        with self._lock:
            counts = dict(self._counts)
        if self.actions is not None:
            counts.update(self.actions.stats)
        return counts

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counts[name] += n

    def stop(self) -> None:
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def check(self) -> list[str]:
        """Can the queues be read? Warnings to show (no dead-letter queue anywhere); ListenError if not."""
        warnings = []
        try:
            attributes = self.sqs.get_queue_attributes(QueueUrl=self.settings.queue_url,
                                                       AttributeNames=["RedrivePolicy"]).get("Attributes", {})
        except Exception as exc:
            raise ListenError(f"--queue {self.settings.queue_url}: {_describe(exc)}") from None
        if self.settings.dead_letter_queue:
            try:
                self.sqs.get_queue_attributes(QueueUrl=self.settings.dead_letter_queue, AttributeNames=["QueueArn"])
            except Exception as exc:
                raise ListenError(f"--dead-letter-queue {self.settings.dead_letter_queue}: {_describe(exc)}") from None
        self.redrive = "RedrivePolicy" in attributes
        if not self.settings.dead_letter_queue and not self.redrive:
            warnings.append(f"{self.settings.queue_url} has no RedrivePolicy and no --dead-letter-queue was given: "
                            "a message that keeps failing is retried until the queue's retention drops it")
        return warnings

    # -- the loop --------------------------------------------------------------------------------

    def run(self) -> dict[str, int]:
        settings = self.settings
        workers = max(1, settings.concurrency)
        in_hand: dict[Future[None], _InHand] = {}
        errors_in_a_row = 0
        pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="listen")
        try:
            while not self._stop.is_set():
                self._reap(in_hand)
                self._extend(in_hand)
                free = workers - len(in_hand)
                if free <= 0:
                    wait(list(in_hand), timeout=1.0, return_when=FIRST_COMPLETED)
                    continue
                try:
                    messages = self._receive(min(MAX_MESSAGES, free))
                    errors_in_a_row = 0
                except _ReceiveInterrupted:
                    break
                except Exception as exc:
                    errors_in_a_row += 1
                    self._count("receive_errors")
                    self.log(f"receive failed: {_describe(exc)}")
                    if settings.once and errors_in_a_row >= 3:
                        raise ListenError(f"{settings.queue_url}: {_describe(exc)}") from None
                    self._stop.wait(min(2 ** errors_in_a_row, 30))
                    continue
                if not messages:
                    if settings.once:
                        if not in_hand:
                            break
                        wait(list(in_hand))  # then look again: a failed message may be visible again
                    continue
                now = time.monotonic()
                for message in messages:
                    self._count("messages")
                    in_hand[pool.submit(self.handle, message)] = _InHand(message, now)
            wait(list(in_hand))  # stopping: finish what is in hand (each deletes its own message)
            self._reap(in_hand)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)
        return self.stats

    def _receive(self, count: int) -> list[dict[str, Any]]:
        wait_seconds = ONCE_WAIT if self.settings.once else max(0, min(self.settings.wait_seconds, MAX_WAIT))
        self.receiving = True
        try:
            if self._stop.is_set():
                return []
            response = self.sqs.receive_message(
                QueueUrl=self.settings.queue_url, MaxNumberOfMessages=count, WaitTimeSeconds=wait_seconds,
                VisibilityTimeout=self.settings.visibility_timeout,
                MessageSystemAttributeNames=["ApproximateReceiveCount"])
        finally:
            self.receiving = False
        return list(response.get("Messages", []))

    def _reap(self, in_hand: dict[Future[None], _InHand]) -> None:
        for future in [f for f in in_hand if f.done()]:
            held = in_hand.pop(future)
            exc = None if future.cancelled() else future.exception()
            if exc is not None:  # handle() catches everything: a bug, and the message comes back
                self.log(f"message {held.message.get('MessageId', '?')}: {type(exc).__name__}: {exc}")

    def _extend(self, in_hand: dict[Future[None], _InHand]) -> None:
        """Keep the messages still being worked on invisible to other consumers."""
        now = time.monotonic()
        half = self.settings.visibility_timeout / 2
        for future, held in list(in_hand.items()):
            if not future.done() and now - held.extended >= half:
                try:
                    self.sqs.change_message_visibility(QueueUrl=self.settings.queue_url,
                                                       ReceiptHandle=held.message["ReceiptHandle"],
                                                       VisibilityTimeout=self.settings.visibility_timeout)
                    held.extended = now
                except Exception as exc:
                    self.log(f"could not extend a message's visibility: {_describe(exc)}")

    # -- one message -----------------------------------------------------------------------------

    def handle(self, message: dict[str, Any]) -> None:
        """Everything about one message; never raises (a failure leaves the message in the queue)."""
        attempts = int((message.get("Attributes") or {}).get("ApproximateReceiveCount", "1") or 1)
        try:
            parsed = parse_message(str(message.get("Body", "")))
        except ValueError as exc:
            self._failed(message, attempts, [f"not an S3 event notification: {exc}"], poison=True)
            return
        if parsed.test:
            self._count("test_events")
            self._delete(message)
            return
        self._count("ignored_records", parsed.ignored)
        if attempts > self.settings.max_attempts and self.settings.dead_letter_queue:
            # received more often than allowed without a verdict (a worker died on it): do not try again
            self._failed(message, attempts, [f"received {attempts} times without being handled"])
            return
        problems: list[str] = []
        for note in parsed.records:
            try:
                problems += self.process(note)
            except Exception as exc:
                problems.append(f"{display_key(note.url)}: {type(exc).__name__}: {exc}")
        if problems:
            self._failed(message, attempts, problems)
        else:
            self._delete(message)

    def process(self, note: Notification) -> list[str]:
        """Scan, act, record and remember one object; the problems that should make it be retried."""
        options = self.options
        try:
            obj = s3_object(self.s3, note.bucket, note.key, note.version_id)
        except ObjectError as exc:
            if self._gone(note):
                self._count("gone")
                self.log(f"gone       {display_key(note.url)}  (deleted before it was scanned)")
                return []
            return [str(exc)]
        res = _remembered(obj, options)
        if res is not None:
            self._count("duplicates")
        else:
            res = scan_object(obj, options)
            self._count("objects")
            self._count(res.verdict)
            self._count("bytes", res.bytes_read)
        outcome = self.actions.apply(res) if self.actions else ActionOutcome()
        problems = [f"{display_key(obj.url)}: {e}" for e in res.errors] if res.verdict == "error" else []
        problems += outcome.errors
        if not res.remembered and self.record is not None:
            try:
                with self._record_lock:
                    self.record(res, outcome)
            except Exception as exc:
                problems.append(f"{display_key(obj.url)}: the result could not be recorded: {exc}")
        state = options.state
        if state is not None:
            if outcome.moved:
                state.forget(obj.url)
            elif not problems and not res.remembered:
                stored = [f.model_dump(mode="json", exclude={"target", "fingerprint"}) for f in res.findings]
                state.put(obj.url, obj.etag, options.ruleset, res.verdict, res.rule_ids, stored)
        done = ", ".join(outcome.done)
        rules = " ".join(res.rule_ids)
        self.log(f"{('unchanged' if res.remembered else res.verdict):<10} {display_key(obj.url)}"
                 f"{f'  {rules}' if rules else ''}{f'  [{done}]' if done else ''}")
        return problems

    def _gone(self, note: Notification) -> bool:
        """Deleted (or quarantined by an earlier delivery) before we got to it: the bucket is there,
        the object is not."""
        try:
            self.s3.head_bucket(Bucket=note.bucket)
        except Exception:
            return False
        where: dict[str, Any] = {"Bucket": note.bucket, "Key": note.key}
        if note.version_id:
            where["VersionId"] = note.version_id
        try:
            self.s3.head_object(**where)
        except Exception as exc:
            return _status(exc) in (404, 405)
        return False

    def _delete(self, message: dict[str, Any]) -> None:
        try:
            self.sqs.delete_message(QueueUrl=self.settings.queue_url, ReceiptHandle=message["ReceiptHandle"])
            self._count("deleted")
        except Exception as exc:  # it comes back and is recognised as a duplicate
            self.log(f"could not delete a handled message: {_describe(exc)}")

    def _failed(self, message: dict[str, Any], attempts: int, problems: list[str], *, poison: bool = False) -> None:
        settings = self.settings
        reason = "; ".join(problems)
        last = poison or attempts >= settings.max_attempts
        if last and settings.dead_letter_queue and self._dead_letter(message, attempts, reason):
            return
        if last and not settings.dead_letter_queue:
            if not self.redrive:  # nothing will ever take it away: at least do not hurry it back
                self.log(f"failed {attempts} time(s), back after the visibility timeout (no dead-letter "
                         f"queue): {reason}")
                self._count("retried")
                return
            self.log(f"failed {attempts} time(s), left to the queue's redrive policy: {reason}")
        else:
            self.log(f"failed (attempt {attempts} of {settings.max_attempts}), will retry: {reason}")
        self._count("retried")
        try:
            self.sqs.change_message_visibility(QueueUrl=settings.queue_url, ReceiptHandle=message["ReceiptHandle"],
                                               VisibilityTimeout=settings.retry_delay)
        except Exception as exc:  # it comes back when its visibility timeout runs out
            self.log(f"could not release a failed message early: {_describe(exc)}")

    def _dead_letter(self, message: dict[str, Any], attempts: int, reason: str) -> bool:
        """Send a copy to the dead-letter queue, then delete the original; False (and the message
        left where it is) when the copy could not be sent."""
        dlq = self.settings.dead_letter_queue
        assert dlq is not None
        send: dict[str, Any] = {
            "QueueUrl": dlq, "MessageBody": str(message.get("Body", "")),
            "MessageAttributes": {
                "cloudward-error": {"DataType": "String", "StringValue": reason[:4000] or "failed"},
                "cloudward-source-queue": {"DataType": "String", "StringValue": self.settings.queue_url},
                "cloudward-receive-count": {"DataType": "Number", "StringValue": str(attempts)},
            },
        }
        if dlq.endswith(".fifo"):
            send["MessageGroupId"] = "cloudward"
            send["MessageDeduplicationId"] = str(message.get("MessageId", ""))[:128] or str(time.time_ns())
        try:
            self.sqs.send_message(**send)
        except Exception as exc:
            self.log(f"could not move a failed message to {dlq}: {_describe(exc)}")
            return False
        self._count("dead_lettered")
        self.log(f"moved to the dead-letter queue after {attempts} attempt(s): {reason}")
        self._delete(message)
        return True


def stop_on_signals(listener: Listener) -> AbstractContextManager[list[int]]:
    """SIGINT and SIGTERM stop the listener gracefully (in hand finished, nothing new received); a
    second SIGINT interrupts at once (what was not deleted is delivered again). Yields the signals
    received (core/signals.py)."""
    return _stop_on_signals(listener, _ReceiveInterrupted)
