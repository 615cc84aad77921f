"""A PostHog capture request's payload, however the SDK sent it.

posthog-js posts gzip as ``text/plain`` without saying so (no ``Content-Encoding``, no
``compression`` parameter): gzip is recognised by its magic bytes whatever the request says. Old
builds post ``data=`` form fields, base64 or lz-string (``compression=lz64``); a GET carries
``data`` in the query. What comes out is the JSON text; anything that does not decode is a 400,
anything that inflates past the body limit a 413.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import zlib
from collections.abc import Mapping
from urllib.parse import parse_qs

from aiohttp import web

from services.gateway.budget import OverBudget
from services.gateway.context import RESERVATION, Gateway
from services.gateway.encoding import decode_content
from services.gateway.errors import GatewayError, unavailable
from services.gateway.lzstring import LzError, decompress_from_base64

GZIP_MAGIC = b"\x1f\x8b\x08"
FORM = "application/x-www-form-urlencoded"


async def read_bytes(gateway: Gateway, request: web.Request, family: str) -> bytes:
    """The body as sent (less its ``Content-Encoding``), bounded like ``Gateway.read_body``: 413
    over the body limit, 408 too slow, 503 over the in-flight budget. Not checked as UTF-8: a
    posthog-js body is gzip."""
    limit = gateway.settings.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise GatewayError(413, f"Request body too large (max {limit} bytes)")
    reservation = request[RESERVATION]
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(gateway.settings.client_timeout):
            async for chunk in request.content.iter_chunked(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise GatewayError(413, f"Request body too large (max {limit} bytes)")
                reservation.grow(size)
                chunks.append(chunk)
    except TimeoutError:
        raise GatewayError(408, f"Request body not received within {gateway.settings.client_timeout:g}s") from None
    except web.RequestPayloadError:
        request.content.feed_eof()
        raise GatewayError(400, "Request body could not be read", close=True) from None
    except OverBudget:
        raise unavailable("Too many requests in flight; retry later") from None
    gateway.metrics.body_bytes.labels(family).observe(size)
    body = b"".join(chunks)
    if encoding := request.headers.get("Content-Encoding"):
        body = decode_content(body, encoding, limit)
        hold(request, size + len(body))
    return body


def hold(request: web.Request, total: int) -> None:
    """Count ``total`` bytes (the body as read and what it decoded to) against the in-flight budget."""
    try:
        request[RESERVATION].grow(total)
    except OverBudget:
        raise unavailable("Too many requests in flight; retry later") from None


def payload(body: bytes, query: Mapping[str, str], content_type: str, limit: int) -> bytes:
    """The JSON text of the request: form field or query ``data``, then the ``compression`` it
    names (gzip sniffed regardless), then base64 if what is left is not JSON."""
    compression = query.get("compression", "")
    data = body
    if content_type == FORM or (body.startswith(b"data=") and content_type != "application/json"):
        form = _form(body)
        data = form.get("data", "").replace(" ", "+").encode()
        compression = form.get("compression", compression)
    if not data.strip() and "data" in query:
        data = query["data"].replace(" ", "+").encode()
    compression = compression.strip().lower()
    if data.startswith(GZIP_MAGIC) or compression in ("gzip", "gzip-js"):
        data = _gunzip(data, limit)
    elif compression in ("lz64", "lz-string"):
        data = _lz(data, limit)
    elif compression == "base64" or (data and data.lstrip()[:1] not in (b"{", b"[")):
        data = _base64(data)
        if data.startswith(GZIP_MAGIC):
            data = _gunzip(data, limit)
    if len(data) > limit:
        raise GatewayError(413, f"Request body too large (max {limit} bytes)")
    try:
        data.decode()
    except UnicodeDecodeError:
        raise GatewayError(400, "Request body must be UTF-8 encoded JSON") from None
    return data


def _form(body: bytes) -> dict[str, str]:
    try:
        fields = parse_qs(body.decode(), keep_blank_values=True, max_num_fields=64)
    except (UnicodeDecodeError, ValueError):
        raise GatewayError(400, "Request body is not a valid form") from None
    return {name: values[0] for name, values in fields.items()}


def _gunzip(data: bytes, limit: int) -> bytes:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = inflater.decompress(data, limit + 1)
    except zlib.error:
        raise GatewayError(400, "Request body is not valid gzip") from None
    if len(out) > limit:
        raise GatewayError(413, f"Request body too large (max {limit} bytes)")
    if not inflater.eof:
        raise GatewayError(400, "Request body is not valid gzip (truncated)")
    return out


def _lz(data: bytes, limit: int) -> bytes:
    try:
        return decompress_from_base64(data.decode().strip(), limit).encode()
    except (LzError, UnicodeDecodeError):
        raise GatewayError(400, "Request body is not valid lz-string (compression=lz64)") from None


def _base64(data: bytes) -> bytes:
    text = data.strip()
    try:
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        try:
            return base64.urlsafe_b64decode(text + b"=" * (-len(text) % 4))
        except (binascii.Error, ValueError):
            raise GatewayError(400, "Request body is neither JSON nor base64") from None
