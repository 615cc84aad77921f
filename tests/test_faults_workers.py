"""Faults between the worker and its neighbours, with several processes on one shared warehouse
(``sluice warehouse``: chDB behind ClickHouse's HTTP interface, reached by the worker's server
backend): three workers in one group with one SIGKILLed mid-stream, and the warehouse down for
30 s under load. Afterwards the warehouse holds exactly the truth.

Sizes are modest in ``make test``; ``make soak`` sets SLUICE_SOAK=1 for longer, larger runs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from commands.devrun import terminate
from commands.localkafka import LocalKafka, ensure_jars, free_port
from sluice.settings import Settings
from sluice.topics import delete_topics, ensure_topics
from tests.builders import encode
from tests.load import ab_test, settles_on_truth
from tests.netfault import Partition
from tests.processes import (
    gateway_url,
    query_rows,
    running,
    sluice,
    spawn,
    wait_http,
    warehouse_server,
    warehouse_settings,
)  # fmt: skip
from tests.waiting import wait_until

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

SOAK = os.environ.get("SLUICE_SOAK") == "1"
UNITS = 5000 if SOAK else 1000
"""Units per variant: each makes a decision, an exposure and maybe a purchase."""
LOAD_SECONDS = 90.0 if SOAK else 24.0
WAREHOUSE_DOWN_SECONDS = 30.0


@pytest.fixture
async def shared(settings: Settings, kafka_bootstrap: str, tmp_path: Path) -> AsyncIterator[Settings]:
    """Settings whose workers share one warehouse server, on six partitions (two per worker)."""
    with warehouse_server(tmp_path / "warehouse") as url:
        real = Settings.from_env(
            settings.to_env(), kafka_bootstrap=kafka_bootstrap, raw_partitions=6,
            clickhouse_url=f"{url}/{settings.clickhouse_database}", sink_batch_rows=500, sink_batch_seconds=0.3,
        )  # fmt: skip
        await ensure_topics(real)
        try:
            yield real
        finally:
            await delete_topics(real)


def worker_settings(settings: Settings, tmp_path: Path, n: int) -> Settings:
    """Worker ``n``: its own local state and web port; the group, topics and warehouse shared."""
    port = free_port()
    return Settings.from_env(
        settings.to_env(), home=str(tmp_path / f"worker{n}"), worker_port=port, worker_url=f"http://127.0.0.1:{port}"
    )


async def post_paced(settings: Settings, key: str, batches: list[bytes], seconds: float,
                     at: dict[float, Callable[[], None]]) -> None:  # fmt: skip
    """Post every batch over about ``seconds``, each acknowledged (200); run ``at[t]`` once ``t``
    seconds have passed."""
    pending = sorted(at)
    started = time.monotonic()
    async with aiohttp.ClientSession() as http:
        for body in batches:
            async with http.post(
                f"{gateway_url(settings)}/v1/events", data=body, headers={"Authorization": f"Bearer {key}"}
            ) as response:
                assert response.status == 200, await response.text()
            while pending and time.monotonic() - started >= pending[0]:
                await asyncio.to_thread(at[pending.pop(0)])
            await asyncio.sleep(seconds / len(batches))
    while pending:  # the load was quicker than planned: the remaining faults still happen
        await asyncio.to_thread(at[pending.pop(0)])


def metric_lines(worker: Settings) -> list[str]:
    with urllib.request.urlopen(f"{worker.worker_url}/metrics", timeout=5) as response:
        text: str = response.read().decode()
    return text.splitlines()


def events_handled(worker: Settings) -> float:
    """Events this worker's stages took in or wrote out, from its /metrics."""
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in metric_lines(worker)
        if line.startswith("sluice_worker_events_total{") and ('outcome="in"' in line or 'outcome="out"' in line)
    )  # fmt: skip


def batches_fenced(worker: Settings) -> float:
    """Batches this worker dropped because another worker had fenced it (``sluice_worker_fenced_total``)."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in metric_lines(worker)
               if line.startswith("sluice_worker_fenced_total "))  # fmt: skip


async def test_three_workers_one_killed_mid_stream_counts_exactly(shared: Settings, tmp_path: Path) -> None:
    batches, truth = ab_test(
        "exp_rebalance", {"control": UNITS, "treatment": UNITS}, {"control": 0.2, "treatment": 0.3},
        duplicate_rate=0.05, batch_size=100, seed=21,
    )  # fmt: skip
    key = sluice(shared, "keys", "create", "--org", "acme", "--kind", "secret", "--scope", "sdk:write").stdout.strip()
    members = [worker_settings(shared, tmp_path, n) for n in range(4)]
    logs = [tmp_path / f"worker{n}.log" for n in range(4)]
    workers: list[subprocess.Popen[bytes]] = []
    try:
        for member, log in zip(members[:3], logs, strict=False):
            workers.append(spawn(member, "worker", log))
        for member, worker in zip(members, workers, strict=False):
            wait_http(f"{member.worker_url}/healthz", 60, worker)

        def kill_first() -> None:
            os.killpg(workers[0].pid, signal.SIGKILL)
            workers[0].wait()

        def add_fourth() -> None:  # the killed one's replacement: another rebalance
            workers.append(spawn(members[3], "worker", logs[3]))

        with running(shared, "gateway", f"{gateway_url(shared)}/readyz", tmp_path / "gw.log"):
            body = [encode(b) for b in batches]
            await post_paced(shared, key, body, LOAD_SECONDS, {LOAD_SECONDS * 0.3: kill_first,
                                                                LOAD_SECONDS * 0.7: add_fourth})  # fmt: skip
        try:
            await settles_on_truth(shared, truth, within=180)
        except AssertionError as exc:
            detail = query_rows(
                shared,
                "SELECT source_partition AS p, count() AS rows, sum(count) AS n, sum(units) AS u "
                "FROM rollups_1m FINAL WHERE kind = 'exposure' GROUP BY p ORDER BY p",
            )
            raise AssertionError(f"{exc}; exposures per partition: {detail}") from None
        survivors = [events_handled(member) for member in members[1:3]]
        assert all(n > 0 for n in survivors), f"a surviving worker took no partition: {survivors}"

        card = sluice(shared, "experiments", "results", "--org", "acme", "--format", "json", "exp_rebalance")
        assert card.returncode == 0, card.stderr
    except BaseException:
        for log in logs:
            if log.exists():
                sys.stderr.write(f"--- {log.name}\n" + log.read_text(errors="replace")[-3000:])
        raise
    finally:
        for worker in workers:
            terminate(worker)


async def test_warehouse_down_for_30s_worker_waits_and_catches_up(
    settings: Settings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    warehouse_home = tmp_path / "warehouse"
    port = free_port()
    served, url = warehouse_settings(warehouse_home, port)
    real = Settings.from_env(
        settings.to_env(), kafka_bootstrap=kafka_bootstrap, sink_batch_rows=500, sink_batch_seconds=0.3,
        clickhouse_url=f"{url}/{settings.clickhouse_database}",
    )  # fmt: skip
    await ensure_topics(real)
    batches, truth = ab_test(
        "exp_outage", {"control": UNITS, "treatment": UNITS}, {"control": 0.2, "treatment": 0.3},
        duplicate_rate=0.05, batch_size=100, seed=31,
    )  # fmt: skip
    warehouse = spawn(served, "warehouse", tmp_path / "warehouse.log")
    worker: subprocess.Popen[bytes] | None = None
    outage: dict[str, float] = {}
    try:
        wait_http(f"http://127.0.0.1:{port}/ping", 60, warehouse)
        key = sluice(real, "keys", "create", "--org", "acme", "--kind", "secret", "--scope", "sdk:write").stdout.strip()
        worker = spawn(real, "worker", tmp_path / "worker.log")
        wait_http(f"{real.worker_url}/healthz", 60, worker)

        def stop_warehouse() -> None:
            nonlocal warehouse
            os.killpg(warehouse.pid, signal.SIGKILL)  # a crash, mid-insert perhaps
            warehouse.wait()
            outage["from"] = time.monotonic()

        def restart_warehouse() -> None:
            nonlocal warehouse
            time.sleep(max(0.0, outage["from"] + WAREHOUSE_DOWN_SECONDS - time.monotonic()))  # a late kill
            outage["to"] = time.monotonic()
            warehouse = spawn(served, "warehouse", tmp_path / "warehouse.log")
            wait_http(f"http://127.0.0.1:{port}/ping", 60, warehouse)

        with running(real, "gateway", f"{gateway_url(real)}/readyz", tmp_path / "gw.log"):
            body = [encode(b) for b in batches]
            # The load goes on through the outage: the gateway only needs Kafka.
            await post_paced(real, key, body, LOAD_SECONDS + WAREHOUSE_DOWN_SECONDS,
                             {3.0: stop_warehouse, 3.0 + WAREHOUSE_DOWN_SECONDS: restart_warehouse})  # fmt: skip
        assert outage["to"] - outage["from"] >= WAREHOUSE_DOWN_SECONDS
        assert worker.poll() is None, "the worker died while the warehouse was down"
        await settles_on_truth(real, truth, within=180)
        assert "retrying" in (tmp_path / "worker.log").read_text(errors="replace")  # it did wait
    except BaseException:
        for name in ("worker.log", "warehouse.log"):
            if (tmp_path / name).exists():
                sys.stderr.write(f"--- {name}\n" + (tmp_path / name).read_text(errors="replace")[-4000:])
        raise
    finally:
        if worker is not None:
            terminate(worker)
        terminate(warehouse)
        await delete_topics(real)


async def test_a_lost_warehouse_is_rebuilt_exactly_by_a_new_worker_group(shared: Settings, tmp_path: Path) -> None:
    """docs/operations.md, "Backup and recovery": a new group reads everything again, with state of its own."""
    batches, truth = ab_test(
        "exp_rebuild", {"control": 300, "treatment": 300}, {"control": 0.2, "treatment": 0.3},
        duplicate_rate=0.05, batch_size=100, seed=41,
    )  # fmt: skip
    key = sluice(shared, "keys", "create", "--org", "acme", "--kind", "secret", "--scope", "sdk:write").stdout.strip()
    first = worker_settings(shared, tmp_path, 0)
    worker = spawn(first, "worker", tmp_path / "worker0.log")
    try:
        wait_http(f"{first.worker_url}/healthz", 60, worker)
        with running(shared, "gateway", f"{gateway_url(shared)}/readyz", tmp_path / "gw.log"):
            await post_paced(shared, key, [encode(b) for b in batches], 3.0, {})
        await settles_on_truth(shared, truth)
    finally:
        terminate(worker)

    # The warehouse is lost: an empty database; the workers start again under a new group.
    server = shared.clickhouse_url.rsplit("/", 1)[0]
    rebuilt = Settings.from_env(
        shared.to_env(), clickhouse_url=f"{server}/{shared.clickhouse_database}_rebuilt",
        worker_group=f"{shared.worker_group}-rebuild",
    )  # fmt: skip
    await ensure_topics(rebuilt)  # the new group's state topic
    second = worker_settings(rebuilt, tmp_path, 1)
    worker = spawn(second, "worker", tmp_path / "worker1.log")
    try:
        wait_http(f"{second.worker_url}/healthz", 60, worker)
        await settles_on_truth(rebuilt, truth)
    finally:
        terminate(worker)


PAUSE_SECONDS = 25.0
"""Longer than the workers' session (10 s): the group moves the paused worker's partitions."""


async def two_workers_through(
    settings: Settings, members: list[Settings], tmp_path: Path, experiment: str, seed: int,
    fault: Callable[[list[subprocess.Popen[bytes]]], tuple[Callable[[], None], Callable[[], None]]],
) -> None:  # fmt: skip
    """Two workers under an A/B load with 10 % duplicates; ``fault(workers)`` gives the start and
    the end of a fault that hits the first worker while it holds a batch, ``PAUSE_SECONDS`` apart.

    Holding a batch is made sure of, not hoped for: the first worker reaches the warehouse
    through a proxy, cut 5 s into the load until the worker's rows wait there (a batch processed,
    not committed); the fault starts then, and the warehouse is back. Without that, a stall that
    fell between two batches — most of them, at this load — would prove nothing. The totals must
    be exact, both workers alive, and the first worker fenced: it came back to a batch whose
    partitions another worker had taken over, and dropped it."""
    batches, truth = ab_test(
        experiment, {"control": 1500, "treatment": 1500}, {"control": 0.2, "treatment": 0.3},
        duplicate_rate=0.10, batch_size=100, seed=seed,
    )  # fmt: skip
    key = sluice(settings, "keys", "create", "--org", "acme", "--kind", "secret", "--scope", "sdk:write").stdout.strip()
    warehouse = urllib.parse.urlsplit(members[0].clickhouse_url)
    hold = Partition(free_port(), warehouse.port or 80)
    hold.start()
    held_url = warehouse._replace(netloc=warehouse.netloc.replace(f":{warehouse.port}", f":{hold.listen_port}"))
    members = [Settings.from_env(members[0].to_env(), clickhouse_url=held_url.geturl()), *members[1:]]
    logs = [tmp_path / f"worker{n}.log" for n in range(len(members))]
    workers = [spawn(member, "worker", log) for member, log in zip(members, logs, strict=True)]

    async def stall(start: Callable[[], None], end: Callable[[], None]) -> None:
        await asyncio.sleep(5.0)  # into the load
        hold.partition()
        await wait_until(hold.holding, 60, "the first worker writing a batch's rows")
        await asyncio.to_thread(start)
        hold.heal()
        await asyncio.sleep(PAUSE_SECONDS)
        await asyncio.to_thread(end)

    try:
        for member, worker in zip(members, workers, strict=True):
            await asyncio.to_thread(wait_http, f"{member.worker_url}/healthz", 60, worker)
        with running(settings, "gateway", f"{gateway_url(settings)}/readyz", tmp_path / "gw.log"):
            fault_task = asyncio.create_task(stall(*fault(workers)))
            body = [encode(b) for b in batches]
            await post_paced(settings, key, body, PAUSE_SECONDS + 15.0, {})
            await fault_task
        await settles_on_truth(settings, truth, within=180)
        assert all(worker.poll() is None for worker in workers), "a worker died"
        # the assertion exact totals alone lack: the fault hit a batch, and fencing dropped it
        await wait_until(lambda: batches_fenced(members[0]), 60, "the stalled worker fenced at its commit")
    except BaseException:
        for log in logs:
            sys.stderr.write(f"--- {log.name}\n" + log.read_text(errors="replace")[-4000:])
        raise
    finally:
        for worker in workers:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(worker.pid, signal.SIGCONT)
            terminate(worker)
        hold.stop()


async def test_a_worker_paused_past_its_session_counts_nothing_twice(shared: Settings, tmp_path: Path) -> None:
    """One of two workers is SIGSTOPped for 25 s mid-stream, then SIGCONTed while load runs: it
    comes back holding what it held, but it was fenced meanwhile, so the totals stay exact."""

    def sigstop(workers: list[subprocess.Popen[bytes]]) -> tuple[Callable[[], None], Callable[[], None]]:
        return (lambda: os.killpg(workers[0].pid, signal.SIGSTOP)), (lambda: os.killpg(workers[0].pid, signal.SIGCONT))

    members = [worker_settings(shared, tmp_path, n) for n in range(2)]
    await two_workers_through(shared, members, tmp_path, "exp_pause", 51, sigstop)


async def test_a_worker_cut_off_from_kafka_past_its_session_counts_nothing_twice(
    settings: Settings, kafka_bootstrap: str, tmp_path: Path
) -> None:
    """One of two workers reaches Kafka through a proxy that cuts it off for 25 s (longer than its
    session) while it still reaches the warehouse. It may write rows meanwhile, but its commits
    fail once it is fenced: the totals stay exact."""
    inner, outer = free_port(), free_port()
    broker = LocalKafka(tmp_path / "kafka", ensure_jars(), port=free_port(), proxied=(inner, outer))
    broker.start(heap="384m")
    proxy = Partition(outer, inner)
    try:
        await asyncio.to_thread(broker.wait_ready)
        proxy.start()
        with warehouse_server(tmp_path / "warehouse") as url:
            real = Settings.from_env(
                settings.to_env(), kafka_bootstrap=broker.bootstrap, raw_partitions=6,
                clickhouse_url=f"{url}/{settings.clickhouse_database}", sink_batch_rows=500, sink_batch_seconds=0.3,
            )  # fmt: skip
            await ensure_topics(real)
            members = [worker_settings(real, tmp_path, n) for n in range(2)]
            members[0] = Settings.from_env(members[0].to_env(), kafka_bootstrap=f"127.0.0.1:{outer}")
            await two_workers_through(real, members, tmp_path, "exp_cut", 61, lambda _: (proxy.partition, proxy.heal))
    finally:
        proxy.stop()
        broker.stop()


async def test_one_worker_command_with_two_processes_uses_both(shared: Settings, tmp_path: Path) -> None:
    """``sluice worker --processes 2``: two members of the group (each with its own state and web
    port), both taking partitions of one org's load, and the totals exact."""
    batches, truth = ab_test(
        "exp_processes", {"control": 500, "treatment": 500}, {"control": 0.2, "treatment": 0.3},
        duplicate_rate=0.05, batch_size=100, seed=71,
    )  # fmt: skip
    key = sluice(shared, "keys", "create", "--org", "acme", "--kind", "secret", "--scope", "sdk:write").stdout.strip()
    member = worker_settings(shared, tmp_path, 0)
    second = Settings.from_env(member.to_env(), worker_port=member.worker_port + 1,
                               worker_url=f"http://127.0.0.1:{member.worker_port + 1}")  # fmt: skip
    log = tmp_path / "workers.log"
    workers = spawn_processes(member, 2, log)
    try:
        for each in (member, second):
            await asyncio.to_thread(wait_http, f"{each.worker_url}/healthz", 60, workers)
        with running(shared, "gateway", f"{gateway_url(shared)}/readyz", tmp_path / "gw.log"):
            await post_paced(shared, key, [encode(b) for b in batches], 6.0, {})
        await settles_on_truth(shared, truth)
        handled = [events_handled(each) for each in (member, second)]
        assert all(n > 0 for n in handled), f"a process took no partition: {handled}"
    except BaseException:
        sys.stderr.write(log.read_text(errors="replace")[-4000:])
        raise
    finally:
        terminate(workers)


def spawn_processes(settings: Settings, count: int, log: Path) -> subprocess.Popen[bytes]:
    """``sluice worker --processes COUNT`` in the background, in its own process group."""
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "commands.cli", "worker", "--processes", str(count)],
            env={**os.environ, **settings.to_env()}, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
