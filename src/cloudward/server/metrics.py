"""Prometheus metrics at /metrics: requests, jobs, webhook deliveries, and the store's open
findings per severity (counted at scrape time, one indexed GROUP BY).

Each app gets its own CollectorRegistry, so two apps in one process (tests) never collide and
nothing from other libraries' global registry leaks out. Request metrics are labelled by route
template (`/api/v1/findings/{fingerprint}`), never by raw path, so cardinality stays bounded.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from cloudward.core.severity import Severity
from cloudward.server.db import ServerDB
from cloudward.store.models import OPEN, FindingRow, JobRow

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StoreCollector(Collector):
    def __init__(self, db: ServerDB) -> None:
        self.db = db

    def collect(self) -> Iterator[GaugeMetricFamily]:
        findings = GaugeMetricFamily("cloudward_findings_open", "Open findings in the store, by severity",
                                     labels=["severity"])
        jobs = GaugeMetricFamily("cloudward_jobs", "Jobs in the store, by status", labels=["status"])
        try:
            with self.db.read() as session:
                ranks = dict(session.execute(
                    select(FindingRow.severity_rank, func.count())
                    .where(FindingRow.status == OPEN).group_by(FindingRow.severity_rank)).all())
                states = dict(session.execute(select(JobRow.status, func.count()).group_by(JobRow.status)).all())
        except Exception:  # a scrape must answer even when the store does not
            return
        for severity in Severity:
            findings.add_metric([severity.value], float(ranks.get(severity.rank, 0)))
        for status in ("queued", "running", "succeeded", "failed", "cancelled"):
            jobs.add_metric([status], float(states.get(status, 0)))
        yield findings
        yield jobs


class Metrics:
    def __init__(self, db: ServerDB | None = None) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter("cloudward_http_requests", "HTTP requests answered",
                                ["method", "route", "status"], registry=self.registry)
        self.latency = Histogram("cloudward_http_request_duration_seconds", "Time to answer a request",
                                 ["method", "route"], registry=self.registry,
                                 buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        self.jobs_finished = Counter("cloudward_jobs_finished", "Jobs this server saw finish, by status",
                                     ["status"], registry=self.registry)
        self.webhooks = Counter("cloudward_webhook_deliveries", "Webhook deliveries, by result",
                                ["result"], registry=self.registry)
        self.jobs_running = Gauge("cloudward_jobs_running_here", "Jobs running in this server's runner",
                                  registry=self.registry)
        if db is not None:
            self.registry.register(_StoreCollector(db))

    def running_from(self, count: Callable[[], int]) -> None:
        self.jobs_running.set_function(lambda: float(count()))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class MetricsMiddleware:
    """Pure ASGI: times every HTTP request and counts it by route template and status."""

    def __init__(self, app: Any, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        began = time.perf_counter()
        status = [500]

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "?")
            self.metrics.requests.labels(method, template, str(status[0])).inc()
            self.metrics.latency.labels(method, template).observe(time.perf_counter() - began)
