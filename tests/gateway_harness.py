"""The gateway in-process with an in-memory sink: for unit and golden tests of the HTTP surface."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import msgspec
from aiohttp import ClientResponse
from aiohttp.test_utils import TestClient, TestServer

from services.gateway.app import build_app
from services.gateway.config import etag_of
from services.gateway.context import Gateway
from sluice.configs import as_record, bundle_record, experiment_record, load_bundle, load_experiments
from sluice.envelope import DeadLetter, RawBatch
from sluice.registry import KeyKind, OrgSettings, Registry, key_record, new_key, org_record
from sluice.settings import Settings
from tests.memory_sink import MemorySink

NOW = 1_736_937_005.0  # 2025-01-15T10:30:05Z


class Harness:
    def __init__(self, client: TestClient[Any, Any], gateway: Gateway, sink: MemorySink) -> None:
        self.client = client
        self.gateway = gateway
        self.sink = sink
        self.now = NOW

    @property
    def registry(self) -> Registry:
        return self.gateway.registry

    def key(
        self, kind: KeyKind = "publishable", *, org: str = "acme", prefix: str | None = None,
        scopes: tuple[str, ...] = (), origins: tuple[str, ...] = (), expires_in: float | None = None,
    ) -> str:  # fmt: skip
        key, record = new_key(
            org, kind, prefix=prefix, project_id="web", env="production", scopes=scopes,
            allowed_origins=origins, expires_in=expires_in, now=self.now - 60,
        )  # fmt: skip
        self.registry.apply(*key_record(record))
        return key

    def org(self, org: OrgSettings) -> None:
        self.registry.apply(*org_record(org))

    def config(self, org: str, project: str, env: str, bundle: dict[str, Any]) -> str:
        """Load a Traffical bundle as ``sluice config put`` would; returns its ETag."""
        data = load_bundle(msgspec.json.encode(bundle), project, env)
        record = bundle_record(org, project, env, data, self.registry.configs.bundle(org, project, env))
        assert record is not None
        self.registry.apply(*as_record(record))
        return etag_of(record.digest)

    def experiments(self, org: str, document: dict[str, Any]) -> None:
        """Load Xaiku experiments as ``sluice experiments put`` would."""
        current = self.registry.configs.experiments_of(org)
        for experiment, variants in load_experiments(msgspec.json.encode(document)).items():
            record = experiment_record(org, experiment, variants, current.get(experiment))
            if record is not None:
                self.registry.apply(*as_record(record))

    async def post(self, path: str, body: bytes | Any, **headers: str) -> ClientResponse:
        data = body if isinstance(body, bytes) else msgspec.json.encode(body)
        # large bodies go as a stream (aiohttp warns about big in-memory payloads)
        payload = io.BytesIO(data) if len(data) > 1 << 20 else data
        return await self.client.post(path, data=payload, headers=headers)

    def raw(self) -> list[RawBatch]:
        return [msgspec.json.decode(v, type=RawBatch) for t, _, v in self.sink.records if t.endswith(".raw")]

    def dead(self) -> list[DeadLetter]:
        return [msgspec.json.decode(v, type=DeadLetter) for t, _, v in self.sink.records if t.endswith(".dlq")]


@asynccontextmanager
async def harness(**settings: Any) -> AsyncIterator[Harness]:
    sink = MemorySink()
    box: list[Harness] = []
    gateway = Gateway(Settings.from_env({}, **settings), sink, Registry(), clock=lambda: box[0].now)
    async with TestClient(TestServer(build_app(gateway))) as client:
        box.append(Harness(client, gateway, sink))
        yield box[0]


def events_of(batch: RawBatch) -> list[Any]:
    return [msgspec.json.decode(e) for e in batch.events]
