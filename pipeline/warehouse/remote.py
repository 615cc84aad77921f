"""The embedded warehouse as seen from outside the worker that owns it: SQL over its ``/query``."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request

from pipeline.warehouse import Warehouse, WarehouseError, WarehouseUnavailable, open_warehouse
from pipeline.warehouse.readonly import query_token
from sluice.settings import Settings
from sluice.sql import Parameters, parameter_texts


class RemoteWarehouse:
    """Reads (and DDL) through a worker; inserts belong to the worker itself."""

    def __init__(self, worker_url: str, database: str = "", token: str = "") -> None:
        self.url = worker_url.rstrip("/") + "/query"
        self.database = database
        self.token = token

    def execute(
        self, sql: str, fmt: str = "TSVWithNames", *, parameters: Parameters | None = None, behind_writes: bool = False
    ) -> bytes:
        query = {"format": fmt, **{f"param_{name}": text for name, text in parameter_texts(parameters).items()}}
        request = urllib.request.Request(
            f"{self.url}?{urllib.parse.urlencode(query)}",
            data=sql.encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self.token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=120) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as exc:
            raise WarehouseError(exc.read().decode(errors="replace").strip()) from exc
        except urllib.error.URLError as exc:
            raise WarehouseUnavailable(
                f"no worker at {self.url} owns the embedded warehouse ({exc.reason}); "
                "start one with `make run` or `sluice worker`"
            ) from exc

    def insert_json(self, table: str, rows: bytes) -> None:
        raise WarehouseError("inserts into the embedded warehouse go through the worker")

    def close(self) -> None:
        pass


def warehouse_for_cli(settings: Settings) -> Warehouse:
    """The ClickHouse server when one is configured, else the worker that owns chDB."""
    if settings.clickhouse_url:
        return open_warehouse(settings)
    token = query_token(settings.query_token, settings.home, create=False)
    return RemoteWarehouse(settings.worker_url, settings.clickhouse_database, token)
