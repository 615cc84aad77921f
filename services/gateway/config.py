"""``GET /v1/config/{projectId}`` (Traffical) and ``GET /api/v1/experiments`` (Xaiku): the
configuration the SDKs fetch from their base URL at start-up, as operators loaded it
(:mod:`sluice.configs`; every replica follows the registry topic, so none has to be asked).

Both are conditional: an ``ETag`` (a digest of the bytes served) and ``If-None-Match`` → 304, so
the Traffical SDK's minutely refresh costs a header. ``Cache-Control: private, no-cache`` lets a
browser keep a copy but revalidate it on every use, so a ``put`` is seen at the next fetch. Keys
scope by org only: any key of the org reads its configuration (browser configuration is public
by nature), and another org's project or experiment is unknown — the family's 404.

The paths are the SDKs' own: js-client fetches ``{baseUrl}/v1/config/{projectId}?env={env}``;
Xaiku's SDK ``{apiUrl}/experiments``, where ``apiUrl`` is ``https://xaiku.com/api/v1/`` unless
``proxyApiUrl`` replaces it (it collapses the double slash) — so ``/api/v1/experiments``, beside
the ``/api/v1/analytics`` it posts to.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from services.gateway.context import PUBLISHABLE, bearer, gateway_of
from services.gateway.errors import GatewayError
from sluice.configs import digest

CACHE_CONTROL = "private, no-cache"
TEST_MODE_CACHE_CONTROL = "no-store"


def etag_of(sha: str) -> str:
    return f'"{sha[:32]}"'


def matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110's weak comparison, as If-None-Match uses: ``*``, or any listed tag, W/ or not."""
    if not if_none_match:
        return False
    tags = [tag.strip().removeprefix("W/") for tag in if_none_match.split(",")]
    return "*" in tags or etag in tags


def conditional(request: web.Request, body: bytes, etag: str, cache_control: str, vary: str) -> web.Response:
    headers = {"ETag": etag, "Cache-Control": cache_control, "Vary": vary}
    if matches(request.headers.get("If-None-Match"), etag):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, headers=headers, content_type="application/json")


async def traffical_config(request: web.Request) -> web.Response:
    """The config bundle of ``projectId`` in ``?env=`` (the key's env when absent)."""
    gateway = gateway_of(request)
    key = gateway.authenticate(request, bearer(request))
    project = request.match_info["projectId"]
    env = request.query.get("env") or key.env
    record = gateway.registry.configs.bundle(key.org_id, project, env)
    if record is None:
        raise GatewayError(404, f"No config bundle for project {project!r} in env {env!r}")
    return conditional(request, bytes(record.bundle), etag_of(record.digest), CACHE_CONTROL, "Authorization")


async def xaiku_experiments(request: web.Request) -> web.Response:
    """``{"experiments": {id: [variant, …]}}``: those named in ``X-experiment-ids`` that exist,
    or all of the org's when the header is empty; 404 when that leaves none. ``X-xaiku-test:
    true`` (the SDK's test mode) gets the same experiments, never cached."""
    gateway = gateway_of(request)
    key = gateway.authenticate(request, request.headers.get("X-public-key"), kinds=PUBLISHABLE)
    ids = [i.strip() for i in request.headers.get("X-experiment-ids", "").split(",") if i.strip()]
    found = gateway.registry.configs.experiments_of(key.org_id, ids or None)
    if not found:
        raise GatewayError(404, "No such experiments" if ids else "No experiments for this key's org")
    body = msgspec.json.encode({"experiments": {i: e.variants for i, e in found.items()}})
    test_mode = request.headers.get("X-xaiku-test", "").strip().lower() == "true"
    cache_control = TEST_MODE_CACHE_CONTROL if test_mode else CACHE_CONTROL
    vary = "X-public-key, X-experiment-ids, X-xaiku-test"
    return conditional(request, body, etag_of(digest(body)), cache_control, vary)
