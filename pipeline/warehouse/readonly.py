"""Analysts' SQL: one read-only statement, checked by ClickHouse's own parser and run with
``readonly = 1`` — which also forbids the table functions that reach files, URLs or other
servers (``file``, ``url``, ``remote``, ``s3`` …) and any change of settings.

The statement is parsed first (``formatQuerySingleLine``: a second statement is a syntax
error, comments are gone), must start with a reading keyword, and runs as ClickHouse formatted
it, with ``SETTINGS readonly = 1`` after it. The query endpoint also requires a token
(:func:`query_token`), refuses browsers and, with a ClickHouse server configured, is not served
at all: analysts use the server with users of their own (docs/operations.md).
"""

from __future__ import annotations

import hmac
import os
import secrets
from pathlib import Path

from pipeline.warehouse import Warehouse, WarehouseError
from sluice.sql import literal

READING = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})


def read_only(warehouse: Warehouse, sql: str, fmt: str) -> bytes:
    """Run ``sql`` if it is one reading statement; raise :class:`WarehouseError` otherwise."""
    formatted = warehouse.execute(f"SELECT formatQuerySingleLine({literal(sql)})", "TSVRaw").decode().strip()
    first = formatted.split(None, 1)[0].upper() if formatted else ""
    if first not in READING:
        raise WarehouseError(f"only reading statements ({', '.join(sorted(READING))}) are allowed here")
    return warehouse.execute(f"{formatted}\nSETTINGS readonly = 1", fmt)


def token_path(home: str) -> Path:
    return Path(home) / "query-token"


def query_token(configured: str, home: str, create: bool) -> str:
    """The query endpoint's token: ``SLUICE_QUERY_TOKEN`` when set, else the one in
    ``{home}/query-token`` (mode 0600), made on first use by the worker (``create``)."""
    if configured:
        return configured
    path = token_path(home)
    if path.exists():
        return path.read_text().strip()
    if not create:
        return ""
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(token + "\n")
    return token


def authorized(header: str, token: str) -> bool:
    """``Authorization: Bearer <token>``, compared in constant time."""
    given = header.removeprefix("Bearer ").strip() if header.startswith("Bearer ") else ""
    return bool(token) and hmac.compare_digest(given.encode(), token.encode())
