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

from typing import Protocol

from pipeline.warehouse.errors import TRANSIENT_CODES, WarehouseError, WarehouseUnavailable, classify
from sluice.settings import Settings
from sluice.sql import Parameters

__all__ = [
    "TRANSIENT_CODES", "ChdbWarehouse", "ServerWarehouse", "Warehouse", "WarehouseError", "WarehouseUnavailable",
    "classify", "migrate", "migrations", "open_warehouse", "split_statements",
]  # fmt: skip


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


from pipeline.warehouse.chdb import ChdbWarehouse  # noqa: E402  (they implement the protocol above)
from pipeline.warehouse.migrations import migrate, migrations, split_statements  # noqa: E402
from pipeline.warehouse.server import ServerWarehouse  # noqa: E402


def open_warehouse(settings: Settings) -> Warehouse:
    """The configured warehouse, migrated to the current DDL."""
    warehouse: Warehouse
    if settings.clickhouse_url:
        warehouse = ServerWarehouse(settings.clickhouse_url)
    else:
        warehouse = ChdbWarehouse(settings.warehouse_path, settings.clickhouse_database)
    migrate(warehouse, settings.clickhouse_cluster if settings.clickhouse_url else "")
    return warehouse
