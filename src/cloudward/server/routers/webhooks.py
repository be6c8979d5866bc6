"""Webhooks (admin): where new findings are announced. URLs come back masked, secrets never."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Path, Request, Response

from cloudward.server import webhooks
from cloudward.server.accounts import Principal
from cloudward.server.auth import ADMIN, actor, context
from cloudward.server.routers._common import PREFIX, STANDARD
from cloudward.server.schemas import WebhookIn, WebhookOut

router = APIRouter(prefix=f"{PREFIX}/webhooks", tags=["webhooks"], responses=STANDARD)


def _out(info: webhooks.WebhookInfo) -> WebhookOut:
    return WebhookOut.model_validate(info, from_attributes=True)


@router.get("", response_model=list[WebhookOut])
def list_webhooks(request: Request, _: Principal = Depends(ADMIN)) -> list[WebhookOut]:
    return [_out(w) for w in webhooks.list_webhooks(context(request).db)]


@router.post("", response_model=WebhookOut, status_code=201)
def add_webhook(body: WebhookIn, request: Request, principal: Principal = Depends(ADMIN)) -> WebhookOut:
    """Announce new findings at or above `min_severity` after each job's scan: generic JSON
    (signed with `secret` when given) or a Slack-compatible message."""
    return _out(webhooks.add_webhook(context(request).db, actor(request, principal), name=body.name, url=body.url,
                                     kind=body.kind, min_severity=body.min_severity, secret=body.secret,
                                     allow_http=body.allow_http))


@router.delete("/{webhook_id}", status_code=204, response_class=Response)
def delete_webhook(request: Request, webhook_id: int = Path(ge=1, le=2**62),
                   principal: Principal = Depends(ADMIN)) -> Response:
    webhooks.remove_webhook(context(request).db, actor(request, principal), webhook_id)
    return Response(status_code=204)
