"""The gateway in this process, its records kept in a list: how a benchmark turns request bodies
into the raw topic's records without a broker (the gateway's own code decides them)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from services.gateway.app import build_app
from services.gateway.context import Gateway
from services.gateway.sink import Record
from sluice.registry import Registry, key_record, new_key
from sluice.settings import Settings


class Recorder:
    """A record sink that keeps what it is given."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    async def send_all(self, records: list[Record]) -> None:
        self.records.extend(records)


class InProcess:
    def __init__(self, client: TestClient[Any, Any], gateway: Gateway, sink: Recorder, key: str) -> None:
        self.client, self.gateway, self.sink, self.key = client, gateway, sink, key

    async def post(self, path: str, body: bytes, **headers: str) -> int:
        async with self.client.post(path, data=body, headers=headers) as response:
            await response.read()
            return response.status


@asynccontextmanager
async def gateway(org: str = "acme", **settings: Any) -> AsyncIterator[InProcess]:
    """A gateway with one publishable key of ``org`` (scope ``sdk:write``) and no rate limit."""
    registry = Registry()
    key, record = new_key(org, "publishable", scopes=["sdk:write"])
    registry.apply(*key_record(record))
    sink = Recorder()
    gw = Gateway(Settings.from_env({}, rate_limit=0, **settings), sink, registry)
    async with TestClient(TestServer(build_app(gw))) as client:
        yield InProcess(client, gw, sink, key)
