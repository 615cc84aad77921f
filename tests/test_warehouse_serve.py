"""``sluice warehouse``'s doors: a credential on every request, no browsers, writes only by POST.
(The protocol itself, against the real engine and real clients: tests/test_warehouse_clients.py.)"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.warehouse.http.engine import Outcome
from pipeline.warehouse.serve import Engine, build_app
from sluice.cli import main

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
