"""The embedded warehouse: chDB, the ClickHouse engine in this process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from pipeline.warehouse.errors import WarehouseError, classify
from sluice.sql import Parameters, parameter_texts

INSERT_SETTINGS = "date_time_input_format = 'best_effort', input_format_json_read_objects_as_strings = 1"


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
