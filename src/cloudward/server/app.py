"""The FastAPI application: routers, error mapping, security headers, metrics, and the lifespan
that starts the job runner and the scheduler.

`create_app(config)` is what `cloudward server` serves. Tests and embedders may hand in their own
`db`, `runner` or clock; the web dashboard's pages come from `server/dashboard`, and an embedder
adds its own routers through `extra_routers` (each route guarded by `auth.allow(...)`, which
`check_routes` enforces at build time).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse

from cloudward import __version__
from cloudward.core.errors import StoreError, UsageError
from cloudward.server.auth import check_routes
from cloudward.server.config import ServerConfig
from cloudward.server.context import ServerContext
from cloudward.server.db import ServerDB
from cloudward.server.errors import Conflict, Forbidden, NotFound
from cloudward.server.jobs.runner import JobRunner
from cloudward.server.metrics import Metrics, MetricsMiddleware

log = logging.getLogger("cloudward.server")

_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]


class SecurityHeaders:
    """Pure ASGI: headers every response gets (a page may set its own cache policy)."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_wrapper(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                extra = [(n, v) for n, v in _SECURITY_HEADERS if n not in present]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_wrapper)


def _error(status: int) -> Callable[[Request, Exception], Any]:
    async def handler(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=status)

    return handler


def create_app(config: ServerConfig, *, db: ServerDB | None = None, runner: JobRunner | None = None,
               clock: Callable[[], datetime] | None = None, extra_routers: Sequence[APIRouter] = (),
               background: bool = True) -> FastAPI:
    """The app. With `background=False` neither the runner nor the scheduler is started (a
    process that only serves the API next to separate runners)."""
    from cloudward.server.jobs.local import LocalRunner
    from cloudward.server.routers.all import ROUTERS
    from cloudward.server.schedules import Scheduler
    from cloudward.server.webhooks import Notifier

    owns_db = db is None
    database = db or (ServerDB.open(config.store_url, clock) if clock else ServerDB.open(config.store_url))
    metrics = Metrics(database)
    job_runner = runner or LocalRunner(database, config)
    if isinstance(job_runner, LocalRunner):
        metrics.running_from(lambda: job_runner.running)
    ctx = ServerContext(config=config, db=database, runner=job_runner, metrics=metrics)
    listeners = getattr(job_runner, "listeners", None)
    if isinstance(listeners, list):
        listeners.append(lambda job: metrics.jobs_finished.labels(job.status).inc())
        listeners.append(Notifier(database, count=lambda result: metrics.webhooks.labels(result).inc()))
    scheduler = Scheduler(database, job_runner, interval=config.scheduler_interval,
                          chores=[lambda: ctx.usage.flush(database)], run_schedules=config.scheduler)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if background:
            job_runner.start()
            scheduler.start()  # with --no-scheduler it only runs the chores (token last-use times)
        try:
            yield
        finally:
            scheduler.stop()  # also runs the chores once more: token last-use times are written
            job_runner.stop()
            if owns_db:
                database.close()

    app = FastAPI(title="cloudward", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None, description="cloudward's REST API: scans, findings, diffs, suppressions, rules, "
                  "targets, jobs, schedules, webhooks. Authenticate with `Authorization: Bearer <token>` "
                  "(`cloudward token create NAME`) or the dashboard's session cookie.")
    app.state.cloudward = ctx
    app.state.scheduler = scheduler
    from cloudward.server.dashboard import routers as dashboard

    for router in [*ROUTERS, *dashboard(), *extra_routers]:
        app.include_router(router)
    check_routes(app.routes)
    app.add_exception_handler(NotFound, _error(404))
    app.add_exception_handler(Conflict, _error(409))
    app.add_exception_handler(Forbidden, _error(403))
    app.add_exception_handler(UsageError, _error(400))
    app.add_exception_handler(StoreError, _error(503))
    app.add_middleware(SecurityHeaders)
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    _document_security(app)
    return app


def _document_security(app: FastAPI) -> None:
    """Name both ways in (bearer token, session cookie) in the OpenAPI document."""
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = build()
        schema.setdefault("components", {})["securitySchemes"] = {
            "token": {"type": "http", "scheme": "bearer", "description": "cloudward token create NAME"},
            "session": {"type": "apiKey", "in": "cookie", "name": "cloudward_session",
                        "description": "POST /api/v1/auth/login; send X-CSRF-Token on changes"},
        }
        for path, item in schema.get("paths", {}).items():
            for operation in item.values():
                if isinstance(operation, dict) and path not in ("/api/v1/health", "/api/v1/auth/login"):
                    operation["security"] = [{"token": []}, {"session": []}]
        app.openapi_schema = schema
        return schema

    app.openapi = openapi  # type: ignore[method-assign]
