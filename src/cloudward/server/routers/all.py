"""Every API router, in the order the app includes them (and the OpenAPI document lists them)."""

from __future__ import annotations

from fastapi import APIRouter

from cloudward.server.routers.audit import router as audit
from cloudward.server.routers.auth import router as auth
from cloudward.server.routers.findings import router as findings
from cloudward.server.routers.findings import suppressions
from cloudward.server.routers.jobs import router as jobs
from cloudward.server.routers.rules import router as rules
from cloudward.server.routers.scans import router as scans
from cloudward.server.routers.schedules import router as schedules
from cloudward.server.routers.system import router as system
from cloudward.server.routers.targets import router as targets
from cloudward.server.routers.users import router as users
from cloudward.server.routers.users import tokens
from cloudward.server.routers.webhooks import router as webhooks

ROUTERS: list[APIRouter] = [system, auth, users, tokens, audit, scans, findings, suppressions, rules, targets, jobs,
                            schedules, webhooks]
