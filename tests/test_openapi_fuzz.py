"""Schemathesis against ``/openapi.json``: generated requests to every route find no 5xx and no
answer outside the documented statuses and schemas. The gateway runs in a thread of its own, on
a real port, with an in-memory sink (this is a test of the HTTP surface, not of Kafka)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from hypothesis import HealthCheck, settings
from schemathesis import checks

from services.gateway.app import build_app
from services.gateway.context import Gateway
from services.gateway.openapi import openapi_document
from sluice.registry import Registry, key_record, new_key
from sluice.settings import Settings
from tests.memory_sink import MemorySink


def _import_all(package: Any) -> None:
    """Import every module of ``package`` now. Schemathesis imports many lazily, deep in a
    generated example's call stack, where CPython 3.11 may fail to compile them ("AST constructor
    recursion depth mismatch", seen twice in full runs); at the top of this module they compile
    at a shallow depth."""
    import contextlib
    import importlib
    import pkgutil

    for module in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        with contextlib.suppress(Exception):
            importlib.import_module(module.name)


_import_all(schemathesis)
schema = schemathesis.openapi.from_dict(openapi_document())

CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


@dataclass
class Live:
    url: str
    headers: dict[str, str]


@pytest.fixture(scope="module")
def live() -> Iterator[Live]:
    """A key every route accepts, sent in every family's header."""
    registry = Registry()
    key, record = new_key("acme", "publishable", scopes=["sdk:write"])
    registry.apply(*key_record(record))
    gateway = Gateway(Settings.from_env({}, rate_limit=0), MemorySink(), registry)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(build_app(gateway))
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = runner.addresses[0][1]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield Live(
            f"http://127.0.0.1:{port}",
            {"Authorization": f"Bearer {key}", "X-Api-Key": key, "X-public-key": key},
        )
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.run_until_complete(runner.cleanup())
        loop.close()


@schema.parametrize()
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
def test_generated_requests_get_documented_answers(case: schemathesis.Case[Any], live: Live) -> None:
    case.call_and_validate(base_url=live.url, headers=live.headers, checks=CHECKS)
