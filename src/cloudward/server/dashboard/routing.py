"""How a dashboard route answers when something goes wrong: as a page, not as JSON.

`HtmlRoute` wraps each route's handler (its dependencies included, so authentication is covered):
a caller who is not logged in is sent to the login page (and back afterwards), a refusal or a
missing object becomes an error page with the same header and navigation as every other page.
The API's own routes keep their JSON errors; only routers made by `new_router` behave like this.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import RedirectResponse
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from cloudward.core.errors import StoreError, UsageError
from cloudward.server.auth import SESSION_COOKIE, authenticate
from cloudward.server.errors import Conflict, Forbidden, NotFound

_TITLES = {400: "That cannot be done", 403: "Not allowed", 404: "Not found", 409: "Conflict",
           422: "Not a valid request", 429: "Slow down", 503: "The store is not answering"}


def login_redirect(request: Request) -> RedirectResponse:
    """To the login page; a page (GET) comes back to where it was after logging in."""
    target = "/login"
    params = []
    if request.method in ("GET", "HEAD"):
        here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if here != "/":
            params.append("next=" + quote(here, safe="/"))
    if request.cookies.get(SESSION_COOKIE):
        params.append("notice=expired")
    return RedirectResponse(target + ("?" + "&".join(params) if params else ""), status_code=303)


async def error_page(request: Request, status: int, message: str) -> Response:
    from cloudward.server.dashboard.render import render

    principal = getattr(request.state, "principal", None)
    if principal is None and status == 403:
        try:  # a role refusal: the caller is logged in, so the page can still show who they are
            principal = await authenticate(request)
        except HTTPException:
            principal = None
    if status == 403 and "CSRF" in message:
        message = "This form has expired or came from another site. Reload the page and try again."
    return render(request, "error.html", status=status, principal=principal,
                  title=_TITLES.get(status, "Something went wrong"), message=message, status_code=status)


def _validation_message(exc: RequestValidationError) -> str:
    parts = []
    for error in exc.errors()[:5]:
        where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body"))
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "the request does not match what this page takes"


class HtmlRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def route(request: Request) -> Response:
            try:
                return await handler(request)
            except HTTPException as exc:
                if exc.status_code == 401:
                    return login_redirect(request)
                return await error_page(request, exc.status_code, str(exc.detail))
            except RequestValidationError as exc:
                return await error_page(request, 422, _validation_message(exc))
            except NotFound as exc:
                return await error_page(request, 404, str(exc))
            except (UsageError, Conflict, Forbidden) as exc:
                code = 409 if isinstance(exc, Conflict) else 403 if isinstance(exc, Forbidden) else 400
                return await error_page(request, code, str(exc))
            except StoreError as exc:
                return await error_page(request, 503, str(exc))

        return route


def new_router() -> APIRouter:
    """A router of pages: HTML errors, and left out of the OpenAPI document."""
    return APIRouter(route_class=HtmlRoute, include_in_schema=False, tags=["dashboard"])
