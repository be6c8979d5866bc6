"""Users (admin) and API tokens (everyone for their own; admins for anyone)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Path, Request, Response

from cloudward.server import accounts
from cloudward.server.accounts import Principal, TokenInfo, UserInfo
from cloudward.server.auth import ADMIN, READ_ONLY, actor, context
from cloudward.server.errors import Forbidden
from cloudward.server.roles import Role
from cloudward.server.routers._common import PREFIX, STANDARD
from cloudward.server.schemas import TokenCreated, TokenIn, TokenOut, UserIn, UserOut, UserUpdate

router = APIRouter(prefix=f"{PREFIX}/users", tags=["users"], responses=STANDARD)
tokens = APIRouter(prefix=f"{PREFIX}/tokens", tags=["tokens"], responses=STANDARD)
UserName = Path(min_length=1, max_length=64)
TokenId = Path(min_length=1, max_length=32)


def _user(info: UserInfo) -> UserOut:
    return UserOut(name=info.name, role=info.role.value, disabled=info.disabled, has_password=info.has_password,
                   created=info.created)


def _token(info: TokenInfo) -> TokenOut:
    return TokenOut(id=info.id, user=info.user, name=info.name, created=info.created, expires=info.expires,
                    last_used=info.last_used, revoked=info.revoked)


@router.get("", response_model=list[UserOut])
def list_users(request: Request, _: Principal = Depends(ADMIN)) -> list[UserOut]:
    return [_user(u) for u in accounts.list_users(context(request).db)]


@router.post("", response_model=UserOut, status_code=201)
def create_user(body: UserIn, request: Request, principal: Principal = Depends(ADMIN)) -> UserOut:
    return _user(accounts.create_user(context(request).db, actor(request, principal), body.name, body.role,
                                      body.password))


@router.get("/{name}", response_model=UserOut)
def get_user(request: Request, name: str = UserName, _: Principal = Depends(ADMIN)) -> UserOut:
    return _user(accounts.get_user(context(request).db, name))


@router.patch("/{name}", response_model=UserOut)
def update_user(body: UserUpdate, request: Request, name: str = UserName,
                principal: Principal = Depends(ADMIN)) -> UserOut:
    """Change a user's role, disable or enable them, or set their dashboard password."""
    return _user(accounts.update_user(context(request).db, actor(request, principal), name, role=body.role,
                                      disabled=body.disabled, password=body.password))


@tokens.get("", response_model=list[TokenOut])
def list_tokens(request: Request, principal: Principal = Depends(READ_ONLY)) -> list[TokenOut]:
    """Your API tokens (every user's, for an admin). Never their values."""
    owner = None if principal.role is Role.ADMIN else principal.name
    return [_token(t) for t in accounts.list_tokens(context(request).db, owner)]


@tokens.post("", response_model=TokenCreated, status_code=201)
def create_token(body: TokenIn, request: Request, principal: Principal = Depends(READ_ONLY)) -> TokenCreated:
    """A new token for yourself (an admin may name another user). Its value is in this response
    only: it is stored as a SHA-256 hash and cannot be shown again."""
    user = body.user or principal.name
    if user != principal.name and principal.role is not Role.ADMIN:
        raise Forbidden("only an admin can make a token for another user")
    db = context(request).db
    expires = db.clock() + timedelta(days=body.expires_days) if body.expires_days else None
    info, value = accounts.create_token(db, actor(request, principal), user, body.name, expires)
    return TokenCreated(token=_token(info), value=value)


@tokens.delete("/{token_id}", status_code=204, response_class=Response)
def revoke_token(request: Request, token_id: str = TokenId, principal: Principal = Depends(READ_ONLY)) -> Response:
    only = None if principal.role is Role.ADMIN else principal.name
    accounts.revoke_token(context(request).db, actor(request, principal), token_id, only_user=only)
    return Response(status_code=204)
