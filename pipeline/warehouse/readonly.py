"""Analysts' SQL on the embedded warehouse: one statement the allow-list admits
(:mod:`pipeline.warehouse.guard`: reading only, no files, URLs, other servers or settings), run as
ClickHouse formatted it under ``readonly = 1`` and a time limit the caller cannot lift, and
behind the worker's own statements so that a slow query never holds the inserts up for longer
than that limit. Nothing a request does outlives it: its settings are the statement's
``SETTINGS`` clause, never the session's.

The query endpoint also requires a token (:func:`query_token`), refuses browsers and, with a
ClickHouse server configured, is not served at all: analysts use the server with users of their
own (docs/operations.md).
"""

from __future__ import annotations

import hmac
import os
import secrets
from collections.abc import Callable
from pathlib import Path

from pipeline.warehouse import Warehouse
from pipeline.warehouse.guard import Guard
from sluice.sql import Parameters


def guard_statement(sql: str, run: Callable[[str], bytes], *, writes: bool) -> str:
    """``sql`` as one formatted statement if the allow-list admits it (``writes``: inserts and
    table DDL too, as ``sluice warehouse`` serves); raises ``guard.Refused`` otherwise. ``run``
    executes a statement on the engine and returns its TSV output."""
    return Guard(run).check(sql, writes=writes)


def read_only(
    warehouse: Warehouse, sql: str, fmt: str, time_limit: float, parameters: Parameters | None = None
) -> bytes:
    """Run ``sql`` if it is one reading statement the allow-list admits; raise
    ``WarehouseError`` (``guard.Refused`` for a refusal) otherwise. ``parameters`` fill its
    ``{name:Type}`` placeholders (``param_name`` on the endpoint)."""

    def run(text: str) -> bytes:  # EXPLAIN AST of a statement with placeholders needs their values
        return warehouse.execute(text, "TSVRaw", parameters=parameters, behind_writes=True)

    formatted = Guard(run).check(sql, writes=False)
    limits = f"readonly = 1, max_execution_time = {time_limit:g}, timeout_overflow_mode = 'throw'"
    return warehouse.execute(f"{formatted}\nSETTINGS {limits}", fmt, parameters=parameters, behind_writes=True)


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
