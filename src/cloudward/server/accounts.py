"""Users, API tokens and dashboard sessions: the logic both the API and `cloudward user/token`
use, so a token made on the command line and one made through the API are the same thing.

Users are disabled, never deleted (the audit log keeps naming them), and the last enabled admin
can be neither disabled nor demoted: a server nobody can administer is a support call.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update

from cloudward.core.errors import UsageError
from cloudward.server import security
from cloudward.server.audit import Actor, record
from cloudward.server.db import ServerDB
from cloudward.server.errors import Conflict, Forbidden, NotFound
from cloudward.server.roles import Role
from cloudward.store.models import ApiTokenRow, UserRow

USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
TOKEN_NAME_MAX = 200
API, SESSION = "api", "session"


@dataclass(frozen=True)
class Principal:
    """Who is calling: the user, their role, and what authenticated them."""

    user_id: int
    name: str
    role: Role
    via: str  # "token" or "session"
    credential_id: str


@dataclass(frozen=True)
class UserInfo:
    id: int
    name: str
    role: Role
    disabled: bool
    has_password: bool
    created: datetime


@dataclass(frozen=True)
class TokenInfo:
    id: str
    user: str
    name: str
    created: datetime
    expires: datetime | None
    last_used: datetime | None
    revoked: datetime | None


def _user_info(row: UserRow) -> UserInfo:
    return UserInfo(row.id, row.name, Role(row.role), row.disabled, row.password_hash is not None, row.created)


def check_user_name(name: str) -> str:
    if not USER_NAME.match(name):
        raise UsageError(f"invalid user name {name[:80]!r}: 1-64 letters, digits, '.', '_', '@' or '-', "
                         "starting with a letter or digit")
    return name


def _role(text: str | Role) -> Role:
    try:
        return text if isinstance(text, Role) else Role.parse(text)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def count_users(db: ServerDB) -> int:
    with db.read() as session:
        return int(session.scalar(select(func.count()).select_from(UserRow)) or 0)


def list_users(db: ServerDB) -> list[UserInfo]:
    with db.read() as session:
        return [_user_info(r) for r in session.scalars(select(UserRow).order_by(UserRow.name))]


def get_user(db: ServerDB, name: str) -> UserInfo:
    with db.read() as session:
        row = session.scalars(select(UserRow).where(UserRow.name == name)).first()
        if row is None:
            raise NotFound(f"no user {name[:80]!r}")
        return _user_info(row)


def create_user(db: ServerDB, actor: Actor, name: str, role: str | Role, password: str | None = None) -> UserInfo:
    check_user_name(name)
    chosen = _role(role)
    try:
        hashed = security.hash_password(password) if password is not None else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    now = db.clock()
    with db.write() as session:
        if session.scalars(select(UserRow.id).where(UserRow.name == name)).first() is not None:
            raise Conflict(f"user {name!r} already exists")
        row = UserRow(name=name, role=chosen.value, password_hash=hashed, disabled=False, created=now, updated=now)
        session.add(row)
        session.flush()
        record(session, actor, "user.create", f"user:{name}", now, role=chosen.value,
               password=hashed is not None)
        return _user_info(row)


def update_user(db: ServerDB, actor: Actor, name: str, *, role: str | Role | None = None,
                disabled: bool | None = None, password: str | None = None) -> UserInfo:
    new_role = _role(role) if role is not None else None
    try:
        hashed = security.hash_password(password) if password is not None else None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    now = db.clock()
    with db.write() as session:
        row = session.scalars(select(UserRow).where(UserRow.name == name)).first()
        if row is None:
            raise NotFound(f"no user {name[:80]!r}")
        losing_admin = row.role == Role.ADMIN.value and not row.disabled and (
            (new_role is not None and new_role is not Role.ADMIN) or disabled is True)
        if losing_admin:
            admins = session.scalar(select(func.count()).select_from(UserRow).where(
                UserRow.role == Role.ADMIN.value, UserRow.disabled.is_(False)))
            if (admins or 0) <= 1:
                raise Conflict(f"{name!r} is the last enabled admin: make another admin first")
        changes: dict[str, object] = {}
        if new_role is not None and new_role.value != row.role:
            changes["role"] = {"from": row.role, "to": new_role.value}
            row.role = new_role.value
        if disabled is not None and disabled != row.disabled:
            changes["disabled"] = disabled
            row.disabled = disabled
            if disabled:  # a disabled user's sessions end now; tokens stay listed but stop working
                session.execute(update(ApiTokenRow).where(ApiTokenRow.user_id == row.id, ApiTokenRow.kind == SESSION,
                                                          ApiTokenRow.revoked.is_(None)).values(revoked=now))
        if hashed is not None:
            changes["password"] = "changed"  # noqa: S105 - that it changed, not the value
            row.password_hash = hashed
        row.updated = now
        if changes:
            record(session, actor, "user.update", f"user:{name}", now, **changes)
        return _user_info(row)


def _token_info(row: ApiTokenRow, user: str) -> TokenInfo:
    return TokenInfo(row.id, user, row.name, row.created, row.expires, row.last_used, row.revoked)


def create_token(db: ServerDB, actor: Actor, user: str, name: str = "",
                 expires: datetime | None = None) -> tuple[TokenInfo, str]:
    """A new API token for `user`; the returned value is the only time the secret exists in clear."""
    name = name.strip()[:TOKEN_NAME_MAX] or "token"
    now = db.clock()
    if expires is not None and expires <= now:
        raise UsageError("a token's expiry must lie in the future")
    minted = security.new_token()
    with db.write() as session:
        owner = session.scalars(select(UserRow).where(UserRow.name == user)).first()
        if owner is None:
            raise NotFound(f"no user {user[:80]!r}")
        if owner.disabled:
            raise Conflict(f"user {user!r} is disabled")
        row = ApiTokenRow(id=minted.id, user_id=owner.id, kind=API, name=name, secret_hash=minted.secret_hash,
                          created=now, expires=expires)
        session.add(row)
        session.flush()
        record(session, actor, "token.create", f"token:{minted.id}", now, user=user, name=name,
               expires=expires.isoformat() if expires else None)
        return _token_info(row, user), minted.value


def list_tokens(db: ServerDB, user: str | None = None) -> list[TokenInfo]:
    stmt = (select(ApiTokenRow, UserRow.name).join(UserRow, UserRow.id == ApiTokenRow.user_id)
            .where(ApiTokenRow.kind == API).order_by(ApiTokenRow.created, ApiTokenRow.id))
    if user is not None:
        stmt = stmt.where(UserRow.name == user)
    with db.read() as session:
        return [_token_info(row, name) for row, name in session.execute(stmt)]


def revoke_token(db: ServerDB, actor: Actor, token_id: str, *, only_user: str | None = None) -> TokenInfo:
    """Revoke a token; with `only_user`, refuse (Forbidden) a token that belongs to someone else."""
    now = db.clock()
    with db.write() as session:
        found = session.execute(
            select(ApiTokenRow, UserRow.name).join(UserRow, UserRow.id == ApiTokenRow.user_id)
            .where(ApiTokenRow.id == token_id.strip().lower(), ApiTokenRow.kind == API)).first()
        if found is None:
            raise NotFound(f"no token {token_id[:40]!r}")
        row, owner = found
        if only_user is not None and owner != only_user:
            raise Forbidden("that token belongs to another user")
        if row.revoked is None:
            row.revoked = now
            record(session, actor, "token.revoke", f"token:{row.id}", now, user=owner)
        return _token_info(row, owner)


def _principal(session: object, credential_id: str, secret: str, kind: str, now: datetime) -> Principal | None:
    from sqlalchemy.orm import Session

    assert isinstance(session, Session)
    found = session.execute(
        select(ApiTokenRow, UserRow).join(UserRow, UserRow.id == ApiTokenRow.user_id)
        .where(ApiTokenRow.id == credential_id, ApiTokenRow.kind == kind)).first()
    # The hash is compared even for a revoked or expired row: the answer takes the same time.
    if found is None:
        security.secret_matches(secret, "0" * 64)
        return None
    token, user = found
    if not security.secret_matches(secret, token.secret_hash):
        return None
    if token.revoked is not None or (token.expires is not None and token.expires <= now) or user.disabled:
        return None
    return Principal(user.id, user.name, Role(user.role), "token" if kind == API else "session", token.id)


def authenticate_token(db: ServerDB, value: str) -> Principal | None:
    parsed = security.parse_token(value)
    if parsed is None:
        return None
    with db.read() as session:
        return _principal(session, parsed[0], parsed[1], API, db.clock())


def authenticate_session(db: ServerDB, key: bytes, cookie: str) -> Principal | None:
    parsed = security.parse_session_cookie(key, cookie)
    if parsed is None:
        return None
    with db.read() as session:
        return _principal(session, parsed[0], parsed[1], SESSION, db.clock())


def login(db: ServerDB, actor: Actor, key: bytes, name: str, password: str,
          hours: float) -> tuple[Principal, str] | None:
    """Check a password and open a session; (principal, cookie value) or None. The attempt is
    audited either way (the name is recorded, never the password)."""
    with db.read() as session:
        row = session.scalars(select(UserRow).where(UserRow.name == name[:64])).first()
        stored = row.password_hash if row is not None else None
    ok = security.password_matches(password, stored) and row is not None and not row.disabled
    now = db.clock()
    with db.write() as session:
        if not ok or row is None:
            record(session, Actor(name[:64] or "?", actor.remote), "auth.login_failed", f"user:{name[:64]}", now)
            return None
        minted = security.new_session(key)
        session.add(ApiTokenRow(id=minted.id, user_id=row.id, kind=SESSION, name="dashboard session",
                                secret_hash=minted.secret_hash, created=now, expires=now + timedelta(hours=hours)))
        record(session, Actor(row.name, actor.remote), "auth.login", f"user:{row.name}", now, session_id=minted.id)
    return Principal(row.id, row.name, Role(row.role), "session", minted.id), minted.value


def logout(db: ServerDB, actor: Actor, session_id: str) -> None:
    now = db.clock()
    with db.write() as session:
        session.execute(update(ApiTokenRow).where(ApiTokenRow.id == session_id, ApiTokenRow.kind == SESSION,
                                                  ApiTokenRow.revoked.is_(None)).values(revoked=now))
        record(session, actor, "auth.logout", f"session:{session_id}", now)


def touch(db: ServerDB, used: dict[str, datetime]) -> None:
    """Record when tokens were last used; batched by the server's maintenance loop rather than
    written on every request (a GET must not wait for the write lock)."""
    if not used:
        return
    with db.write() as session:
        for token_id, when in used.items():
            session.execute(update(ApiTokenRow).where(ApiTokenRow.id == token_id).values(last_used=when))
