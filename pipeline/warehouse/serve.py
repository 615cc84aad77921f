"""``sluice warehouse``: the embedded engine (chDB) behind ClickHouse's HTTP interface.

chDB lets one process own its files. This process owns them and speaks ClickHouse's HTTP
interface as its clients use it — clickhouse-connect (and SQLAlchemy through it), the Node
client and the JDBC driver are tested against it (tests/test_warehouse_clients.py) — so that
several workers, the CLI and any ClickHouse client share one warehouse on one machine, and so
that the worker's server backend (``SLUICE_CLICKHOUSE_URL``) is exercised without a ClickHouse
server. It is a development and test server: one user, no TLS; bind it to loopback.

What it takes: the SQL in ``?query=`` and/or the body (joined by a newline); an insert's data
after its ``FORMAT X`` as bytes, in any format the engine reads, its rows counted by the engine
(``X-ClickHouse-Summary``); bodies in a ``Content-Encoding`` or, with ``decompress=1``, in
ClickHouse's compressed blocks; ``param_x`` for ``{x:Type}``; ``database``/``X-ClickHouse-Database``,
``default_format``/``X-ClickHouse-Format``; any other parameter as a setting of this request;
``session_id`` for ``SET`` and ``USE`` that last (:mod:`pipeline.warehouse.http.engine`: nothing a
request does reaches another); ``compress=1`` and ``enable_http_compression=1`` for compressed
answers. Errors are ClickHouse's: ``Code: N. DB::Exception: … (NAME) (version …)``.

Locked like a server on a developer's machine must be, where any web page the developer visits
can send requests to ``127.0.0.1``: every request but ``/ping`` needs the user and password the
operator set (``SLUICE_WAREHOUSE_USER``/``SLUICE_WAREHOUSE_PASSWORD``; HTTP basic auth,
``X-ClickHouse-User``/``X-ClickHouse-Key`` or ``?user=&password=``); a request that carries
``Origin`` (a browser's) is refused; a ``GET`` runs only reading statements (``readonly = 2``, as
ClickHouse runs them), so an ``<img>`` cannot write; every statement passes the allow-list of
:mod:`pipeline.warehouse.guard` (no files, URLs or other servers).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from pipeline.warehouse import WarehouseError
from pipeline.warehouse.http import codec
from pipeline.warehouse.http.engine import Engine, Outcome, Session, Sessions
from pipeline.warehouse.http.errors import ClickHouseError, response
from pipeline.warehouse.http.statement import SETTING_NAME, Statement, assignments, split, use_target
from pipeline.warehouse.readonly import guard_statement
from sluice.sql import literal

__all__ = ["Engine", "build_app", "credentials", "serve"]

log = logging.getLogger("sluice.warehouse")

# Query-string parameters of the HTTP interface that are not settings.
HTTP_PARAMETERS = {
    "query", "database", "default_format", "query_id", "session_id", "session_timeout", "session_check",
    "user", "password", "quota_key", "compress", "decompress", "client_protocol_version",
    "wait_end_of_query", "buffer_size", "stacktrace", "role", "default_session_timeout", "enable_http_compression",
}  # fmt: skip
READING = frozenset({"SELECT", "WITH", "SHOW", "DESCRIBE", "DESC", "EXPLAIN", "EXISTS"})
BINARY = ("Native", "RowBinary", "Parquet", "Arrow", "ORC", "Avro", "MsgPack", "BSONEachRow", "Npy", "Protobuf")


class Guard(Protocol):
    def __call__(self, sql: str, run: Callable[[str], bytes], *, writes: bool) -> str: ...


def credentials(request: web.Request) -> tuple[str, str]:
    """The (user, password) a request presents, in any of the ways ClickHouse takes them."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() == "basic":
        try:
            user, _, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return "", ""
        return user, password
    if "X-ClickHouse-User" in request.headers:
        return request.headers["X-ClickHouse-User"], request.headers.get("X-ClickHouse-Key", "")
    return request.query.get("user", ""), request.query.get("password", "")


def doors(user: str, password: str, version: str) -> Middleware:
    """The middleware that refuses browsers and strangers."""
    expected = f"{user}:{password}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if "Origin" in request.headers:
            error = ClickHouseError(497, "Requests from browsers (with an Origin header) are refused")
            return response(error, version)
        if request.path == "/ping" and request.method in ("GET", "HEAD"):
            return await handler(request)
        presented = ":".join(credentials(request)).encode()
        if not hmac.compare_digest(presented, expected):
            error = ClickHouseError(
                516, f"{user}: Authentication failed: password is incorrect, or there is no user with such name"
            )
            return response(error, version)
        return await handler(request)

    return middleware


class Requests:
    """One request: its statement, settings, session and data, run on the engine."""

    def __init__(self, engine: Engine, guard: Guard) -> None:
        self.engine = engine
        self.guard = guard
        self.sessions = Sessions()
        self.admitted: set[str] = set()  # settings clauses the allow-list passed

    async def handle(self, request: web.Request) -> web.StreamResponse:
        headers = {"X-ClickHouse-Query-Id": request.query.get("query_id") or str(uuid.uuid4()),
                   "X-ClickHouse-Timezone": self.engine.timezone,
                   "X-ClickHouse-Server-Display-Name": "sluice-warehouse"}  # fmt: skip
        try:
            if request.method not in ("GET", "POST", "HEAD"):
                raise ClickHouseError(48, f"HTTP method {request.method} is not supported", status=405)
            if request.method != "POST" and "query" not in request.query:
                return web.Response(text="Ok.\n")
            return await self._statement(request, headers)
        except ClickHouseError as exc:
            return response(exc, self.engine.version, headers)
        except WarehouseError as exc:  # the allow-list's refusal
            return response(ClickHouseError(getattr(exc, "code", 497), str(exc)), self.engine.version, headers)

    async def _statement(self, request: web.Request, headers: dict[str, str]) -> web.Response:
        params = request.query
        raw = await request.read()
        statement = await asyncio.to_thread(self._read, raw, params, request.headers.get("Content-Encoding", ""))
        session = self._session(request)
        database = request.headers.get("X-ClickHouse-Database") or params.get("database") or session.database
        database = database or "default"
        settings = dict(session.settings)
        for name, value in params.items():
            if name not in HTTP_PARAMETERS and not name.startswith("param_") and SETTING_NAME.match(name):
                settings[name] = literal(value)
        # read-only as strict as any source asks: the session's, the URL's, a GET's (2, as ClickHouse)
        asked = (session.settings.get("readonly", "0"), settings.get("readonly", "0"))
        readonly = max(*(_int(value) for value in asked), 2 if request.method == "GET" else 0)
        if readonly:
            settings["readonly"] = str(readonly)
        fmt = statement.output_format or request.headers.get("X-ClickHouse-Format") or params.get("default_format")
        fmt = fmt or "TabSeparated"
        query_params = {k.removeprefix("param_"): v for k, v in params.items() if k.startswith("param_")}
        change = Session()  # what a SET or USE changes, applied here: sessions are the event loop's
        outcome = await asyncio.to_thread(self._run, statement, change, settings, readonly, database, fmt, query_params)
        session.settings.update(change.settings)
        session.database = change.database or session.database
        out = outcome.body
        headers["X-ClickHouse-Format"] = fmt
        headers["X-ClickHouse-Summary"] = json.dumps(outcome.summary(), separators=(",", ":"))
        headers["Content-Type"] = _content_type(fmt)
        if params.get("compress") == "1":
            out = await asyncio.to_thread(codec.frame, out)
        elif params.get("enable_http_compression") == "1" and out:
            encoding = codec.response_encoding(request.headers.get("Accept-Encoding", ""))
            if encoding:
                out = await asyncio.to_thread(codec.ENCODERS[encoding], out)
                headers["Content-Encoding"] = encoding
        return web.Response(body=out, headers=headers)

    def _read(self, raw: bytes, params: Mapping[str, str], content_encoding: str) -> Statement:
        """The body decoded (its ``Content-Encoding``, then ClickHouse's blocks if ``decompress=1``),
        joined to ``?query=`` by a newline as ClickHouse joins them, and split (in a thread: a
        large body takes a while)."""
        body = codec.decode_body(raw, content_encoding)
        if params.get("decompress") == "1":
            body = codec.unframe(body)
        query = params.get("query", "")
        return split(query.encode() + b"\n" + body if query else body, self.engine.output_formats)

    def _session(self, request: web.Request) -> Session:
        session_id = request.query.get("session_id", "")
        if not session_id:
            return Session()
        timeout = _int(request.query.get("session_timeout", "60")) or 60
        return self.sessions.get(session_id, min(timeout, 3600), request.query.get("session_check") == "1")

    def _run(self, statement: Statement, change: Session, settings: dict[str, str], readonly: int,
             database: str, fmt: str, params: dict[str, str]) -> Outcome:  # fmt: skip
        kind = statement.kind

        def run_text(sql: str) -> bytes:  # for the allow-list: ``EXPLAIN AST`` needs the parameters
            return self.engine.query(sql, "TSVRaw", params=params).body

        if readonly and kind not in READING and kind not in ("SET", "USE"):
            raise ClickHouseError(164, f"Cannot execute query in readonly mode (readonly = {readonly})")
        self._admit_settings(settings, run_text)
        if kind == "INSERT" and statement.data is not None:
            self.guard(statement.head, run_text, writes=True)
            return self._insert(statement, settings, database)
        if kind == "SET":
            return self._set(statement.sql, change, settings, readonly, run_text)
        self.guard(statement.sql, run_text, writes=not readonly)
        if kind == "USE":
            name = use_target(statement.sql)
            if not self.engine.query(f"SELECT 1 FROM system.databases WHERE name = {literal(name)}", "TSV").body:
                raise ClickHouseError(81, f"Database {name} does not exist")
            change.database = name
            return Outcome(b"")
        clause = ", ".join(f"{k} = {v}" for k, v in settings.items())
        sql = f"{statement.sql}\nSETTINGS {clause}" if clause and not statement.stores_query else statement.sql
        return self.engine.query(sql, fmt, database, params)

    def _admit_settings(self, settings: dict[str, str], run: Callable[[str], bytes]) -> None:
        """The request's and its session's settings, past the allow-list's rules for settings (no
        disk, path or schema file) as a statement of their own; each set of them once."""
        clause = ", ".join(f"{k} = {v}" for k, v in settings.items())
        if clause and clause not in self.admitted:
            self.guard(f"SELECT 1 SETTINGS {clause}", run, writes=True)
            if len(self.admitted) > 10_000:
                self.admitted.clear()
            self.admitted.add(clause)

    def _insert(self, statement: Statement, settings: dict[str, str], database: str) -> Outcome:
        """The data as bytes into the engine's streamed insert; the insert's own settings win."""
        named = dict(statement.insert_settings)
        merged = [f"{k} = {v}" for k, v in settings.items() if k not in named]
        merged += [f"{k} = {v}" for k, v in statement.insert_settings]
        sql = statement.sql + (" SETTINGS " + ", ".join(merged) if merged else "")
        assert statement.data is not None
        return self.engine.insert(sql, statement.input_format, database, statement.data)

    def _set(
        self, sql: str, change: Session, settings: dict[str, str], readonly: int, run: Callable[[str], bytes]
    ) -> Outcome:
        """A client's ``SET``: checked by the engine (in a query of its own), kept in its session.
        It changes no data, so the allow-list sees it as a write only to judge its settings."""
        changes = assignments(sql.split(None, 1)[1] if " " in sql.strip() else "")
        if readonly == 1 or (readonly and any(name == "readonly" for name, _ in changes)):
            raise ClickHouseError(164, "Cannot modify settings in readonly mode")
        self.guard(sql, run, writes=True)
        clause = ", ".join(f"{k} = {v}" for k, v in {**settings, **dict(changes)}.items())
        self.engine.query(f"SELECT 1 SETTINGS {clause}", "TSV")
        change.settings.update(changes)
        return Outcome(b"")


def _int(value: str) -> int:
    try:
        return int(value.strip("'\""))
    except ValueError:
        return 0


def _content_type(fmt: str) -> str:
    if fmt.startswith(BINARY):
        return "application/octet-stream"
    if fmt.startswith("JSON"):
        return "application/json; charset=UTF-8"
    if fmt.startswith(("TSV", "TabSeparated")):
        return "text/tab-separated-values; charset=UTF-8"
    if fmt.startswith("CSV"):
        return "text/csv; charset=UTF-8"
    return "text/plain; charset=UTF-8"


def build_app(
    engine: Engine, user: str, password: str, max_body_bytes: int = 256 * 2**20, guard: Guard = guard_statement
) -> web.Application:
    if not password:
        raise ValueError("sluice warehouse needs a password: set SLUICE_WAREHOUSE_PASSWORD")

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="Ok.\n")

    app = web.Application(
        client_max_size=max_body_bytes,
        middlewares=[doors(user, password, engine.version)],
        handler_args={"auto_decompress": False},  # the body's Content-Encoding is ours to decode (codec)
    )
    app.router.add_get("/ping", ping)
    app.router.add_route("*", "/", Requests(engine, guard).handle)
    return app


def serve(path: Path, host: str, port: int, user: str, password: str) -> None:
    """Serve until SIGINT/SIGTERM."""
    engine = Engine(path)
    app = build_app(engine, user, password)
    log.info("serving chDB at %s on http://%s:%s", path, host, port)
    web.run_app(app, host=host, port=port, print=None, shutdown_timeout=5.0)
