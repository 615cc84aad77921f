"""The analysts' SQL door on the embedded warehouse (``read_only``) and the statement allow-list
(``guard``), against the real engine: what chDB would do under ``readonly = 1`` alone — read the
worker's environment with the ``file()`` function, describe files and fetch URLs, write files
with ``INTO OUTFILE`` — is refused, and so is every variant of the class; what analysts do runs."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import pytest

from pipeline.warehouse import ChdbWarehouse, WarehouseError
from pipeline.warehouse.guard import Guard, Refused, parse_tree
from pipeline.warehouse.readonly import read_only

pytestmark = pytest.mark.clickhouse

LIMIT = 5.0


def run(warehouse: ChdbWarehouse, sql: str) -> str:
    return read_only(warehouse, sql, "TSV", LIMIT).decode()


def refusal(warehouse: ChdbWarehouse, sql: str, *, writes: bool = False) -> str | None:
    try:
        if writes:
            Guard(lambda text: warehouse.execute(text, "TSVRaw")).check(sql, writes=True)
        else:
            run(warehouse, sql)
    except Refused as exc:
        return str(exc)
    return None


def reaching_outside(tmp: Path) -> list[str]:
    """Each reaches a file, the network, another server or the process."""
    out = tmp / "out.tsv"
    return [
        # the review's three
        "SELECT file('/proc/self/environ')",
        "DESCRIBE file('/etc/passwd', 'TSVWithNames')",
        "DESCRIBE url('http://127.0.0.1:1/', 'TSVWithNames')",
        f"SELECT 'import os' INTO OUTFILE '{out}' FORMAT TSVRaw",
        f"SELECT 'import os' INTO OUTFILE '{out}' APPEND FORMAT TSVRaw",
        # the same class, other spellings and places
        "SELECT FILE('/etc/passwd')",
        "SELECT length(file('/etc/hostname')) AS n",
        "SELECT * FROM (SELECT file('/etc/passwd'))",
        "SELECT 1 WHERE file('/etc/passwd') != ''",
        "WITH file('/etc/passwd') AS f SELECT f",
        "SELECT arrayMap(x -> file(x), ['/etc/passwd'])",
        "SELECT 1 UNION ALL SELECT file('/etc/passwd')",
        "SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "SELECT * FROM FILE('/etc/passwd', 'LineAsString')",
        "DESC file('/etc/passwd')",
        "DESCRIBE TABLE url('http://127.0.0.1:1/', 'CSV')",
        "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
        "SELECT * FROM remote('127.0.0.1:9000', system.one)",
        "SELECT * FROM s3('http://127.0.0.1:1/b/k', 'CSV')",
        "SELECT * FROM executable('id', 'TSV', 'x String')",
        "SELECT * FROM Python(os)",
        "SELECT * FROM input('a String')",
        "SELECT * FROM mysql('127.0.0.1:3306', 'd', 't', 'u', 'p')",
        "SELECT * FROM numbers(1) AS n JOIN file('/etc/passwd', 'LineAsString') AS f ON 1",
        "SELECT * FROM numbers(1) WHERE number IN (SELECT 1 FROM url('http://127.0.0.1:1/', 'CSV'))",
        "EXPLAIN SELECT * FROM file('/etc/passwd', 'LineAsString')",
        f"SHOW TABLES INTO OUTFILE '{out}'",
        f"EXISTS TABLE events INTO OUTFILE '{out}'",
        f"SELECT 1 INTO OUTFILE '{out}' TRUNCATE COMPRESSION 'gzip'",
        "SELECT catboostEvaluate('/etc/passwd', 1)",
        "SELECT hasColumnInTable('127.0.0.1', 'system', 'one', 'dummy')",
        "SELECT sleepEachRow(3) FROM numbers(10)",
        "SELECT filesystemAvailable()",
    ]


def attacks(tmp: Path) -> list[str]:
    """What an analyst may not do: reach outside, change anything, or lift a limit."""
    return [
        *reaching_outside(tmp),
        "INSERT INTO FUNCTION file('/tmp/x.tsv', 'TSV', 'a String') SELECT 'x'",
        "INSERT INTO events (org_id) SELECT 'x'",
        "CREATE TABLE owned (a Int8) ENGINE = Memory",
        "CREATE TABLE owned (a Int8) ENGINE = Memory; SELECT 1",
        "SELECT 1; DROP TABLE events",
        "DROP TABLE events",
        "SYSTEM SHUTDOWN",
        "KILL QUERY WHERE 1",
        "USE system",
        "SET readonly = 0",
        "SET max_execution_time = 0",
        # limits the caller may not lift
        "SELECT 1 SETTINGS readonly = 0",
        "SELECT 1 SETTINGS max_execution_time = 1000",
        "SELECT * FROM (SELECT 1 SETTINGS max_execution_time = 1000)",
        "SHOW TABLES SETTINGS max_execution_time = 1000",
        "SELECT 1 FORMAT Protobuf",
    ]


def test_every_variant_of_the_class_is_refused_and_does_nothing(warehouse: ChdbWarehouse, tmp_path: Path) -> None:
    for sql in attacks(tmp_path):
        assert refusal(warehouse, sql), sql
    assert not (tmp_path / "out.tsv").exists()


def test_what_analysts_do_runs(warehouse: ChdbWarehouse) -> None:
    warehouse.execute(
        "CREATE TABLE t (a UInt32, s String, m Map(String, Float64)) ENGINE = ReplacingMergeTree ORDER BY a"
    )
    warehouse.execute("INSERT INTO t VALUES (1, 'x', {'k': 1.5}), (2, 'y', {})")
    assert run(warehouse, "SELECT 1") == "1\n"
    assert run(warehouse, "SELECT count() FROM t FINAL -- a comment") == "2\n"
    assert run(warehouse, "SELECT a, upper(s), m['k'] FROM t WHERE s LIKE 'x%' ORDER BY a") == "1\tX\t1.5\n"
    queries = [
        "WITH x AS (SELECT a FROM t) SELECT sum(a) FROM x",
        "SELECT countIf(a > 1), uniqExact(s), quantile(0.5)(a), groupArray(s) FROM t",
        "SELECT a, sum(a) OVER (ORDER BY a) FROM t",
        "SELECT arrayMap(x -> x * 2, [1, 2]), tuple(1, 'a').1, [1, 2][1], CAST(a AS String) FROM t",
        "SELECT toStartOfHour(now()), dateDiff('day', today(), today() + 1), date_add(DAY, 1, today())",
        "SELECT mapContains(m, 'k'), JSONExtractString('{\"a\":\"b\"}', 'a'), lower('A'), LCASE('A') FROM t",
        "SELECT * FROM numbers(3) AS n LEFT JOIN t ON t.a = n.number",
        "SELECT number FROM numbers(10) WHERE number IN (SELECT a FROM t) ORDER BY number",
        "SELECT CASE WHEN a = 1 THEN 'one' ELSE 'other' END, if(a > 1, 1, 0), a BETWEEN 1 AND 2 FROM t",
        "SELECT 1 UNION ALL SELECT 2",
        "SELECT * FROM values('a UInt8', 1, 2)",
        "SELECT name FROM system.tables WHERE database = currentDatabase()",
        "SELECT 1 FORMAT JSONEachRow",
        "SHOW TABLES",
        "SHOW CREATE TABLE t",
        "DESCRIBE TABLE t",
        "DESCRIBE (SELECT 1 AS x)",
        "EXISTS TABLE t",
        "EXPLAIN SELECT count() FROM t",
        "SELECT 'file(''/etc/passwd'')', 'INTO OUTFILE', 'SETTINGS x = 1'",
    ]
    for sql in queries:
        assert refusal(warehouse, sql) is None, sql


def test_a_client_of_sluice_warehouse_may_write_tables_but_not_reach_outside(
    warehouse: ChdbWarehouse, tmp_path: Path
) -> None:
    allowed = [
        "CREATE TABLE w (a UInt32, b String DEFAULT 'x', d Date) ENGINE = MergeTree PARTITION BY toYYYYMM(d) "
        "ORDER BY (a, d) TTL d + INTERVAL 1 YEAR",
        "INSERT INTO w (a) VALUES (1)",
        "INSERT INTO w FORMAT JSONEachRow",
        "INSERT INTO w SELECT number, 'y' FROM numbers(3)",
        "ALTER TABLE w ADD COLUMN c UInt8 DEFAULT 0",
        "OPTIMIZE TABLE w FINAL",
        "CREATE DATABASE IF NOT EXISTS other",
        "CREATE VIEW v AS SELECT a FROM w",
        "TRUNCATE TABLE w",
        "DROP TABLE IF EXISTS w",
        "SET max_threads = 1",
        "SELECT 1 SETTINGS max_threads = 1",
        "USE other",
    ]
    for sql in allowed:
        assert refusal(warehouse, sql, writes=True) is None, sql
    refused = [
        *reaching_outside(tmp_path),
        "INSERT INTO FUNCTION file('/tmp/x.tsv', 'TSV', 'a String') SELECT 'x'",
        "INSERT INTO w FROM INFILE '/etc/passwd' FORMAT LineAsString",
        "CREATE TABLE f (a String) ENGINE = File(LineAsString, '/etc/passwd')",
        "CREATE TABLE f (a String) ENGINE = File(LineAsString, '/etc/passwd') PARTITION BY toYYYYMM(now())",
        "CREATE TABLE f (a String) ENGINE = URL('http://127.0.0.1:1/', CSV)",
        "CREATE TABLE f AS file('/etc/passwd', 'LineAsString')",
        "CREATE TABLE f ENGINE = Memory AS SELECT * FROM url('http://127.0.0.1:1/', 'CSV', 'a String')",
        "CREATE TABLE f (a String DEFAULT file('/etc/passwd')) ENGINE = Memory",
        "CREATE VIEW f AS SELECT * FROM file('/etc/passwd', 'LineAsString')",
        "CREATE DATABASE fs ENGINE = Filesystem('/')",
        "CREATE TABLE d (a UInt8) ENGINE = MergeTree ORDER BY a SETTINGS disk = disk(type = local, path = '/tmp/d/')",
        "ALTER TABLE w MODIFY SETTING storage_policy = 'x'",
        "CREATE DICTIONARY dd (a String) PRIMARY KEY a SOURCE(FILE(path '/etc/passwd' format 'TSV')) "
        "LAYOUT(FLAT()) LIFETIME(0)",
        "ATTACH TABLE a FROM '/tmp/a' (x UInt8) ENGINE = MergeTree ORDER BY x",
        "BACKUP TABLE w TO File('/tmp/b')",
        "SYSTEM FLUSH LOGS",
        "GRANT ALL ON *.* TO default",
        "CREATE FUNCTION f AS x -> file(x)",
        "INSERT INTO w SETTINGS format_schema = '/etc/passwd:M' FORMAT Protobuf",
    ]
    for sql in refused:
        assert refusal(warehouse, sql, writes=True), sql


def test_the_tree_is_read_as_the_engine_prints_it() -> None:
    nodes = parse_tree(
        "SelectWithUnionQuery (children 2)\n ExpressionList (children 1)\n  SelectQuery (children 1)\n"
        "   ExpressionList (children 1)\n    Function we ird (children 1)\n Literal '/tmp/x'\n"
    )
    assert [(n.depth, n.kind, n.name, n.parent, n.first) for n in nodes] == [
        (0, "SelectWithUnionQuery", "", "", True),
        (1, "ExpressionList", "", "SelectWithUnionQuery", True),
        (2, "SelectQuery", "", "ExpressionList", True),
        (3, "ExpressionList", "", "SelectQuery", True),
        (4, "Function", "we", "ExpressionList", True),  # a name with a space is cut: refused, not guessed
        (1, "Literal", "'/tmp/x'", "SelectWithUnionQuery", False),
    ]


def test_a_query_has_a_time_limit_it_cannot_lift(warehouse: ChdbWarehouse) -> None:
    slow = "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) % 7 = 1"
    started = time.monotonic()
    with pytest.raises(WarehouseError, match=r"TIMEOUT_EXCEEDED|Timeout exceeded"):
        read_only(warehouse, slow, "TSV", 0.5)
    assert time.monotonic() - started < 10


def test_the_workers_statements_go_before_queued_analyst_queries(warehouse: ChdbWarehouse) -> None:
    """Analysts' statements wait while the worker's wait: many queries in a row never starve
    an insert (it waits behind at most the one query that runs)."""
    warehouse.execute("CREATE TABLE g (a UInt64) ENGINE = MergeTree ORDER BY a")
    slow = "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) % 7 = 1"
    order: list[str] = []

    def query() -> None:
        with contextlib.suppress(WarehouseError):
            read_only(warehouse, slow, "TSV", 1.0)
        order.append("q")

    def insert_row() -> None:
        warehouse.insert_json("g", b'[{"a": 1}]')
        order.append("insert")

    first = threading.Thread(target=query)
    first.start()
    deadline = time.monotonic() + 10
    while not _busy(warehouse) and time.monotonic() < deadline:
        time.sleep(0.01)
    analysts = [threading.Thread(target=query) for _ in range(3)]
    for thread in analysts:
        thread.start()
    insert = threading.Thread(target=insert_row)
    insert.start()
    for thread in [first, *analysts, insert]:
        thread.join(30)
    assert order.index("insert") <= 1, order  # after at most the query that was running
    assert warehouse.execute("SELECT count() FROM g", "TSV") == b"1\n"


def _busy(warehouse: ChdbWarehouse) -> bool:
    return warehouse._gate._busy


def test_nothing_a_request_sets_outlives_it(warehouse: ChdbWarehouse) -> None:
    """The limits ride on the statement (its SETTINGS clause), never on the engine's session."""
    assert run(warehouse, "SELECT getSetting('readonly'), getSetting('max_execution_time')") == f"1\t{LIMIT:g}\n"
    assert warehouse.execute("SELECT getSetting('readonly'), getSetting('max_execution_time')", "TSV") == b"0\t0\n"
    warehouse.execute("CREATE TABLE after (a UInt8) ENGINE = Memory")  # the worker still writes


def test_values_travel_as_bound_parameters_never_quoted_into_the_statement(warehouse: ChdbWarehouse) -> None:
    tricky = "o'k \\ '); DROP TABLE t; --"
    out = read_only(
        warehouse,
        "SELECT {s:String} = {s:String}, length({s:String}), has({ids:Array(String)}, {s:String})",
        "TSV",
        LIMIT,
        {"s": tricky, "ids": ["a", tricky]},
    )
    assert out == f"1\t{len(tricky)}\t1\n".encode()
