"""OCI distribution / Docker registry v2 over HTTP(S): anonymous, Bearer-token and basic auth.

Every manifest and blob is checked against its digest: a registry (or a proxy in between) that
serves other bytes than the digest names is an error, never a silently different image.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO

import httpx

from cloudward.container.image import Image, ImageError, Layer, platform_of
from cloudward.container.sources.oci import INDEX_TYPES, select_platform

MANIFEST_ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])
MAX_MANIFEST_BYTES = 8 * 1024 * 1024
SPOOL_BYTES = 64 * 1024 * 1024
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')


@dataclass
class RegistryRef:
    """``host[:port]/repo[:tag|@digest]`` split into its parts."""

    host: str
    repository: str
    tag: str | None
    digest: str | None

    @classmethod
    def parse(cls, reference: str) -> RegistryRef:
        ref = reference.removeprefix("docker://") if reference.startswith("docker://") else reference
        digest = None
        if "@" in ref:
            ref, digest = ref.split("@", 1)
        tag = None
        last = ref.rsplit("/", 1)[-1]
        if ":" in last:
            ref, tag = ref.rsplit(":", 1)
        first, _, rest = ref.partition("/")
        if not rest or not ("." in first or ":" in first or first == "localhost"):
            first, rest = "registry-1.docker.io", ref if "/" in ref else f"library/{ref}"
        if not rest:
            raise ImageError(f"{reference}: not an image reference")
        return cls(first, rest, tag or (None if digest else "latest"), digest)

    def __str__(self) -> str:
        return f"{self.host}/{self.repository}" + (f"@{self.digest}" if self.digest else f":{self.tag}")


class RegistryClient:
    """One registry host; remembers the Bearer token per scope so each blob does not re-authenticate."""

    # ``insecure`` means plain http: the registry is reached at http://host, as skopeo's --dest-tls-verify=false
    # does for loopback registries; without it only https is tried.
    def __init__(self, host: str, *, insecure: bool = False, username: str | None = None,
                 password: str | None = None, timeout: float = 30.0) -> None:
        self.base = f"{'http' if insecure else 'https'}://{host}"
        self.auth = (username, password) if username is not None and password is not None else None
        self._client = httpx.Client(timeout=timeout, trust_env=False, follow_redirects=True)
        self._tokens: dict[str, str] = {}
        self._basic = False

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _headers(self, scope: str, extra: dict[str, str] | None) -> dict[str, str]:
        headers = dict(extra or {})
        if scope in self._tokens:
            headers["Authorization"] = f"Bearer {self._tokens[scope]}"
        return headers

    def request(self, method: str, path: str, *, scope: str, label: str,
                headers: dict[str, str] | None = None, stream: bool = False) -> httpx.Response:
        """Send, answering one 401 challenge (Bearer or Basic) before giving up."""
        url = path if path.startswith("http") else self.base + path
        for attempt in range(2):
            req = self._client.build_request(method, url, headers=self._headers(scope, headers))
            try:
                resp = self._client.send(req, stream=stream, auth=self.auth if self._basic else None)
            except httpx.HTTPError as exc:
                raise ImageError(f"{label}: cannot reach {self.base} ({exc})") from exc
            if resp.status_code != 401 or attempt:
                break
            challenge = resp.headers.get("www-authenticate", "")
            resp.close()
            self._answer(challenge, scope, label)
        if resp.status_code == 401:
            resp.close()
            raise ImageError(f"{label}: authentication failed at {self.base}")
        return resp

    def _answer(self, challenge: str, scope: str, label: str) -> None:
        scheme = challenge.split(" ", 1)[0].lower()
        if scheme == "basic":
            if self.auth is None:
                raise ImageError(f"{label}: the registry wants a username and password")
            self._basic = True
            return
        if scheme != "bearer":
            raise ImageError(f"{label}: unsupported auth challenge {challenge!r}")
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        if "realm" not in params:
            raise ImageError(f"{label}: Bearer challenge without realm")
        query = {k: v for k, v in (("service", params.get("service")), ("scope", scope or params.get("scope"))) if v}
        try:
            resp = self._client.get(params["realm"], params=query, auth=self.auth)
        except httpx.HTTPError as exc:
            raise ImageError(f"{label}: token endpoint {params['realm']} unreachable ({exc})") from exc
        if resp.status_code != 200:
            raise ImageError(f"{label}: token endpoint answered {resp.status_code}")
        body = resp.json()
        token = body.get("token") or body.get("access_token")
        if not token:
            raise ImageError(f"{label}: token endpoint returned no token")
        self._tokens[scope] = token

    def get_manifest(self, repo: str, ref: str, label: str) -> tuple[dict[str, Any], str]:
        """The manifest JSON and its verified digest."""
        resp = self.request("GET", f"/v2/{repo}/manifests/{ref}", scope=_pull(repo), label=label,
                            headers={"Accept": MANIFEST_ACCEPT})
        if resp.status_code == 404:
            raise ImageError(f"{label}: manifest {ref} not found")
        if resp.status_code != 200:
            raise ImageError(f"{label}: manifest {ref}: HTTP {resp.status_code}")
        data = resp.content
        if len(data) > MAX_MANIFEST_BYTES:
            raise ImageError(f"{label}: manifest {ref} is too large")
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if ref.startswith("sha256:") and ref != digest:
            raise ImageError(f"{label}: manifest {ref} does not match its digest ({digest})")
        try:
            return json.loads(data), digest
        except ValueError as exc:
            raise ImageError(f"{label}: manifest {ref} is not JSON") from exc

    def fetch_blob(self, repo: str, digest: str, label: str) -> BinaryIO:
        """Download a blob into a spooled buffer, verifying its sha256 as it streams."""
        algo, _, want = digest.partition(":")
        if algo != "sha256":
            raise ImageError(f"{label}: unsupported digest {digest}")
        resp = self.request("GET", f"/v2/{repo}/blobs/{digest}", scope=_pull(repo), label=label, stream=True)
        try:
            if resp.status_code != 200:
                raise ImageError(f"{label}: blob {digest}: HTTP {resp.status_code}")
            h = hashlib.sha256()
            out = tempfile.SpooledTemporaryFile(max_size=SPOOL_BYTES)  # noqa: SIM115 - returned
            for chunk in resp.iter_bytes():
                h.update(chunk)
                out.write(chunk)
        except httpx.HTTPError as exc:
            raise ImageError(f"{label}: blob {digest}: {exc}") from exc
        finally:
            resp.close()
        if h.hexdigest() != want:
            out.close()
            raise ImageError(f"{label}: blob {digest} does not match its digest (sha256:{h.hexdigest()})")
        out.seek(0)
        return out  # type: ignore[return-value]

    def _paged(self, path: str, key: str, scope: str, label: str) -> Iterator[str]:
        url: str | None = path
        while url:
            resp = self.request("GET", url, scope=scope, label=label)
            if resp.status_code == 404:
                raise ImageError(f"{label}: not found")
            if resp.status_code != 200:
                raise ImageError(f"{label}: HTTP {resp.status_code}")
            yield from resp.json().get(key) or []
            nxt = resp.links.get("next", {}).get("url")
            url = str(httpx.URL(self.base + path).join(nxt)) if nxt else None


def _pull(repo: str) -> str:
    return f"repository:{repo}:pull"


def list_repositories(host: str, *, insecure: bool = False, username: str | None = None,
                      password: str | None = None, page_size: int = 100) -> list[str]:
    """All repositories via ``/v2/_catalog``, following ``Link: <...>; rel="next"`` pages."""
    with RegistryClient(host, insecure=insecure, username=username, password=password) as client:
        return list(client._paged(f"/v2/_catalog?n={page_size}", "repositories", "registry:catalog:*", host))


def list_tags(host: str, repository: str, *, insecure: bool = False, username: str | None = None,
              password: str | None = None, page_size: int = 100) -> list[str]:
    """All tags of a repository via ``/v2/<name>/tags/list``, paginated."""
    with RegistryClient(host, insecure=insecure, username=username, password=password) as client:
        return list(client._paged(f"/v2/{repository}/tags/list?n={page_size}", "tags", _pull(repository),
                                  f"{host}/{repository}"))


def open_registry(reference: str, *, insecure: bool = False, platform: str = "linux/amd64",
                  username: str | None = None, password: str | None = None) -> Image:
    """Resolve the reference (through an index if needed) and return an image whose layers download lazily."""
    ref = RegistryRef.parse(reference)
    client = RegistryClient(ref.host, insecure=insecure, username=username, password=password)
    manifest, digest = client.get_manifest(ref.repository, ref.digest or ref.tag or "latest", reference)
    if manifest.get("mediaType") in INDEX_TYPES or "manifests" in manifest:
        desc = select_platform(manifest.get("manifests") or [], platform, reference)
        manifest, digest = client.get_manifest(ref.repository, desc["digest"], reference)
    if "config" not in manifest:
        raise ImageError(f"{reference}: unsupported manifest (schema {manifest.get('schemaVersion')})")
    config_digest: str = manifest["config"]["digest"]
    with client.fetch_blob(ref.repository, config_digest, reference) as f:
        config = json.loads(f.read(MAX_MANIFEST_BYTES))
    diff_ids = list(config.get("rootfs", {}).get("diff_ids", []))
    layers = []
    for i, ld in enumerate(manifest.get("layers") or []):
        layer_digest: str = ld["digest"]
        layers.append(Layer(
            digest=layer_digest, diff_id=diff_ids[i] if i < len(diff_ids) else None,
            media_type=ld.get("mediaType", ""), size=int(ld.get("size", 0)),
            opener=lambda d=layer_digest: client.fetch_blob(ref.repository, d, reference)))  # type: ignore[misc]
    tags = [f"{ref.host}/{ref.repository}:{ref.tag}"] if ref.tag else []
    image = Image(reference=reference, source="registry", manifest_digest=digest, config_digest=config_digest,
                  config=config, layers=layers, repo_tags=tags, platform=platform_of(config))
    weakref.finalize(image, client.close)  # layers download lazily, so the client lives as long as the image
    return image
