"""``sluice warehouse``'s doors: a credential on every request, no browsers, SQL only by POST."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from pipeline.warehouse.serve import Engine, build_app
from sluice.cli import main

PASSWORD = "s3cret-for-tests"
Client = TestClient[Any, Any]


class Recorder(Engine):
    """Records statements instead of running them (chDB allows one data path per process)."""

    def __init__(self) -> None:
        self.statements: list[str] = []

    def run(self, sql: str, fmt: str, database: str, settings: dict[str, str]) -> bytes:
        self.statements.append(sql)
        return b"1\n"


@pytest.fixture
async def served() -> AsyncIterator[tuple[Client, Recorder]]:
    engine = Recorder()
    async with TestClient(TestServer(build_app(engine, "sluice", PASSWORD))) as client:
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


async def test_get_runs_no_sql_and_ping_needs_no_credential(served: tuple[Client, Recorder]) -> None:
    client, engine = served
    write = await client.get("/", params={"query": "DROP TABLE events"}, headers=basic("sluice", PASSWORD))
    read = await client.get("/", params={"query": "SELECT 1"}, headers=basic("sluice", PASSWORD))
    assert (write.status, read.status) == (405, 405)
    assert engine.statements == []
    ping = await client.get("/ping")
    assert (ping.status, await ping.text()) == (200, "Ok.\n")


def test_it_will_not_start_without_a_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("SLUICE_WAREHOUSE_PASSWORD", raising=False)
    assert main(["warehouse"]) == 2
    assert "SLUICE_WAREHOUSE_PASSWORD" in capsys.readouterr().err
    with pytest.raises(ValueError, match="needs a password"):
        build_app(Recorder(), "sluice", "")
