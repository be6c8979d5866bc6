"""The audit log: who changed what, when, from where. Written in the same transaction as the
change it describes, so there is no change without its entry (and no entry for a change that
rolled back). Details never hold a secret: callers pass names and ids, not values."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from cloudward.store.models import AuditRow

MAX_FIELD = 200


@dataclass(frozen=True)
class Actor:
    """Who acts: a user through the API, the CLI (`cli:<os user>`), or the scheduler."""

    name: str
    remote: str = ""


def record(session: Session, actor: Actor, action: str, target: str, when: Any, **details: Any) -> None:
    session.add(AuditRow(at=when, actor=actor.name[:MAX_FIELD], action=action[:64], target=target[:1000],
                         details=_bounded(details), remote=actor.remote[:64]))


def _bounded(details: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in details.items():
        if isinstance(value, str) and len(value) > 2000:
            value = value[:2000] + "..."
        out[key] = value
    return out
