"""The DDL and the warehouse interface, for real: chDB always, a ClickHouse server when one is set."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import msgspec
import pytest

from pipeline.canonical import CanonicalEvent, to_rows
from pipeline.warehouse import (
    ServerWarehouse,
    Warehouse,
    WarehouseError,
    migrate,
    migrations,
    split_statements,
)
from sluice.sql import Parameters
from tests.processes import warehouse_server

pytestmark = pytest.mark.clickhouse


def event(message_id: str, **changes: object) -> CanonicalEvent:
    fields: dict[str, object] = {
        "org_id": "acme", "project_id": "web", "env": "production", "message_id": message_id,
        "family": "solute", "type": "track", "event": "Signed Up", "user_id": "u1",
        "timestamp": datetime(2025, 1, 15, 10, 30, 0, 123000, tzinfo=UTC),
        "received_at": datetime(2025, 1, 15, 10, 30, 5, tzinfo=UTC),
        "properties": msgspec.Raw(b'{"plan":"pro"}'),
    }  # fmt: skip
    fields.update(changes)
    return CanonicalEvent(**fields)  # type: ignore[arg-type]


def rows(warehouse: Warehouse, sql: str, parameters: Parameters | None = None) -> list[dict[str, object]]:
    out = warehouse.execute(sql, "JSONEachRow", parameters=parameters)
    return [msgspec.json.decode(line) for line in out.splitlines() if line]


def exercise(warehouse: Warehouse) -> None:
    """The same checks for every backend."""
    assert migrate(warehouse) == []  # already migrated by the fixture: applying again is a no-op
    versions = rows(warehouse, "SELECT version FROM schema_migrations ORDER BY version")
    assert [r["version"] for r in versions] == [v for v, _, _ in migrations()]

    warehouse.insert_json("events", to_rows([event("m1"), event("m2", user_id="u2")]))
    warehouse.insert_json("events", to_rows([event("m1")]))  # a replay of the same row
    got = rows(warehouse, "SELECT message_id, user_id, timestamp, properties FROM events FINAL ORDER BY message_id")
    assert got == [
        {"message_id": "m1", "user_id": "u1", "timestamp": "2025-01-15 10:30:00.123",
         "properties": '{"plan":"pro"}'},
        {"message_id": "m2", "user_id": "u2", "timestamp": "2025-01-15 10:30:00.123",
         "properties": '{"plan":"pro"}'},
    ]  # fmt: skip
    assert rows(warehouse, "SELECT count() AS n FROM events_final") == [{"n": 2}]

    # A rollup insert retried with the same bytes (its answer was lost) counts once; another
    # batch's block (another fence) counts.
    rollup = {"org_id": "acme", "project_id": "web", "env": "production", "kind": "exposure",
              "experiment_id": "e", "variant_id": "a", "event": "", "minute": "2025-01-15 10:30:00",
              "count": 3, "units": 2, "value_sum": 0.0, "source_topic": "t", "source_partition": 0}  # fmt: skip
    first, second = (msgspec.json.encode([{**rollup, "source_offset": n}]) for n in (10, 11))
    for block in (first, first, second):
        warehouse.insert_json("rollups_1m", block)
    assert rows(warehouse, "SELECT sum(count) AS n FROM rollups_1m") == [{"n": 6}]
    with pytest.raises(WarehouseError):
        warehouse.execute("SELECT no_such_column FROM events")

    # Values are bound by the engine, never quoted into the statement.
    tricky = "o'k \\ '); DROP TABLE events; --"
    bound = rows(
        warehouse,
        "SELECT {s:String} AS s, has({ids:Array(String)}, {s:String}) AS found, {n:UInt32} + 1 AS n",
        {"s": tricky, "ids": ["x", tricky], "n": 41},
    )
    assert bound == [{"s": tricky, "found": 1, "n": 42}]


def test_chdb_backend(warehouse: Warehouse) -> None:
    exercise(warehouse)


def test_split_statements_ignores_comments_and_blank_parts() -> None:
    script = "-- a comment; with a semicolon\nCREATE TABLE a (x UInt8) ENGINE = Memory;\n\n;SELECT 1;\n"
    assert split_statements(script) == ["CREATE TABLE a (x UInt8) ENGINE = Memory", "SELECT 1"]


def test_split_statements_keeps_semicolons_inside_strings_names_and_comments() -> None:
    script = (
        "CREATE TABLE a (x String DEFAULT 'a;b', `c;d` UInt8 COMMENT 'it''s; fine') ENGINE = Memory; "
        "/* a; block */ SELECT \"e;f\" FROM a -- trailing; comment\n;SELECT '\\'; still one'"
    )
    assert split_statements(script) == [
        "CREATE TABLE a (x String DEFAULT 'a;b', `c;d` UInt8 COMMENT 'it''s; fine') ENGINE = Memory",
        'SELECT "e;f" FROM a',
        "SELECT '\\'; still one'",
    ]


@pytest.fixture
def server_url(tmp_path: Path) -> Iterator[str]:
    """SLUICE_CLICKHOUSE_URL; else a ClickHouse container where Docker runs; else ``sluice
    warehouse`` (chDB behind ClickHouse's HTTP interface), which runs the same client code over
    the same protocol against the same engine — not a ClickHouse server's own HTTP layer."""
    url = os.environ.get("SLUICE_CLICKHOUSE_URL")
    if url:
        yield url
        return
    if shutil.which("docker") is None or not _docker_running():
        with warehouse_server(tmp_path) as served:
            yield f"{served}/sluice_test"
        return
    from testcontainers.clickhouse import ClickHouseContainer

    with ClickHouseContainer("clickhouse/clickhouse-server:25.8", port=8123) as container:
        host, port = container.get_container_host_ip(), container.get_exposed_port(8123)
        yield f"http://{container.username}:{container.password}@{host}:{port}/sluice_test"


def _docker_running() -> bool:
    import subprocess

    return subprocess.run(["docker", "info"], capture_output=True, timeout=10).returncode == 0


def test_server_backend(server_url: str) -> None:
    warehouse = ServerWarehouse(server_url)
    try:
        warehouse.execute("DROP TABLE IF EXISTS events")
        warehouse.execute("DROP TABLE IF EXISTS events_final")
        warehouse.execute("DROP TABLE IF EXISTS schema_migrations")
        migrate(warehouse)
        exercise(warehouse)
    finally:
        warehouse.close()


def test_cluster_ddl_is_generated_from_the_same_schema_and_parses(warehouse: Warehouse) -> None:
    from pipeline.warehouse.cluster import for_cluster
    from pipeline.warehouse.migrations import MIGRATIONS_TABLE

    statements = [MIGRATIONS_TABLE] + [s for _, _, group in migrations() for s in group]
    generated = [part for s in statements for part in for_cluster(s, "sluice")]
    tables = [s for s in statements if s.startswith("CREATE TABLE")]
    drops = [s for s in statements if s.startswith("DROP TABLE")]
    adds = [s for s in statements if s.startswith("ALTER TABLE") and " ADD COLUMN " in s]
    # a local and a Distributed per table, created, dropped and given a column
    assert len(generated) == len(statements) + len(tables) + len(drops) + len(adds)
    assert (
        "ALTER TABLE rollups_1m_local ON CLUSTER sluice MODIFY SETTING non_replicated_deduplication_window = 1000"
        in generated
    )
    events_local, events = for_cluster(next(s for s in tables if "TABLE IF NOT EXISTS events" in s), "sluice")
    assert "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/{table}', '{replica}')" in (
        events_local
    )
    assert events.endswith(
        "ENGINE = Distributed(sluice, currentDatabase(), events_local, cityHash64(org_id, message_id))"
    )
    for statement in generated:  # the ClickHouse parser accepts every one
        quoted = statement.replace("\\", "\\\\").replace("'", "\\'")
        assert warehouse.execute(f"SELECT formatQuery('{quoted}')", "TSV")
