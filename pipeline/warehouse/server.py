"""A ClickHouse server, through clickhouse-connect (``SLUICE_CLICKHOUSE_URL``)."""

from __future__ import annotations

from urllib.parse import urlsplit

from pipeline.warehouse.errors import WarehouseError, WarehouseUnavailable, classify
from sluice.sql import Parameters


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
