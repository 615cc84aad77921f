"""A PostHog capture request's payload, however the SDK sent it.

posthog-js posts gzip as ``text/plain`` without saying so (no ``Content-Encoding``, no
``compression`` parameter): gzip is recognised by its magic bytes whatever the request says. Old
builds post ``data=`` form fields, base64 or lz-string (``compression=lz64``); a GET carries
``data`` in the query. What comes out is the JSON text; anything that does not decode is a 400,
anything that inflates past the body limit a 413.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from urllib.parse import parse_qs

from services.gateway.errors import GatewayError
from services.gateway.lzstring import LzError, decompress_from_base64

GZIP_MAGIC = b"\x1f\x8b\x08"
FORM = "application/x-www-form-urlencoded"


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
