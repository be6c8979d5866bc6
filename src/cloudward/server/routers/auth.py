"""Dashboard login and logout (the session cookie), and who-am-I for any caller."""

from __future__ import annotations

import json
from datetime import timedelta
from urllib.parse import parse_qs

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from cloudward.server import accounts, security
from cloudward.server.accounts import Principal
from cloudward.server.audit import Actor
from cloudward.server.auth import CSRF_COOKIE, PUBLIC_ROUTE, READ_ONLY, SESSION_COOKIE, actor, context, remote
from cloudward.server.routers._common import PREFIX, errors
from cloudward.server.schemas import LoginIn, LoginOut, MeOut

router = APIRouter(prefix=f"{PREFIX}/auth", tags=["auth"])
MAX_BODY = 16 * 1024

_LOGIN_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/LoginIn"}},
        "application/x-www-form-urlencoded": {"schema": {"$ref": "#/components/schemas/LoginIn"}},
    },
}


async def _login_form(request: Request) -> LoginIn:
    body = await request.body()
    if len(body) > MAX_BODY:
        raise HTTPException(status_code=422, detail="login body too large")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    try:
        if kind == "application/x-www-form-urlencoded":
            fields = {k: v[0] for k, v in parse_qs(body.decode("utf-8", errors="replace")).items() if k != "csrf_token"}
            return LoginIn.model_validate(fields)
        return LoginIn.model_validate(json.loads(body or b"null"))
    except (ValueError, ValidationError) as exc:
        detail = exc.errors(include_url=False, include_input=False) if isinstance(exc, ValidationError) \
            else "body must be JSON or a form with name and password"
        raise HTTPException(status_code=422, detail=detail) from None


@router.post("/login", response_model=LoginOut, dependencies=[Depends(PUBLIC_ROUTE)],
             openapi_extra={"requestBody": _LOGIN_BODY},
             responses={303: {"description": "Form login with `next`: redirect there"},
                        429: {"description": "Too many failed logins; wait"}, **errors(401, 422)})
async def login(request: Request) -> Response:
    """Log in with name and password (JSON or an HTML form); sets the HttpOnly, SameSite=Strict
    session cookie and returns the CSRF token to send with state-changing requests."""
    ctx = context(request)
    form = await _login_form(request)
    address = remote(request)
    if await run_in_threadpool(ctx.limiter.blocked, address, form.name):
        raise HTTPException(status_code=429, detail="too many failed logins: try again later")
    result = await run_in_threadpool(accounts.login, ctx.db, Actor(form.name, address),
                                     ctx.config.secret_key, form.name, form.password, ctx.config.session_hours)
    if result is None:
        await run_in_threadpool(ctx.limiter.failed, address, form.name)
        raise HTTPException(status_code=401, detail="wrong name or password")
    await run_in_threadpool(ctx.limiter.succeeded, address, form.name)
    principal, cookie = result
    csrf = security.csrf_token(ctx.config.secret_key, principal.credential_id)
    expires = ctx.db.clock() + timedelta(hours=ctx.config.session_hours)
    response: Response
    target = form.next or ""
    if target.startswith("/") and not target.startswith("//") and "\\" not in target:
        response = RedirectResponse(target, status_code=303)
    else:
        response = JSONResponse(LoginOut(name=principal.name, role=principal.role.value, csrf_token=csrf,
                                         expires=expires).model_dump(mode="json"))
    secure = ctx.config.cookie_secure or request.url.scheme == "https"
    max_age = int(ctx.config.session_hours * 3600)
    response.set_cookie(SESSION_COOKIE, cookie, max_age=max_age, httponly=True, samesite="strict",
                        secure=secure, path="/")
    response.set_cookie(CSRF_COOKIE, csrf, max_age=max_age, httponly=False, samesite="strict",
                        secure=secure, path="/")
    return response


@router.post("/logout", status_code=204, response_class=Response, responses=errors(401, 403))
def logout(request: Request, principal: Principal = Depends(READ_ONLY)) -> Response:
    """End the session (a token caller's token stays valid: revoke it under /tokens)."""
    if principal.via == "session":
        accounts.logout(context(request).db, actor(request, principal), principal.credential_id)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response


@router.get("/me", response_model=MeOut, responses=errors(401))
def me(principal: Principal = Depends(READ_ONLY)) -> MeOut:
    return MeOut(name=principal.name, role=principal.role.value, via=principal.via)  # type: ignore[arg-type]
