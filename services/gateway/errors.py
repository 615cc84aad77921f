"""One error type for the gateway, and the middleware that renders it in each family's shape."""

from __future__ import annotations

import logging
from http import HTTPStatus

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from services.gateway.routes import family_of

log = logging.getLogger("sluice.gateway")


class GatewayError(Exception):
    """A request the gateway refuses. ``retry_after`` (seconds) becomes a Retry-After header."""

    def __init__(self, status: int, message: str, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retry_after = retry_after


def unavailable(message: str = "Service temporarily unavailable; retry later") -> GatewayError:
    return GatewayError(503, message, retry_after=1)


def error_body(family: str, status: int, message: str) -> dict[str, str]:
    """``{"error": message}``, except the experimentation family's ``{error: phrase, message}``."""
    if family == "traffical":
        return {"error": HTTPStatus(status).phrase, "message": message}
    return {"error": message}


def json_response(body: object, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=msgspec.json.encode(body), status=status, headers=headers, content_type="application/json")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GatewayError as exc:
        headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
        return json_response(error_body(family_of(request.path), exc.status, exc.message), exc.status, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return json_response(error_body(family_of(request.path), exc.status, exc.reason), exc.status)
    except Exception:
        log.exception("unhandled error", extra={"path": request.path})
        return json_response(error_body(family_of(request.path), 500, "Internal server error"), 500)


CORS_HEADERS = {
    "Access-Control-Allow-Origin": "*",
    "Access-Control-Allow-Methods": "POST, GET, OPTIONS",
    "Access-Control-Allow-Headers": "Authorization, Content-Type, X-Api-Key, X-public-key, Accept",
    "Access-Control-Max-Age": "86400",
}


@web.middleware
async def cors_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """``Access-Control-Allow-Origin: *`` on every answer; preflight answered here."""
    if request.method == "OPTIONS":
        return web.Response(status=204, headers=CORS_HEADERS)
    response = await handler(request)
    response.headers.update(CORS_HEADERS)
    return response
