"""Signing in and out of the dashboard.

The form posts here rather than to the API's login endpoint so that a wrong password shows the
form again with a message instead of a JSON error; the checking itself (password, rate limit,
audit entry, session row, cookies) is the API's `login`, called as it is.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from fastapi import Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from cloudward.server import accounts
from cloudward.server.accounts import Principal
from cloudward.server.auth import CSRF_COOKIE, PUBLIC_ROUTE, READ_ONLY, SESSION_COOKIE, actor, authenticate, context
from cloudward.server.dashboard.forms import read_form, safe_next
from cloudward.server.dashboard.render import render
from cloudward.server.dashboard.routing import new_router
from cloudward.server.routers.auth import login as api_login

router = new_router()
NOTICES = {"expired": "Your session has ended: sign in again.", "signed-out": "You are signed out."}
_FAILURES = {401: "Wrong name or password.", 429: "Too many failed attempts from here: wait a few minutes.",
             422: "Enter your name and your password."}


@router.get("/login", response_class=HTMLResponse, dependencies=[Depends(PUBLIC_ROUTE)])
async def login_page(request: Request) -> Response:
    target = safe_next(request.query_params.get("next"))
    if request.cookies.get(SESSION_COOKIE):
        try:
            await authenticate(request)
        except HTTPException:
            pass
        else:  # already signed in
            return RedirectResponse(target, status_code=303)
    notice = NOTICES.get(request.query_params.get("notice", ""), "")
    return render(request, "login.html", principal=None, next=target, notice=notice, error="", name="")


def _cross_origin(request: Request) -> bool:
    origin = request.headers.get("origin")
    return bool(origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""))


@router.post("/login", response_class=HTMLResponse, dependencies=[Depends(PUBLIC_ROUTE)])
async def login_submit(request: Request) -> Response:
    """Another site may not log a visitor in to an account of its choosing (login CSRF): a
    cross-origin form is refused before the password is even looked at."""
    form = await read_form(request)
    target = safe_next(form.get("next"))
    name = form.get("name", "")[:64]
    if _cross_origin(request):
        return render(request, "login.html", status=403, principal=None, next=target, notice="",
                      error="This sign-in form was sent from another site.", name="")
    try:
        answer = await api_login(request)
    except HTTPException as exc:
        error = _FAILURES.get(exc.status_code, "Signing in failed.")
        return render(request, "login.html", status=exc.status_code, principal=None, next=target, notice="",
                      error=error, name=name)
    response = RedirectResponse(target, status_code=303)
    for cookie in answer.headers.getlist("set-cookie"):
        response.headers.append("set-cookie", cookie)
    return response


@router.post("/logout")
async def logout(request: Request, principal: Principal = Depends(READ_ONLY)) -> Response:
    if principal.via == "session":
        await run_in_threadpool(accounts.logout, context(request).db, actor(request, principal),
                                principal.credential_id)
    response = RedirectResponse("/login?notice=signed-out", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")
    return response
