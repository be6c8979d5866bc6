"""The web dashboard: server-rendered pages over the same store, accounts and roles as the API.

No JavaScript build step and nothing fetched from elsewhere: Jinja2 templates (autoescaped, since
evidence text can be hostile), one stylesheet, one small optional script, charts as inline SVG
drawn on the server. Every page is a plain GET that works without JavaScript; every change is a
POSTed form carrying the session's CSRF token, checked by the same `auth` dependency as the API.
Pages are left out of the OpenAPI document: they are for people, the API is for programs.

`ROUTERS` is what the app factory includes; each route is guarded by `auth.allow(...)` or
`auth.public()` like every API route, and the route x role table in tests/server covers them.
"""

from __future__ import annotations

from fastapi import APIRouter


def routers() -> list[APIRouter]:
    """The dashboard's routers (imported on call: jinja2 is loaded only by a server)."""
    from cloudward.server.dashboard.assets import router as assets
    from cloudward.server.dashboard.findings_pages import router as findings
    from cloudward.server.dashboard.jobs_pages import router as jobs
    from cloudward.server.dashboard.overview import router as overview
    from cloudward.server.dashboard.rules_pages import router as rules
    from cloudward.server.dashboard.scans_pages import router as scans
    from cloudward.server.dashboard.schedules_pages import router as schedules
    from cloudward.server.dashboard.session_pages import router as session

    return [assets, session, overview, findings, scans, jobs, rules, schedules]
