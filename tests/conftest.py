"""Shared fixtures: one real Kafka broker per session, one chDB per session, unique names per test.

Tests that need Kafka or ClickHouse carry the ``kafka`` / ``clickhouse`` marker; the fixtures
that reach them refuse unmarked tests, so a plain unit test cannot touch a real service by
accident.
"""

from __future__ import annotations

import gc
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from commands.localkafka import LocalKafka, ensure_jars, free_port
from pipeline.warehouse import ChdbWarehouse, migrate
from sluice.settings import Settings
from sluice.topics import delete_topics, ensure_topics
from tests.gateway_harness import Harness, harness

SERIAL_MODULES = frozenset({
    "test_configs", "test_crash", "test_faults", "test_faults_workers", "test_gateway_budget", "test_gateway_kafka",
    "test_group", "test_intake", "test_kafka_auth", "test_keyed", "test_poison", "test_query_guard", "test_registry",
    "test_run", "test_sealing", "test_statestore", "test_worker_fuzz",
})  # fmt: skip
"""Modules whose tests kill, stop, pause or cut off brokers and workers, or bound a time: under
``make test`` (pytest-xdist, ``-n 2 --dist loadgroup``) they run one after another on one xdist
worker, never beside each other, as they did before the suite ran on two workers."""


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Group the tests for ``--dist loadgroup``: the modules in ``SERIAL_MODULES`` share one group
    (one xdist worker, in order); every other module is a group of its own, so that a module's
    fixtures (a ``sluice warehouse`` server, Node clients, a gateway) start once, on one worker.
    Without xdist the marker does nothing."""
    for item in items:
        module = item.nodeid.split("::", 1)[0].rsplit("/", 1)[-1].removesuffix(".py")
        item.add_marker(pytest.mark.xdist_group("serial" if module in SERIAL_MODULES else module))


def _require_marker(request: pytest.FixtureRequest, marker: str) -> None:
    if request.node.get_closest_marker(marker) is None:
        pytest.fail(f"{request.node.nodeid} uses a real service; mark it @pytest.mark.{marker}")


@pytest.fixture(autouse=True)
def _collect_garbage() -> Iterator[None]:
    """Collect garbage as each test ends, so that a socket or transport a test left open is
    reported (an unraisable ResourceWarning, an error here) in the test that left it, not in
    whichever later test the collector happens to run in."""
    yield
    gc.collect()


@pytest.fixture(scope="session")
def _kafka_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """SLUICE_KAFKA_BOOTSTRAP when set, else a fresh broker on free ports for this session."""
    external = os.environ.get("SLUICE_KAFKA_BOOTSTRAP")
    if external:
        yield external
        return
    broker = LocalKafka(tmp_path_factory.mktemp("kafka"), ensure_jars(), port=free_port())
    broker.start(heap="384m")
    try:
        broker.wait_ready()
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture
def kafka_bootstrap(request: pytest.FixtureRequest, _kafka_session: str) -> str:
    _require_marker(request, "kafka")
    return _kafka_session


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings with names of this test's own: topics, consumer group, home, ports."""
    tag = uuid.uuid4().hex[:10]
    return Settings.from_env(
        {},
        home=str(tmp_path / "home"),
        topic_prefix=f"test.{tag}.",
        worker_group=f"test-worker-{tag}",
        clickhouse_database=f"test_{tag}",
        raw_partitions=2,
        gateway_port=free_port(),
        worker_port=(worker_port := free_port()),
        worker_url=f"http://127.0.0.1:{worker_port}",
        sink_batch_seconds=0.2,
    )


@pytest.fixture
async def kafka_settings(kafka_bootstrap: str, settings: Settings) -> AsyncIterator[Settings]:
    """``settings`` on the real broker, with this test's topics created and removed after."""
    real = Settings.from_env(settings.to_env(), kafka_bootstrap=kafka_bootstrap)
    await ensure_topics(real)
    yield real
    await delete_topics(real)


@pytest.fixture(scope="session")
def _chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("chdb")


@pytest.fixture
def warehouse(request: pytest.FixtureRequest, _chdb_path: Path) -> Iterator[ChdbWarehouse]:
    """A migrated chDB database of this test's own (chDB allows one path per process)."""
    _require_marker(request, "clickhouse")
    wh = ChdbWarehouse(_chdb_path, f"test_{uuid.uuid4().hex[:10]}")
    migrate(wh)
    yield wh
    wh.execute(f"DROP DATABASE IF EXISTS {wh.database}")


@pytest.fixture
async def gw() -> AsyncIterator[Harness]:
    """The gateway in-process, in-memory sink, default settings; ``gw.key()`` makes keys."""
    async with harness() as h:
        yield h
