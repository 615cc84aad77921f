"""The engine behind ``sluice warehouse`` and the sessions its clients keep.

chDB is one session per process. Nothing a request does may stay in it: the server never runs
a client's ``SET`` or ``USE`` on it. A request's settings (its URL's, and those its
``session_id`` set) go in the statement's own ``SETTINGS`` clause; its database is chosen by a
``USE`` the server runs before the statement, under the same lock. A client's ``SET`` and
``USE`` are kept in its :class:`Session`, as ClickHouse keeps them for a ``session_id``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.warehouse.http.errors import ClickHouseError, from_engine


@dataclass(frozen=True)
class Outcome:
    """A statement's output and what it read and wrote (for ``X-ClickHouse-Summary``)."""

    body: bytes
    read_rows: int = 0
    read_bytes: int = 0
    written_rows: int = 0
    written_bytes: int = 0
    elapsed: float = 0.0

    def summary(self) -> dict[str, str]:
        return {
            "read_rows": str(self.read_rows), "read_bytes": str(self.read_bytes),
            "written_rows": str(self.written_rows), "written_bytes": str(self.written_bytes),
            "total_rows_to_read": str(self.read_rows), "result_rows": "0", "result_bytes": "0",
            "elapsed_ns": str(int(self.elapsed * 1e9)),
        }  # fmt: skip


class Engine:
    """One chDB session, used by one statement at a time."""

    def __init__(self, path: Path) -> None:
        from chdb import session as chdb_session

        path.mkdir(parents=True, exist_ok=True)
        self.session: Any = chdb_session.Session(str(path))  # type: ignore[no-untyped-call]
        self.lock = threading.Lock()
        self.database = ""
        self.version, self.timezone = self.query("SELECT version(), timezone()", "TSV").body.decode().split()
        names = self.query("SELECT name FROM system.formats WHERE is_output", "TSV").body.decode().split()
        self.output_formats = frozenset(names)

    def _use(self, database: str) -> None:
        if database and database != self.database:
            self.session.query(f"USE {identifier(database)}")
            self.database = database

    def query(self, sql: str, fmt: str, database: str = "", params: dict[str, str] | None = None) -> Outcome:
        with self.lock:
            try:
                self._use(database)
                result = self.session.query(sql, fmt, params=params or None)
            except RuntimeError as exc:  # chDB's errors
                raise from_engine(str(exc)) from exc
            return Outcome(
                bytes(result.bytes()), result.rows_read(), result.bytes_read(),
                result.rows_written(), result.bytes_written(), result.elapsed(),
            )  # fmt: skip

    def insert(self, sql: str, fmt: str, database: str, data: bytes) -> Outcome:
        """``data`` (bytes in ``fmt``) into the ``INSERT`` that ``sql`` begins, streamed to the
        engine as they are; the rows it wrote, from the engine's own count."""
        with self.lock:
            try:
                self._use(database)
                with self.session.send_insert(sql, fmt) as inserter:
                    if data:
                        inserter.append(data)
                    result = inserter.finish()
            except RuntimeError as exc:
                raise from_engine(str(exc)) from exc
            return Outcome(
                b"", written_rows=result.rows_written, written_bytes=result.bytes_written, elapsed=result.elapsed
            )


def identifier(name: str) -> str:
    return "`" + name.replace("\\", "\\\\").replace("`", "\\`") + "`"


@dataclass
class Session:
    """What a ``session_id`` keeps between requests: its settings (name → SQL value) and database."""

    settings: dict[str, str] = field(default_factory=dict)
    database: str = ""
    expires: float = 0.0


class Sessions:
    """The sessions by id; one unused for its ``session_timeout`` (60 s by default) is gone."""

    def __init__(self, limit: int = 10_000, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self.clock = clock
        self.by_id: dict[str, Session] = {}

    def get(self, session_id: str, timeout: float, check: bool) -> Session:
        now = self.clock()
        for old in [k for k, s in self.by_id.items() if s.expires < now]:
            del self.by_id[old]
        session = self.by_id.get(session_id)
        if session is None:
            if check:
                raise ClickHouseError(372, f"Session {session_id} not found")
            if len(self.by_id) >= self.limit:
                raise ClickHouseError(373, f"Too many sessions ({self.limit}); end some or wait for them to expire")
            session = self.by_id[session_id] = Session()
        session.expires = now + timeout
        return session
