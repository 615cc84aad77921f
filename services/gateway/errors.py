"""One error type for the gateway, and the middleware that renders it in each family's shape."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from http import HTTPStatus

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

log = logging.getLogger("sluice.gateway")

FAMILY_OF: web.AppKey[Callable[[str], str]] = web.AppKey("family_of")
"""The app's route table as path → family (``services.gateway.routes.family_of``); no family
(the plain ``{"error": …}`` shape) in an app without one."""


class GatewayError(Exception):
    """A request the gateway refuses. ``retry_after`` (seconds) becomes a Retry-After header."""

    def __init__(self, status: int, message: str, retry_after: int | None = None, close: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after
        self.close = close
        """The connection cannot carry another request (its body could not be read)."""


def unavailable(message: str = "Service temporarily unavailable; retry later") -> GatewayError:
    return GatewayError(503, message, retry_after=1)


def error_body(family: str, status: int, message: str) -> dict[str, str]:
    """``{"error": message}``, except the experimentation family's ``{error: phrase, message}``."""
    if family == "traffical":
        return {"error": HTTPStatus(status).phrase, "message": message}
    return {"error": message}


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), status=status, headers=headers, content_type="application/json")


def _family(request: web.Request) -> str:
    lookup = request.app.get(FAMILY_OF)
    return lookup(request.path) if lookup is not None else ""


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        response = json_response(error_body(_family(request), exc.status, exc.message), exc.status, headers)
        if exc.close:
            response.force_close()
        return response
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response(error_body(_family(request), exc.status, exc.reason), exc.status)
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return json_response(error_body(_family(request), 500, "Internal server error"), 500)


SDK_HEADERS = (
    "Authorization", "Content-Type", "Accept", "X-Api-Key", "X-public-key", "X-experiment-ids", "X-xaiku-test",
    "X-project-ids", "If-None-Match",
)  # fmt: skip
"""Every request header the families' SDKs send (Traffical's config fetch sends If-None-Match;
Xaiku's experiments fetch X-experiment-ids and, in test mode, X-xaiku-test; its older projects
fetch X-project-ids)."""
CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
    "Access-Control-Allow-Headers": ", ".join(SDK_HEADERS),
    "Access-Control-Max-Age": "86400",
}
EXPOSED = {"Access-Control-Expose-Headers": "ETag, Retry-After"}
"""Response headers a page's script may read: Traffical's SDK keeps the config's ETag."""
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,64}$")


def allowed_headers(requested: str) -> str:
    """The SDK headers, and whatever else the browser asks for in Access-Control-Request-Headers
    (header names only; a request that is not a list of names gets the SDK list alone)."""
    names = [n.strip() for n in requested.split(",") if n.strip()]
    known = {h.lower() for h in SDK_HEADERS}
    if len(names) > 32 or not all(_TOKEN.match(n) for n in names):
        return CORS_HEADERS["Access-Control-Allow-Headers"]
    extra = [n for n in dict.fromkeys(names) if n.lower() not in known]
    return ", ".join((*SDK_HEADERS, *extra))


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``Access-Control-Allow-Origin: *`` on every answer; preflight answered here."""
    if request.method == "OPTIONS":
        headers = {**CORS_HEADERS, "Vary": "Access-Control-Request-Headers"}
        headers["Access-Control-Allow-Headers"] = allowed_headers(
            request.headers.get("Access-Control-Request-Headers", "")
        )
        return web.Response(status=204, headers=headers)
    response = await handler(request)
    response.headers.update(CORS_HEADERS)
    response.headers.update(EXPOSED)
    return response
