"""The ClickHouse warehouse: one DDL, two backends, one small interface.

- :class:`ChdbWarehouse` — the ClickHouse engine in-process (chDB), files under
  ``.sluice/warehouse``. One process owns those files: the worker. Others reach it over the
  worker's ``/query`` endpoint (see ``sluice query``).
- :class:`ServerWarehouse` — a ClickHouse server through clickhouse-connect, chosen by
  ``SLUICE_CLICKHOUSE_URL``.

Rows travel as a JSON array of objects (``JSONEachRow``), encoded once by msgspec straight from
typed structs; both backends accept exactly those bytes. Calls block; async callers run them in
a thread (:func:`asyncio.to_thread`), and a warehouse that is down raises
:class:`WarehouseUnavailable` (retryable) rather than a query error (not retryable).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from sluice.settings import Settings
from sluice.sql import Parameters, parameter_texts

INSERT_SETTINGS = "date_time_input_format = 'best_effort', input_format_json_read_objects_as_strings = 1"


class WarehouseError(Exception):
    """A statement was rejected: bad SQL, unknown table, a value the column refuses. Retrying
    the same statement will not help."""


class WarehouseUnavailable(WarehouseError):
    """The warehouse could not take the statement now (unreachable, overloaded, out of memory,
    timing out). Wait and retry."""


TRANSIENT_CODES = frozenset({
    159,  # TIMEOUT_EXCEEDED
    160,  # TOO_SLOW
    202,  # TOO_MANY_SIMULTANEOUS_QUERIES
    209,  # SOCKET_TIMEOUT
    210,  # NETWORK_ERROR
    241,  # MEMORY_LIMIT_EXCEEDED
    242,  # TABLE_IS_READ_ONLY
    252,  # TOO_MANY_PARTS (merges behind: back off)
    373,  # SESSION_IS_LOCKED (a query of the same session still running)
    285,  # TOO_FEW_LIVE_REPLICAS
    319,  # UNKNOWN_STATUS_OF_INSERT
    425,  # SYSTEM_ERROR
    439,  # CANNOT_SCHEDULE_TASK
    999,  # KEEPER_EXCEPTION
})  # fmt: skip
"""ClickHouse error codes that say "not now" rather than "not this data"."""


def classify(message: str) -> WarehouseError:
    """A ClickHouse error message (``Code: N. DB::Exception: …``) as unavailable or rejected."""
    found = re.search(r"Code:\s*(\d+)", message)
    if found and int(found.group(1)) in TRANSIENT_CODES:
        return WarehouseUnavailable(message)
    return WarehouseError(message)


class Warehouse(Protocol):
    database: str

    def execute(
        self, sql: str, fmt: str = "TSVWithNames", *, parameters: Parameters | None = None, behind_writes: bool = False
    ) -> bytes:
        """Run one statement; return its output in ClickHouse format ``fmt``. ``parameters`` fill
        its ``{name:Type}`` placeholders, bound by the engine (never quoted into the text).
        ``behind_writes``: an analyst's statement, which waits while the worker's own statements
        wait (embedded)."""
        ...

    def insert_json(self, table: str, rows: bytes) -> None:
        """Insert ``rows``, a JSON array of objects whose keys are column names."""
        ...

    def close(self) -> None: ...


def migrations() -> list[tuple[int, str, list[str]]]:
    """The versioned DDL files, in order: (version, name, statements)."""
    return [(version, name, statements) for version, name, _, statements in _migration_files()]


def _migration_files() -> list[tuple[int, str, str, list[str]]]:
    """(version, name, condition, statements): a file whose first line is ``-- only-if: SQL``
    applies its statements only where that query answers non-zero (an upgrade that a warehouse
    created with the current DDL does not need)."""
    found = []
    for entry in resources.files("pipeline.warehouse").joinpath("ddl").iterdir():
        if entry.name.endswith(".sql"):
            text = entry.read_text()
            first = text.splitlines()[0] if text else ""
            condition = first.removeprefix("-- only-if:").strip() if first.startswith("-- only-if:") else ""
            found.append((int(entry.name.split("_", 1)[0]), entry.name, condition, split_statements(text)))
    return sorted(found)


_LEXEME = re.compile(
    r"""'(?:[^'\\]|\\.|'')*'|"(?:[^"\\]|\\.)*"|`(?:[^`\\]|\\.)*`|--[^\n]*|/\*.*?\*/|;|[^'"`;/-]+|.""", re.DOTALL
)


def split_statements(script: str) -> list[str]:
    """The statements of a DDL script: split at each ``;`` outside strings, quoted names and
    comments; comments dropped, empty statements skipped."""
    statements: list[str] = []
    current: list[str] = []
    for lexeme in _LEXEME.findall(script):
        if lexeme == ";":
            statements.append("".join(current).strip())
            current = []
        elif not lexeme.startswith(("--", "/*")):
            current.append(lexeme)
    statements.append("".join(current).strip())
    return [statement for statement in statements if statement]


MIGRATIONS_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
    "applied_at DateTime DEFAULT now()) ENGINE = MergeTree ORDER BY version"
)


def migrate(warehouse: Warehouse, cluster: str = "") -> list[int]:
    """Apply the DDL versions this warehouse lacks; return the versions applied. With a
    ``cluster``, every statement is applied in its replicated form (``cluster.for_cluster``)."""
    from pipeline.warehouse.cluster import for_cluster

    def run(statement: str) -> None:
        for part in for_cluster(statement, cluster) if cluster else [statement]:
            warehouse.execute(part)

    run(MIGRATIONS_TABLE)
    done = {int(v) for v in warehouse.execute("SELECT version FROM schema_migrations", "TSV").split()}
    applied = []
    for version, name, condition, statements in _migration_files():
        if version in done:
            continue
        if not condition or int(warehouse.execute(condition, "TSV").strip() or b"0"):
            for statement in statements:
                run(statement)
        warehouse.execute(f"INSERT INTO schema_migrations (version, name) VALUES ({version}, '{name}')")
        applied.append(version)
    return applied


class Gate:
    """Turns at one resource: callers ``behind_writes`` wait while any other caller waits."""

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._busy = False
        self._waiting = 0

    @contextmanager
    def turn(self, behind_writes: bool = False) -> Iterator[None]:
        with self._changed:
            if behind_writes:
                self._changed.wait_for(lambda: not self._busy and not self._waiting)
            else:
                self._waiting += 1
                try:
                    self._changed.wait_for(lambda: not self._busy)
                finally:
                    self._waiting -= 1
            self._busy = True
        try:
            yield
        finally:
            with self._changed:
                self._busy = False
                self._changed.notify_all()


class ChdbWarehouse:
    """chDB, the ClickHouse engine inside this process.

    chDB allows one data path per process, so every instance in a process shares it; instances
    differ by database (tests use one database each). The engine runs one statement at a time
    (it serializes them itself), so calls take turns at a gate where the worker's statements go
    before analysts' (``behind_writes``): a stream of queries never starves the inserts.
    """

    _lock = threading.Lock()
    _gate: Gate
    _session: Any = None  # chdb.session.Session: untyped
    _path: Path | None = None
    _current_db: str | None = None

    def __init__(self, path: Path, database: str = "sluice") -> None:
        from chdb import session as chdb_session

        cls = type(self)
        with cls._lock:
            if cls._session is None:
                cls._gate = Gate()
                path.mkdir(parents=True, exist_ok=True)
                cls._session = chdb_session.Session(str(path))  # type: ignore[no-untyped-call]
                cls._path = path
            elif cls._path != path:
                raise WarehouseError(f"chDB is already open at {cls._path} in this process")
            cls._session.query(f"CREATE DATABASE IF NOT EXISTS {database}")
            self.database = database

    def _run(self, sql: str, fmt: str, parameters: Parameters | None = None) -> bytes:
        cls = type(self)
        try:
            self._use()
            result = cls._session.query(sql, fmt, params=parameter_texts(parameters))
        except RuntimeError as exc:  # chDB raises RuntimeError subclasses (two ChdbError classes)
            raise classify(str(exc)) from exc
        return bytes(result.bytes())

    def _use(self) -> None:
        cls = type(self)
        if cls._current_db != self.database:
            cls._session.query(f"USE {self.database}")
            cls._current_db = self.database

    def execute(
        self, sql: str, fmt: str = "TSVWithNames", *, parameters: Parameters | None = None, behind_writes: bool = False
    ) -> bytes:
        with self._gate.turn(behind_writes):
            return self._run(sql, fmt, parameters)

    def insert_json(self, table: str, rows: bytes) -> None:
        """The rows as a streamed insert: the bytes go to the engine as they are, not inside the
        statement's text (twice the rate: the SQL parser never sees them)."""
        cls = type(self)
        with self._gate.turn():
            try:
                self._use()
                with cls._session.send_insert(f"INSERT INTO {table} SETTINGS {INSERT_SETTINGS}", "JSONEachRow") as ins:
                    ins.append(rows)
                    ins.finish()
            except RuntimeError as exc:
                raise classify(str(exc)) from exc

    def close(self) -> None:
        """The session lives as long as the process: chDB cannot reopen another path anyway."""


class ServerWarehouse:
    """A ClickHouse server over HTTP via clickhouse-connect."""

    def __init__(self, url: str) -> None:
        import clickhouse_connect

        parts = urlsplit(url)
        self.database = parts.path.strip("/") or "default"
        try:
            self._client = clickhouse_connect.get_client(
                host=parts.hostname or "localhost",
                port=parts.port or 8123,
                username=parts.username or "default",
                password=parts.password or "",
                secure=parts.scheme == "https",
            )
            self._client.command(f"CREATE DATABASE IF NOT EXISTS {self.database}")
            self._client.database = self.database
        except Exception as exc:
            raise _classify(exc) from exc

    def execute(
        self, sql: str, fmt: str = "TSVWithNames", *, parameters: Parameters | None = None, behind_writes: bool = False
    ) -> bytes:
        try:
            if _without_result(sql):
                # raw_query appends "FORMAT fmt", which an INSERT … VALUES would read as data.
                self._client.command(sql, parameters=dict(parameters or {}))
                return b""
            return bytes(self._client.raw_query(sql, parameters=dict(parameters or {}), fmt=fmt))
        except Exception as exc:
            raise _classify(exc) from exc

    def insert_json(self, table: str, rows: bytes) -> None:
        try:
            self._client.raw_insert(
                table, insert_block=rows, fmt="JSONEachRow",
                settings={"date_time_input_format": "best_effort", "input_format_json_read_objects_as_strings": 1},
            )  # fmt: skip
        except Exception as exc:
            raise _classify(exc) from exc

    def close(self) -> None:
        self._client.close()


_STATEMENTS_WITHOUT_RESULT = ("INSERT", "CREATE", "DROP", "ALTER", "RENAME", "TRUNCATE", "OPTIMIZE", "SYSTEM", "SET")


def _without_result(sql: str) -> bool:
    words = sql.lstrip().split(None, 1)
    return bool(words) and words[0].upper() in _STATEMENTS_WITHOUT_RESULT


def _classify(exc: Exception) -> WarehouseError:
    from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

    if isinstance(exc, OperationalError) or not isinstance(exc, DatabaseError):
        return WarehouseUnavailable(str(exc))
    return classify(str(exc))


def open_warehouse(settings: Settings) -> Warehouse:
    """The configured warehouse, migrated to the current DDL."""
    warehouse: Warehouse
    if settings.clickhouse_url:
        warehouse = ServerWarehouse(settings.clickhouse_url)
    else:
        warehouse = ChdbWarehouse(settings.warehouse_path, settings.clickhouse_database)
    migrate(warehouse, settings.clickhouse_cluster if settings.clickhouse_url else "")
    return warehouse
