"""``sluice warehouse``'s doors: a credential on every request, no browsers, writes only by POST.
(The protocol itself, against the real engine and real clients: tests/test_warehouse_clients.py.)"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from commands.cli import main
from pipeline.warehouse.http import codec
from pipeline.warehouse.http.engine import Outcome
from pipeline.warehouse.http.errors import ClickHouseError
from pipeline.warehouse.http.statement import split
from pipeline.warehouse.serve import Engine, build_app

PASSWORD = "s3cret-for-tests"
Client = TestClient[Any, Any]


class Recorder(Engine):
    """Records statements instead of running them (chDB allows one data path per process)."""

    def __init__(self) -> None:
        self.statements: list[str] = []
        self.version, self.timezone = "26.9", "UTC"
        self.output_formats = frozenset({"TSV", "JSONEachRow"})

    def query(self, sql: str, fmt: str, database: str = "", params: dict[str, str] | None = None) -> Outcome:
        self.statements.append(sql)
        return Outcome(b"1\n")

    def insert(self, sql: str, fmt: str, database: str, data: bytes) -> Outcome:
        self.statements.append(sql)
        return Outcome(b"", written_rows=1)


def admit(sql: str, run: Callable[[str], bytes], *, writes: bool) -> str:
    """The allow-list stands aside here: it needs the real engine (tests/test_query_guard.py)."""
    return sql


@pytest.fixture
async def served() -> AsyncIterator[tuple[Client, Recorder]]:
    engine = Recorder()
    async with TestClient(TestServer(build_app(engine, "sluice", PASSWORD, guard=admit))) as client:
        yield client, engine


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


CREDENTIALS = {
    "basic": (basic("sluice", PASSWORD), ""),
    "clickhouse headers": ({"X-ClickHouse-User": "sluice", "X-ClickHouse-Key": PASSWORD}, ""),
    "query string": ({}, f"&user=sluice&password={PASSWORD}"),
}


@pytest.mark.parametrize("way", CREDENTIALS)
async def test_the_credential_is_taken_the_ways_clickhouse_takes_it(served: tuple[Client, Recorder], way: str) -> None:
    client, engine = served
    headers, query = CREDENTIALS[way]
    response = await client.post(f"/?database=sluice{query}", data=b"SELECT 1", headers=headers)
    assert (response.status, await response.read()) == (200, b"1\n")
    assert engine.statements == ["SELECT 1"]


@pytest.mark.parametrize(
    "headers",
    [
        {},
        basic("sluice", "wrong"),
        basic("default", ""),
        basic("sluice", PASSWORD + "x"),
        {"Authorization": "Basic !!"},
    ],
)
async def test_no_or_a_wrong_credential_runs_nothing(served: tuple[Client, Recorder], headers: dict[str, str]) -> None:
    client, engine = served
    response = await client.post("/", data=b"DROP DATABASE sluice", headers=headers)
    assert response.status == 401
    assert response.headers["X-ClickHouse-Exception-Code"] == "516"
    assert engine.statements == []


async def test_browsers_are_refused_even_with_the_credential(served: tuple[Client, Recorder]) -> None:
    client, engine = served
    for path in ("/", "/ping"):
        response = await client.post(
            path, data=b"SELECT 1", headers={"Origin": "https://evil.example", **basic("sluice", PASSWORD)}
        )
        assert response.status == 403
    assert engine.statements == []


async def test_get_reads_only_and_ping_needs_no_credential(served: tuple[Client, Recorder]) -> None:
    client, engine = served
    write = await client.get("/", params={"query": "DROP TABLE events"}, headers=basic("sluice", PASSWORD))
    assert (write.status, write.headers["X-ClickHouse-Exception-Code"]) == (403, "164")
    assert engine.statements == []
    read = await client.get("/", params={"query": "SELECT 1"}, headers=basic("sluice", PASSWORD))
    assert (read.status, await read.read()) == (200, b"1\n")
    assert engine.statements == ["SELECT 1\nSETTINGS readonly = 2"]
    stranger = await client.get("/", params={"query": "SELECT 1"})
    assert stranger.status == 401
    ping = await client.get("/ping")
    assert (ping.status, await ping.text()) == (200, "Ok.\n")


def test_it_will_not_start_without_a_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SLUICE_WAREHOUSE_PASSWORD", raising=False)
    assert main(["warehouse"]) == 2
    assert "SLUICE_WAREHOUSE_PASSWORD" in capsys.readouterr().err
    with pytest.raises(ValueError, match="needs a password"):
        build_app(Recorder(), "sluice", "", guard=admit)


FORMATS = frozenset({"JSON", "TSV", "Native"})


@pytest.mark.parametrize(
    ("text", "kind", "sql", "data", "output"),
    [
        (b"SELECT 1", "SELECT", "SELECT 1", None, ""),
        (b"SELECT 1;  -- done\n", "SELECT", "SELECT 1", None, ""),
        (b"/* c */ SELECT ';' AS x -- y", "SELECT", "/* c */ SELECT ';' AS x", None, ""),
        (b"SELECT format FROM t FORMAT JSON", "SELECT", "SELECT format FROM t FORMAT JSON", None, "JSON"),
        (b"(SELECT 1)", "SELECT", "(SELECT 1)", None, ""),
        (b"INSERT INTO t FORMAT Native\n\n\x00\xff", "INSERT", "INSERT INTO t", b"\n\x00\xff", ""),
        (b"INSERT INTO t (a, `b c`) FORMAT RowBinary  \r\n \x01", "INSERT", "INSERT INTO t (a, `b c`)", b" \x01", ""),
        (b"insert into t values (1, 'a;b')", "INSERT", "insert into t", b" (1, 'a;b')", ""),
        (b"INSERT INTO t SELECT format FROM s", "INSERT", "INSERT INTO t SELECT format FROM s", None, ""),
        (
            b"INSERT INTO t SELECT * FROM values('x UInt8', 1)",
            "INSERT",
            "INSERT INTO t SELECT * FROM values('x UInt8', 1)",
            None,
            "",
        ),
    ],
)
def test_a_requests_sql_is_split_from_its_data(
    text: bytes, kind: str, sql: str, data: bytes | None, output: str
) -> None:
    statement = split(text, FORMATS)
    assert (statement.kind, statement.sql, statement.data, statement.output_format) == (kind, sql, data, output)


def test_an_inserts_own_settings_are_kept_apart() -> None:
    statement = split(b"INSERT INTO t SETTINGS a = 1, b = 'x,y' FORMAT JSONEachRow\n{}", FORMATS)
    assert (statement.sql, statement.insert_settings, statement.input_format) == (
        "INSERT INTO t",
        [("a", "1"), ("b", "'x,y'")],
        "JSONEachRow",
    )
    assert (statement.head, statement.data) == ("INSERT INTO t SETTINGS a = 1, b = 'x,y' FORMAT JSONEachRow", b"{}")


@pytest.mark.parametrize(
    ("text", "code"),
    [
        (b"", 62),
        (b" ; ", 62),
        (b"SELECT 1; DROP TABLE t", 62),
        (b"SELECT '\xff'", 36),
        (b"SELECT 'open", 62),
        (b"SELECT /* open", 62),
    ],
)
def test_what_is_not_one_utf8_statement_is_refused(text: bytes, code: int) -> None:
    with pytest.raises(ClickHouseError) as error:
        split(text, FORMATS)
    assert error.value.code == code


def test_compressed_blocks_round_trip_and_are_checked() -> None:
    data = bytes(range(256)) * 5000  # over one block
    for method in (codec.LZ4, codec.ZSTD):
        assert codec.unframe(codec.frame(data, method)) == data
    assert codec.frame(b"") == b""
    damaged = bytearray(codec.frame(data))
    damaged[40] ^= 1  # in the first block's data
    with pytest.raises(ClickHouseError) as error:
        codec.unframe(bytes(damaged))
    assert error.value.code == 40
    assert codec.decode_body(codec.ENCODERS["zstd"](codec.ENCODERS["gzip"](b"x")), "gzip, zstd") == b"x"
