"""What the ASGI, WSGI and Lambda adapters share: the policy, the inspector, the findings queue, and
the decision for one request. Fails open: an error inside the judge is logged and counted, and
the request goes to the application (a protection bug must not become an outage).
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import uuid
from collections.abc import Hashable, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

from cloudward.appsec import guards
from cloudward.appsec.crs import CrsEngine, crs_engine
from cloudward.appsec.engine import Detection, Inspector, UploadScanner, Verdict, load_appsec_rules
from cloudward.appsec.memo import Memo
from cloudward.appsec.policy import EffectivePolicy, Policy, load_policy
from cloudward.appsec.request import HttpRequest
from cloudward.appsec.sink import FindingQueue, Sink
from cloudward.core.rules import Rule, RuleSet

__all__ = ["PolicySource", "Protector", "block_payload"]

log = logging.getLogger("cloudward.appsec")
PolicySource = str | Path | dict[str, Any] | Policy | None
# header values an attacker steers and an application passes on (other headers are the client's own)
_STEERING = frozenset({"user-agent", "referer", "x-forwarded-for", "x-forwarded-host", "x-original-url", "host"})
_arm_guards = guards.install  # under a name the constructor's `guards` flag does not hide
CLEAN_REQUESTS = 1024  # request heads (each at most 4 KiB) remembered as clean, per generation (see Memo)


def block_payload(incident_id: str, status: int = 403) -> bytes:
    """The body of a refusal: an incident id to quote to support, and nothing about why."""
    message = "request blocked" if status == 403 else "request body too large"
    return json.dumps({"error": message, "incident_id": incident_id}).encode()


class Protector:
    def __init__(self, mode: str | None = None, policy: PolicySource = None, *, sink: Sink | None = None,
                 findings: FindingQueue | None = None, rules: RuleSet | Sequence[Rule] | None = None,
                 rules_dirs: Sequence[Path] = (), upload_scanners: Sequence[UploadScanner] = (),
                 guards: bool = False, inspector: Inspector | None = None) -> None:
        loaded = load_policy(policy)
        self.policy = loaded.with_mode(mode) if mode is not None else loaded
        if inspector is not None:  # one compiled set of rules shared by several adapters (and tests)
            self.inspector = inspector
        else:
            ruleset = rules if rules is not None else load_appsec_rules(rules_dirs)
            self.inspector = Inspector(ruleset, upload_scanners=upload_scanners)
        # the optional Core Rule Set engine (policy `crs:`), compiled at start-up: a broken rule is an error now
        self.crs: CrsEngine | None = crs_engine(self.policy.crs) if self.policy.crs is not None else None
        self.queue = findings if findings is not None else FindingQueue(sink)
        self._lock = threading.Lock()
        self.guards = guards  # runtime guards (cloudward.appsec.guards) around the application's call
        if guards:
            _arm_guards()  # now, before the app's startup code opens database connections (see sqlguard)
        self.counters = {"requests": 0, "detected": 0, "blocked": 0, "errors": 0, "guarded": 0}
        self._clean: Memo[bool] = Memo(CLEAN_REQUESTS)  # heads of bodiless requests judged clean (known_clean)

    def quick(self, policy: EffectivePolicy) -> bool:
        """Whether a bodiless request under this policy may be passed by the quiet path at all: not when
        a base64-marked location needs its decoded form, the CRS engine must see the request, or the
        runtime guards need the request's values."""
        return not self.guards and not policy.base64 and (
            self.crs is None or "appsec.crs" in policy.disabled_rules)

    def known_clean(self, key: Hashable) -> bool:
        """True (and counted as a request) when a request with exactly this head was judged clean: the
        verdict is a function of the request and the fixed policy, so it would be clean again. For what
        the quiet path cannot pass (the CRS engine, base64 marks); only bodiless requests are keyed (see
        the adapters), and the memory is bounded."""
        if self._clean[key]:
            self._count("requests")
            return True
        return False

    def remember_clean(self, key: Hashable) -> None:
        self._clean.put(key, True)

    def quiet(self, raw_path: str, query: str, headers: list[tuple[str, str]], policy: EffectivePolicy) -> bool:
        """True (and counted as a request) when a bodiless request with this raw path, query and headers
        would be judged clean: nothing in it that any rule fires on (Inspector.quiet), no base64-marked
        location to decode, no runtime guards to arm. False means only that `judge` must decide."""
        if not self.quick(policy):
            return False
        try:
            if not self.inspector.quiet(raw_path, query, headers, policy):
                return False
        except Exception:  # the full judgement, with its own failure handling, decides
            return False
        self._count("requests")
        return True

    def quiet_head(self, headers: list[tuple[str, str]], policy: EffectivePolicy) -> int:
        """`quiet` in two halves, for an adapter that sees the same header list again and again: this one
        is a function of the list and the policy's allowed methods (Inspector.head_quiet), so a count (not
        -1) may be remembered with the list and handed to `quiet_target` for each request bearing it."""
        if not self.quick(policy):
            return -1
        try:
            return self.inspector.head_quiet(headers, policy.allowed_methods)
        except Exception:
            return -1

    def quiet_target(self, raw_path: str, query: str, host: str, policy: EffectivePolicy, count: int) -> bool:
        """The other half of `quiet` (counted as a request when True), given what `quiet_head` gave."""
        if count < 0 or not self.quick(policy):
            return False
        try:
            if not self.inspector.target_quiet(raw_path, query, host, policy, count):
                return False
        except Exception:
            return False
        self._count("requests")
        return True

    def route(self, method: str, path: str) -> EffectivePolicy:
        return self.policy.for_request(method, path)

    def _count(self, key: str) -> None:
        with self._lock:
            self.counters[key] += 1

    def judge(self, request: HttpRequest, policy: EffectivePolicy) -> Verdict:
        """The verdict on one request; its findings are queued (never written inline)."""
        self._count("requests")
        try:
            verdict = self.inspector.inspect(request, policy)
            if self.crs is not None:
                self.crs.apply(verdict, request, policy)  # never raises; adds an appsec.crs detection
            if request.body_truncated:
                verdict.detections.append(Detection("appsec.body_limit", "body",
                                                    f"longer than {policy.max_body_bytes} bytes"))
                if not verdict.incident_id:
                    verdict.incident_id = uuid.uuid4().hex[:20]
            if verdict.detections or verdict.findings:
                self._count("detected")
                action = "blocked" if self.refusal(verdict, request, policy) else "monitored"
                if action == "blocked":
                    self._count("blocked")
                self.queue.put(self.inspector.findings(verdict, request, self.policy.service, action=action))
            return verdict
        except Exception:
            self._count("errors")
            log.exception("appsec: inspection failed; the request was passed")
            return Verdict(mode=policy.mode)

    def guard(self, request: HttpRequest, policy: EffectivePolicy) -> AbstractContextManager[None]:
        """What to run the application inside: the runtime guards for this request, when turned on."""
        if not self.guards or policy.mode == "off":
            return contextlib.nullcontext()
        fragments = [value.text for value in request.values() if value.group != "headers" or value.name in _STEERING]

        def report(found: guards.Violation, blocked: bool) -> None:
            self._count("guarded")
            detection = Detection("appsec.runtime_guard", f"runtime:{found.kind}", found.fragment[:120], found.detail)
            verdict = Verdict(detections=[detection], incident_id=uuid.uuid4().hex[:20], mode=policy.mode,
                              block=blocked)
            self.queue.put(self.inspector.findings(verdict, request, self.policy.service,
                                                   action="blocked" if blocked else "monitored"))

        return guards.guarding(fragments, block=policy.mode == "block", report=report)

    @staticmethod
    def refusal(verdict: Verdict, request: HttpRequest, policy: EffectivePolicy) -> int:
        """The status to answer instead of the application (403, 413), or 0 to pass the request."""
        if policy.mode != "block":
            return 0
        if verdict.block:
            return 403
        if request.body_truncated and policy.oversize == "reject":
            return 413
        return 0
