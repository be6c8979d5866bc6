"""Who may call what: authentication (bearer token or session cookie), roles and CSRF.

Every route declares its access with a dependency from this module, `allow(Role.X)` or `public()`;
`check_routes` makes the app refuse to start when a route declares none, so a new route cannot be
reachable without authentication by accident.

- `Authorization: Bearer cw_...` authenticates API clients. No CSRF check: a browser never adds
  that header on its own.
- The `cloudward_session` cookie (HttpOnly, SameSite=Strict, signed) authenticates the
  dashboard. State-changing requests (anything but GET/HEAD/OPTIONS) made with it must also carry
  the session's CSRF token, as the `X-CSRF-Token` header or a `csrf_token` form field, and a
  cross-origin `Origin` header is refused. The CSRF token comes back from the login call and is
  readable by the page in the (non-HttpOnly) `cloudward_csrf` cookie.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

from fastapi import HTTPException, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.routing import Route

from cloudward.server import accounts, security
from cloudward.server.accounts import Principal
from cloudward.server.audit import Actor
from cloudward.server.context import ServerContext
from cloudward.server.roles import Role

SESSION_COOKIE = "cloudward_session"
CSRF_COOKIE = "cloudward_csrf"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ACCESS_ATTRIBUTE = "cloudward_access"
PUBLIC = "public"


def context(request: Request) -> ServerContext:
    ctx: ServerContext = request.app.state.cloudward
    return ctx


def remote(request: Request) -> str:
    return request.client.host if request.client else ""


def actor(request: Request, principal: Principal) -> Actor:
    return Actor(principal.name, remote(request))


def unauthenticated(detail: str = "authentication required") -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


async def authenticate(request: Request) -> Principal:
    ctx = context(request)
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise unauthenticated("use 'Authorization: Bearer <token>'")
        principal = await run_in_threadpool(accounts.authenticate_token, ctx.db, value.strip())
        if principal is None:
            raise unauthenticated("invalid, expired or revoked token")
        ctx.usage.note(principal.credential_id, ctx.db.clock())
        return principal
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        principal = await run_in_threadpool(accounts.authenticate_session, ctx.db, ctx.config.secret_key, cookie)
        if principal is None:
            raise unauthenticated("session expired or invalid: log in again")
        if request.method not in SAFE_METHODS:
            await _check_csrf(request, ctx, principal)
        return principal
    raise unauthenticated()


async def _check_csrf(request: Request, ctx: ServerContext, principal: Principal) -> None:
    origin = request.headers.get("origin")
    if origin and origin != "null":
        host = request.headers.get("host", "")
        if urlsplit(origin).netloc != host:
            raise HTTPException(status_code=403, detail="cross-origin request refused")
    presented = request.headers.get(CSRF_HEADER, "")
    if not presented and request.headers.get("content-type", "").startswith("application/x-www-form-urlencoded"):
        body = await request.body()
        if len(body) <= 64 * 1024:
            presented = (parse_qs(body.decode("latin-1")).get("csrf_token") or [""])[0]
    if not presented or not security.csrf_matches(ctx.config.secret_key, principal.credential_id, presented):
        raise HTTPException(status_code=403, detail="missing or wrong CSRF token (X-CSRF-Token header)")


def allow(role: Role) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency: the caller, who must hold at least `role`."""

    async def dependency(request: Request) -> Principal:
        principal = await authenticate(request)
        if not principal.role.allows(role):
            raise HTTPException(status_code=403, detail=f"this needs the {role.value} role or higher")
        request.state.principal = principal
        return principal

    setattr(dependency, ACCESS_ATTRIBUTE, role.value)
    return dependency


def public() -> Callable[[], Awaitable[None]]:
    """A dependency that declares a route open to anyone (health, login)."""

    async def dependency() -> None:
        return None

    setattr(dependency, ACCESS_ATTRIBUTE, PUBLIC)
    return dependency


def route_access(route: APIRoute) -> str | None:
    found = [getattr(d.call, ACCESS_ATTRIBUTE) for d in route.dependant.dependencies
             if hasattr(d.call, ACCESS_ATTRIBUTE)]
    return found[0] if len(found) == 1 else None


def iter_routes(routes: list[Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(full path, route) for every route, looking into included routers: newer FastAPI keeps an
    included router as one entry (`original_router` plus its include prefix) instead of copies."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            context = getattr(route, "include_context", None)
            yield from iter_routes(list(included.routes), prefix + str(getattr(context, "prefix", "") or ""))
        else:
            yield prefix + str(getattr(route, "path", "")), route


def check_routes(routes: list[Any]) -> None:
    missing = [f"{sorted(r.methods or [])} {path}" for path, r in iter_routes(routes)
               if isinstance(r, APIRoute) and route_access(r) is None]
    unknown = [repr(r) for _path, r in iter_routes(routes) if not isinstance(r, APIRoute | Route)]
    if missing or unknown:
        raise RuntimeError(f"routes without exactly one access rule (auth.allow or auth.public): {missing + unknown}")


# The three access levels, built once: routes write `Depends(ANALYST)`.
READ_ONLY = allow(Role.READ_ONLY)
ANALYST = allow(Role.ANALYST)
ADMIN = allow(Role.ADMIN)
PUBLIC_ROUTE = public()
