"""``sluice warehouse``: the embedded engine (chDB) behind ClickHouse's HTTP interface.

chDB lets one process own its files. This process owns them and speaks the part of ClickHouse's
HTTP protocol that clients use — ``POST /`` with the SQL in the body or in ``?query=`` (then the
body is the data, as for ``INSERT … FORMAT JSONEachRow``), ``?database=``, ``?default_format=``,
other parameters as settings, ``GET /ping`` — so that several workers, the CLI and any
ClickHouse client (clickhouse-connect included) share one warehouse on one machine, and so that
the worker's server backend (``SLUICE_CLICKHOUSE_URL``) is exercised here without a ClickHouse
server. It is a development and test server: one user, no TLS; bind it to loopback.

Locked like a server on a developer's machine must be, where any web page the developer visits
can send requests to ``127.0.0.1``: every request but ``GET /ping`` needs the user and password
the operator set (``SLUICE_WAREHOUSE_USER``/``SLUICE_WAREHOUSE_PASSWORD``; HTTP basic auth,
``X-ClickHouse-User``/``X-ClickHouse-Key`` or ``?user=&password=``, as ClickHouse takes them); a
request that carries ``Origin`` (a browser's) is refused; SQL comes only by ``POST`` — a ``GET``,
which a page can make with an ``<img>``, runs nothing.

Statements run one at a time (chDB is one session), in a thread so that the event loop keeps
reading requests. An error is answered as ClickHouse does: a non-200 status with the text
``Code: N. DB::Exception: …`` and ``X-ClickHouse-Exception-Code``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import re
import threading
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from sluice.sql import literal

log = logging.getLogger("sluice.warehouse")

# Query-string parameters of the HTTP interface that are not settings.
HTTP_PARAMETERS = {
    "query", "database", "default_format", "query_id", "session_id", "session_timeout", "session_check",
    "user", "password", "quota_key", "compress", "decompress", "client_protocol_version",
    "wait_end_of_query", "buffer_size", "stacktrace", "role", "default_session_timeout",
}  # fmt: skip
SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
CODE = re.compile(r"Code: (\d+)")


class Engine:
    """One chDB session, used by one statement at a time."""

    def __init__(self, path: Path) -> None:
        from chdb import session as chdb_session

        path.mkdir(parents=True, exist_ok=True)
        self.session: Any = chdb_session.Session(str(path))  # type: ignore[no-untyped-call]
        self.lock = threading.Lock()
        self.applied: set[str] = set()

    def run(self, sql: str, fmt: str, database: str, settings: dict[str, str]) -> bytes:
        with self.lock:
            self.session.query(f"USE {_identifier(database)}")
            # Settings last one request: those a previous request set go back to their defaults.
            for name in self.applied - settings.keys():
                self.session.query(f"SET {name} = DEFAULT")
            for name, value in settings.items():
                self.session.query(f"SET {name} = {literal(value)}")
            self.applied = set(settings)
            return bytes(self.session.query(sql, fmt).bytes())


def _identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


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


def guard(user: str, password: str) -> Middleware:
    """The middleware that refuses browsers, strangers and SQL over GET."""
    expected = f"{user}:{password}".encode()

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if "Origin" in request.headers:
            return _error(403, 497, "Requests from browsers (with an Origin header) are refused")
        if request.path == "/ping" and request.method in ("GET", "HEAD"):
            return await handler(request)
        presented = ":".join(credentials(request)).encode()
        if not hmac.compare_digest(presented, expected):
            return _error(401, 516, "Authentication failed: password is incorrect, or there is no user with such name")
        if request.method != "POST":
            return _error(405, 164, "SQL is taken by POST only (a GET runs nothing here)")
        return await handler(request)

    return middleware


def build_app(engine: Engine, user: str, password: str, max_body_bytes: int = 256 * 2**20) -> web.Application:
    if not password:
        raise ValueError("sluice warehouse needs a password: set SLUICE_WAREHOUSE_PASSWORD")

    async def ping(request: web.Request) -> web.Response:
        return web.Response(text="Ok.\n")

    async def statement(request: web.Request) -> web.Response:
        params = request.query
        body = await request.read()
        sql = params.get("query", "")
        if sql and body:
            sql = f"{sql}\n{body.decode('utf-8', 'replace')}"
        elif not sql:
            sql = body.decode("utf-8", "replace")
        if not sql.strip():
            return _error(400, 62, "Empty query")
        settings = {
            k: v for k, v in params.items()
            if k not in HTTP_PARAMETERS and not k.startswith("param_") and SETTING_NAME.match(k)
        }  # fmt: skip
        fmt = params.get("default_format", "TabSeparated")
        database = params.get("database", "default")
        try:
            out = await asyncio.to_thread(engine.run, sql, fmt, database, settings)
        except RuntimeError as exc:  # chDB's errors
            text = str(exc)
            match = CODE.search(text)
            return _error(500, int(match.group(1)) if match else 1001, text)
        return web.Response(body=out, headers={"X-ClickHouse-Format": fmt, "Content-Type": "text/plain"})

    app = web.Application(client_max_size=max_body_bytes, middlewares=[guard(user, password)])
    app.router.add_get("/ping", ping)
    app.router.add_route("*", "/", statement)
    return app


def _error(status: int, code: int, text: str) -> web.Response:
    if not text.startswith("Code:"):
        text = f"Code: {code}. DB::Exception: {text}"
    return web.Response(status=status, text=text.rstrip() + "\n", headers={"X-ClickHouse-Exception-Code": str(code)})


def serve(path: Path, host: str, port: int, user: str, password: str) -> None:
    """Serve until SIGINT/SIGTERM."""
    engine = Engine(path)
    app = build_app(engine, user, password)
    log.info("serving chDB at %s on http://%s:%s", path, host, port)
    web.run_app(app, host=host, port=port, print=None, shutdown_timeout=5.0)
