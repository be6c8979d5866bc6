"""Jupyter Server / Notebook answering its REST API without a token or password.

A Jupyter kernel runs whatever code it is sent and a Jupyter terminal is a shell, so a server
that lets an anonymous client list kernels lets it start one and execute code as the server's
user. Token authentication is on by default since notebook 4.3; it is turned off by
`--NotebookApp.token=''` / `--IdentityProvider.token=''` with no password, a common
"convenience" in containers and cloud notebooks.

Identification: `GET /api` answers `{"version": ...}` with Tornado's Server header or Jupyter's own
CSP header; behind a proxy that strips both, `GET /api/kernels` must also answer the Jupyter way.
`/api` is public even on a protected server; the decisive request is `GET /api/kernels`: a JSON list
means no authentication, 401/403 (or a redirect to the login page) means a token or password is
required.
Only when it is open are `/api/contents?content=0` (directory model without file contents) and
`/api/terminals` asked, to say how much is exposed. Nothing is created or started.
"""

from __future__ import annotations

from typing import Any, ClassVar

from cloudward.exposure.net import HttpResponse
from cloudward.exposure.probes import _http as h
from cloudward.exposure.probes.base import Observation, Probe, ProbeContext


def _jupyter_headers(response: HttpResponse) -> bool:
    """Tornado's Server header, or the CSP report-uri Jupyter sets itself (it survives proxies)."""
    return "tornado" in response.header("server").lower() or \
        "/api/security/csp-report" in response.header("content-security-policy")


def _jupyter_kernels_answer(response: HttpResponse | None) -> bool:
    """A kernel list, or Jupyter's JSON refusal `{"message": "Forbidden", "reason": null}`."""
    if response is None:
        return False
    body = h.json_body(response)
    if response.status == 200:
        return isinstance(body, list)
    return h.denied(response) and h.has_keys(body, "message", "reason")


class JupyterProbe:
    name: ClassVar[str] = "jupyter"
    family: ClassVar[str] = "http"
    ports: ClassVar[tuple[int, ...]] = (8888, 8889, 8890, 80, 443)

    async def identify(self, ctx: ProbeContext, tls: bool) -> Observation | None:
        response = await h.fetch(ctx, "/api", tls)
        data = h.json_object(response)
        if response is None or response.status != 200 or data is None \
                or not isinstance(data.get("version"), str):
            return None
        # Many APIs answer {"version": ...} at /api: without Jupyter's own headers, only the
        # exact shape plus a Jupyter-shaped answer from /api/kernels settles it.
        trusted = _jupyter_headers(response)
        if not trusted and set(data) != {"version"}:
            return None
        kernels = await h.fetch(ctx, "/api/kernels", tls)
        if not trusted and not _jupyter_kernels_answer(kernels):
            return None
        facts: dict[str, Any] = {"tls": tls, "version": h.text(data["version"], 64)}
        listing = h.json_body(kernels)
        if kernels is None:
            facts["errors"] = ["GET /api/kernels: no HTTP answer"]
        elif kernels.status == 200 and isinstance(listing, list):
            facts["auth_required"] = False
            facts["kernels_listable"] = True
            facts["kernel_count"] = len(listing)
            await self._exposure(ctx, tls, facts)
        elif h.denied(kernels) or 300 <= kernels.status < 400:
            facts["auth_required"] = True
            facts["kernels_listable"] = False
        else:
            facts["kernels_status"] = kernels.status
        return Observation(service="jupyter", host=ctx.host, port=ctx.port, tls=tls, facts=facts)

    async def _exposure(self, ctx: ProbeContext, tls: bool, facts: dict[str, Any]) -> None:
        contents = await h.fetch(ctx, "/api/contents?content=0", tls, facts=facts)
        model = h.json_object(contents)
        facts["contents_listable"] = contents is not None and contents.status == 200 and \
            model is not None and "type" in model
        terminals = await h.fetch(ctx, "/api/terminals", tls, facts=facts)
        facts["terminals_enabled"] = terminals is not None and terminals.status == 200 and \
            isinstance(h.json_body(terminals), list)


PROBES: list[Probe] = [JupyterProbe()]
