"""The compressions of ClickHouse's HTTP interface.

* ``Content-Encoding`` of a request body (gzip, deflate, br, zstd, lz4 — LZ4's frame format —,
  xz, snappy), and of a response when ``enable_http_compression=1`` and ``Accept-Encoding``
  asks for one of them;
* ClickHouse's own block framing: ``decompress=1`` says the body comes in it, ``compress=1``
  asks for the response in it (the JDBC driver's default). Each block is a 16-byte CityHash128
  (v1.0.2) of what follows, a method byte (0x82 LZ4, 0x90 ZSTD, 0x02 none), the block's size
  with its 9-byte header and the size it decompresses to (UInt32, little-endian), then the data.

A body in an encoding this server does not know is refused (never read as if it were plain).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

import cramjam
from clickhouse_cityhash.cityhash import CityHash128

from pipeline.warehouse.http.errors import ClickHouseError

DECODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda b: bytes(cramjam.gzip.decompress(b)),
    "x-gzip": lambda b: bytes(cramjam.gzip.decompress(b)),
    "deflate": lambda b: bytes(cramjam.zlib.decompress(b)),
    "br": lambda b: bytes(cramjam.brotli.decompress(b)),
    "zstd": lambda b: bytes(cramjam.zstd.decompress(b)),
    "lz4": lambda b: bytes(cramjam.lz4.decompress(b)),
    "xz": lambda b: bytes(cramjam.xz.decompress(b)),
    "snappy": lambda b: bytes(cramjam.snappy.decompress(b)),
}
ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "gzip": lambda b: bytes(cramjam.gzip.compress(b, level=3)),
    "deflate": lambda b: bytes(cramjam.zlib.compress(b, level=3)),
    "br": lambda b: bytes(cramjam.brotli.compress(b, level=3)),
    "zstd": lambda b: bytes(cramjam.zstd.compress(b, level=3)),
    "lz4": lambda b: bytes(cramjam.lz4.compress(b)),
    "xz": lambda b: bytes(cramjam.xz.compress(b)),
}

LZ4, ZSTD, NONE = 0x82, 0x90, 0x02
HEADER = struct.Struct("<BII")
HALVES = struct.Struct("<QQ")
BLOCK = 1 << 20  # ClickHouse's max_compress_block_size


def decode_body(body: bytes, content_encoding: str) -> bytes:
    """``body`` decoded by each encoding in ``Content-Encoding``, last applied first."""
    for name in reversed([e.strip().lower() for e in content_encoding.split(",") if e.strip()]):
        if name == "identity":
            continue
        decoder = DECODERS.get(name)
        if decoder is None:
            raise ClickHouseError(89, f"Unknown Content-Encoding {name!r}: use one of {', '.join(sorted(DECODERS))}")
        try:
            body = decoder(body)
        except Exception as exc:  # cramjam's DecompressionError and friends
            raise ClickHouseError(271, f"Cannot decode the body as {name}: {exc}") from exc
    return body


def response_encoding(accept_encoding: str) -> str:
    """The encoding to answer in: the first one ``Accept-Encoding`` names that we have, else ""."""
    for item in accept_encoding.split(","):
        name, _, params = item.strip().lower().partition(";")
        if name.strip() in ENCODERS and params.replace(" ", "") not in ("q=0", "q=0.0"):
            return name.strip()
    return ""


def unframe(data: bytes) -> bytes:
    """The data of ClickHouse's compressed blocks (``decompress=1``), checksums checked."""
    out = bytearray()
    view = memoryview(data)
    i = 0
    while i < len(data):
        if len(data) - i < 16 + HEADER.size:
            raise ClickHouseError(271, "Cannot decompress: a truncated block header")
        checksum = bytes(view[i : i + 16])
        method, size, plain = HEADER.unpack_from(data, i + 16)
        block = bytes(view[i + 16 : i + 16 + size])
        if size < HEADER.size or len(block) < size:
            raise ClickHouseError(271, "Cannot decompress: a truncated block")
        if _checksum(block) != checksum:
            raise ClickHouseError(40, "Checksum doesn't match: corrupted data in a compressed block")
        payload = block[HEADER.size :]
        try:
            if method == LZ4:
                out += bytes(cramjam.lz4.decompress_block(payload, output_len=plain))
            elif method == ZSTD:
                out += bytes(cramjam.zstd.decompress(payload))
            elif method == NONE:
                out += payload
            else:
                raise ClickHouseError(89, f"Unknown compression method 0x{method:02x} in a compressed block")
        except ClickHouseError:
            raise
        except Exception as exc:
            raise ClickHouseError(271, f"Cannot decompress a block: {exc}") from exc
        i += 16 + size
    return bytes(out)


def frame(data: bytes, method: int = LZ4) -> bytes:
    """``data`` in ClickHouse's compressed blocks (``compress=1``)."""
    out = bytearray()
    for at in range(0, len(data), BLOCK):
        chunk = data[at : at + BLOCK]
        if method == ZSTD:
            payload = bytes(cramjam.zstd.compress(chunk, level=1))
        else:
            payload = bytes(cramjam.lz4.compress_block(chunk, store_size=False))
        block = HEADER.pack(method, HEADER.size + len(payload), len(chunk)) + payload
        out += _checksum(block) + block
    return bytes(out)


def _checksum(block: bytes) -> bytes:
    """CityHash128 as ClickHouse writes it: the first 64-bit half, then the second, little-endian
    (clickhouse-cityhash packs the first half in the high bits of its int)."""
    value = CityHash128(block)
    return HALVES.pack(value >> 64, value & 0xFFFFFFFFFFFFFFFF)
