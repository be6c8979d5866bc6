"""Application security: protection inside Python web apps, APIs and serverless functions.

    app = cloudward.appsec.ASGIMiddleware(app, mode="block")        # FastAPI / Starlette
    app.wsgi_app = cloudward.appsec.WSGIMiddleware(app.wsgi_app)     # Flask / Django
    @cloudward.appsec.protect_lambda                                  # API Gateway v1/v2 events

Requests are parsed into located values, decoded, and judged by the `appsec` rules
(`cloudward/appsec/rules/*.yaml`); block mode answers 403 with an incident id, monitor mode only
records. Findings go through a bounded queue to a sink on a background thread.
"""

from __future__ import annotations

from cloudward.appsec.asgi import ASGIMiddleware
from cloudward.appsec.aws_lambda import protect_lambda, request_from_event
from cloudward.appsec.engine import Detection, Inspector, UploadScanner, Verdict, load_appsec_rules
from cloudward.appsec.policy import Policy, load_policy
from cloudward.appsec.protect import Protector
from cloudward.appsec.request import HttpRequest
from cloudward.appsec.sink import FindingQueue, JsonLinesSink, LoggingSink
from cloudward.appsec.wsgi import WSGIMiddleware

__all__ = ["ASGIMiddleware", "Detection", "FindingQueue", "HttpRequest", "Inspector", "JsonLinesSink", "LoggingSink",
           "Policy", "Protector", "UploadScanner", "Verdict", "WSGIMiddleware", "load_appsec_rules", "load_policy",
           "protect_lambda", "request_from_event"]
