"""Health (public), Prometheus metrics, and the OpenAPI document and its viewer (authenticated)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import text

from cloudward import __version__
from cloudward.server.auth import PUBLIC_ROUTE, READ_ONLY, context
from cloudward.server.metrics import CONTENT_TYPE
from cloudward.server.routers._common import PREFIX, errors
from cloudward.server.schemas import HealthOut

router = APIRouter(tags=["system"])


@router.get(f"{PREFIX}/health", response_model=HealthOut, dependencies=[Depends(PUBLIC_ROUTE)],
            responses={503: {"model": HealthOut, "description": "The store does not answer"}})
def health(request: Request) -> JSONResponse:
    """Liveness and store reachability; no authentication, no detail beyond ok/unavailable."""
    try:
        with context(request).db.read() as session:
            session.execute(text("SELECT 1"))
        status, code = "ok", 200
    except Exception:
        status, code = "unavailable", 503
    return JSONResponse({"status": status, "version": __version__}, status_code=code)


@router.get("/metrics", dependencies=[Depends(READ_ONLY)], response_class=Response,
            responses={200: {"content": {CONTENT_TYPE: {"schema": {"type": "string"}}},
                             "description": "Prometheus text format"}, **errors(401, 403)})
def metrics(request: Request) -> Response:
    """Prometheus exposition: scrape with `authorization: {credentials: <token>}`."""
    return Response(context(request).metrics.render(), media_type=CONTENT_TYPE)


@router.get("/openapi.json", include_in_schema=False, dependencies=[Depends(READ_ONLY)])
def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs", include_in_schema=False, dependencies=[Depends(READ_ONLY)])
def docs() -> HTMLResponse:
    return get_swagger_ui_html(openapi_url="/openapi.json", title="cloudward API")
