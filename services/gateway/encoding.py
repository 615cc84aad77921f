"""Compressed request bodies (``Content-Encoding``), decoded here rather than by aiohttp.

aiohttp's own decoding turns a garbage body into an exception that escapes handlers (a 500 and a
traceback), an unknown encoding into a logged traceback, and inflates without a bound of ours. Here
a body inflates to at most ``limit`` bytes (413 beyond), and anything that does not decode is a 400
in the family's shape. No SDK family compresses; gzip and deflate are kept for hand-made clients.
"""

from __future__ import annotations

import zlib

from services.gateway.errors import GatewayError

WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}


def decode_content(body: bytes, encoding: str, limit: int) -> bytes:
    """The body as sent before ``encoding``; 400 when it does not decode, 413 when it inflates past ``limit``."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding not in WBITS:
        raise GatewayError(400, f"Unsupported Content-Encoding: {encoding[:40]!r}")
    for wbits in (WBITS[encoding], -zlib.MAX_WBITS) if encoding == "deflate" else (WBITS[encoding],):
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(body, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit:
            raise GatewayError(413, f"Request body too large (max {limit} bytes)")
        if inflater.eof and not inflater.unused_data:
            return out
    raise GatewayError(400, f"Request body is not valid {encoding}")
