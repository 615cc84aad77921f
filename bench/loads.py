"""The loads and reference points of ``make bench``: the gateway under wrk, Kafka's own producer
tool, chDB's raw insert rate, a preloaded backlog, two worker processes, the dedupe ids."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import (  # noqa: E402  # noqa: E402
    BATCH_SIZES,
    DEDUPE_IDS,
    LOAD_LEVELS,
    SECONDS,
    Point,
    _lag,
    assigned_partitions,
    bench_key,
    count,
    cpu_seconds,
    events_in_raw,
    events_out,
    start,
    stop,
    wait_http,
)

from commands.loadgen import Options, run  # noqa: E402
from commands.localkafka import LocalKafka, free_port  # noqa: E402
from pipeline.canonical import CanonicalEvent, to_rows  # noqa: E402
from pipeline.warehouse import ChdbWarehouse, migrate  # noqa: E402
from sluice.settings import Settings  # noqa: E402


def dedupe_ids(bootstrap: str, path: Path) -> dict[str, float]:
    """bench/dedupe_ids.py in a process of its own: the state store's cost of DEDUPE_IDS ids."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        config = {"cleanup.policy": "compact", "max.message.bytes": str(4 << 20)}
        await admin.create_topics([NewTopic("bench-state", 6, 1, topic_configs=config)])
        await admin.close()

    asyncio.run(create())
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "dedupe_ids.py"), bootstrap, "bench-state", "6", str(DEDUPE_IDS),
         str(path)], capture_output=True, text=True, check=True,
    )  # fmt: skip
    result: dict[str, float] = msgspec.json.decode(done.stdout.strip().splitlines()[-1])
    return result


def kafka_reference(broker: LocalKafka, libs: Path) -> list[tuple[int, float, float]]:
    """Kafka's ProducerPerformance: (record bytes, records/s, MB/s) with acks=all."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    sizes = (2_000, 10_000, 20_000)

    async def create() -> None:  # the broker does not create topics on first use
        admin = AIOKafkaAdminClient(bootstrap_servers=broker.bootstrap)
        await admin.start()
        await admin.create_topics([NewTopic(f"perf-{size}", 6, 1) for size in sizes])
        await admin.close()

    asyncio.run(create())
    out = []
    for size in sizes:
        done = subprocess.run(
            ["java", "-Xmx512m", "-cp", f"{libs}/*", "org.apache.kafka.tools.ProducerPerformance",
             "--topic", f"perf-{size}", "--num-records", str(40_000_000 // size), "--record-size", str(size),
             "--throughput", "-1", "--producer-props", f"bootstrap.servers={broker.bootstrap}", "acks=all",
             "linger.ms=5"],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        match = re.search(r"([\d.]+) records/sec \(([\d.]+) MB/sec\)", done.stdout.strip().splitlines()[-1])
        assert match, done.stdout
        out.append((size, float(match[1]), float(match[2])))
    return out


def lua_string(data: bytes) -> str:
    return '"' + "".join(f"\\{b:03d}" if b < 32 or b in (34, 92) or b > 126 else chr(b) for b in data) + '"'


WRK_CONNECTIONS = (64, 32, 16, 8, 4)


def wrk_points(
    settings: Settings, key: str, gateway_pid: int, kafka_pid: int, work: Path,
    connections: tuple[int, ...] = WRK_CONNECTIONS,
) -> list[dict[str, float]]:  # fmt: skip
    """One gateway process under wrk (a C load generator: it leaves the cores to the gateway and
    Kafka), 2 threads, batches of 100 of the four families' mix, at 64 down to 4 connections: the
    peak, and lighter loads (wrk is closed-loop: fewer connections, less load). Each point has
    events/s, p50/p99 ms and the CPU-µs per event of the gateway and of Kafka."""
    from commands.loadgen import Generator, _headers

    generator = Generator(Options(url="", key=key, org="bench", batch_size=100, rate=0.0, duration=0,
                                  connections=1, seed=77, progress=False))  # fmt: skip
    entries = []
    for _ in range(400):
        family, path, body, _ids = generator.request()
        pairs = _headers(family, key).items()
        headers = ", ".join(f"[{lua_string(k.encode())}] = {lua_string(v.encode())}" for k, v in pairs)
        entries.append(f"{{{lua_string(path.encode())}, {{{headers}}}, {lua_string(body)}}}")
    requests = work / "wrk-requests.lua"
    requests.write_text("return {\n" + ",\n".join(entries) + "\n}\n")
    points = []
    for load in connections:
        before = cpu_seconds(gateway_pid), cpu_seconds(kafka_pid)
        done = subprocess.run(
            ["wrk", "-t2", f"-c{load}", f"-d{max(SECONDS, 8):.0f}s", "-s", str(REPO / "bench" / "wrk.lua"),
             f"http://127.0.0.1:{settings.gateway_port}"],
            capture_output=True, text=True, check=True, env={**os.environ, "SLUICE_WRK_REQUESTS": str(requests)},
        )  # fmt: skip
        gateway_cpu, kafka_cpu = cpu_seconds(gateway_pid) - before[0], cpu_seconds(kafka_pid) - before[1]
        line = next(line for line in done.stdout.splitlines() if line.startswith("SLUICE "))
        total, status_errors, socket_errors, timeouts, p50, p99, seconds = (float(x) for x in line.split()[1:])
        events = (total - status_errors - socket_errors - timeouts) * 100
        points.append({
            "connections": load, "events_per_s": events / seconds, "p50_ms": p50, "p99_ms": p99,
            "errors": status_errors + socket_errors + timeouts, "gateway_cpu_us": 1e6 * gateway_cpu / max(events, 1),
            "kafka_cpu_us": 1e6 * kafka_cpu / max(events, 1),
        })  # fmt: skip
        print(f"  wrk, {load} connections: {points[-1]}", flush=True)
    return points


def chdb_reference(path: Path) -> float:
    """Rows/s of JSONEachRow inserts of canonical events into chDB, 10k rows at a time."""
    warehouse = ChdbWarehouse(path, "bench")
    migrate(warehouse)
    now = datetime.now(UTC)
    rows = [
        CanonicalEvent(org_id="bench", project_id="p", env="e", message_id=f"m{i}", family="solute", type="track",
                       event="Bench", user_id=f"u{i % 5000}", unit_key=f"u{i % 5000}", timestamp=now, received_at=now,
                       properties=msgspec.Raw(b'{"plan":"pro","n":1}'))
        for i in range(200_000)
    ]  # fmt: skip
    batches = [to_rows(rows[i : i + 10_000]) for i in range(0, len(rows), 10_000)]
    started = time.perf_counter()
    for batch in batches:
        warehouse.insert_json("events", batch)
    return len(rows) / (time.perf_counter() - started)


async def gateway_points(settings: Settings, key: str) -> list[Point]:
    points = []
    for batch in BATCH_SIZES:
        top = 0.0
        for level in LOAD_LEVELS[::-1]:  # full load first: it sets what the lower levels offer
            offered = 0.0 if level == 1.0 else top * level
            options = Options(
                url=f"http://127.0.0.1:{settings.gateway_port}", key=key, org="bench", batch_size=batch,
                rate=offered, duration=SECONDS, connections=64, seed=int(batch * 100 + level * 10), progress=False,
            )  # fmt: skip
            result = (await run(options)).summary()
            if level == 1.0:
                top = result["events_per_second"]
            points.append(Point(batch, level, offered or top, result["events_per_second"], result["p50_ms"],
                                result["p99_ms"]))  # fmt: skip
            print(f"  batch {batch:>3} at {level:4.0%}: {points[-1]}", flush=True)
    return points


async def fill(
    settings: Settings, key: str, events: int, duplicate_rate: float = 0.0, identified_users: int = 0
) -> int:
    """Load the raw topic with ``events`` events through the gateway: the four families' mix, or
    identified users' Solute tracks (``commands.loadgen.Options.identified_users``)."""
    options = Options(
        url=f"http://127.0.0.1:{settings.gateway_port}", key=key, org="bench", batch_size=100,
        rate=0.0, duration=600, connections=32, seed=99, progress=False, duplicate_rate=duplicate_rate,
        identified_users=identified_users,
    )  # fmt: skip
    task = asyncio.create_task(run(options))
    # stop once enough is in (the generator honours its own duration; cancel it early)
    while True:
        await asyncio.sleep(0.5)
        topic_events = events_in_raw(settings)
        if topic_events >= events:
            task.cancel()
            break
    await asyncio.gather(task, return_exceptions=True)
    return events_in_raw(settings)


def preload(settings: Settings, work: Path, events: int, identified_users: int = 0) -> int:
    """A gateway started, ``events`` (5 % duplicates) loaded through it into the raw topic
    (:func:`fill`), the gateway stopped: the backlog a worker benchmark drains. Returns the events in."""
    gateway = start(settings, "gateway", work / "gateway.log")
    try:
        wait_http(f"http://127.0.0.1:{settings.gateway_port}/readyz")
        return asyncio.run(fill(settings, bench_key(settings), events, 0.05, identified_users=identified_users))
    finally:
        stop(gateway)


def two_workers(base: Settings, work: Path, events: int) -> dict[str, Any]:
    """``sluice worker --processes 2`` on a shared warehouse (``sluice warehouse``: chDB behind
    ClickHouse's HTTP interface), under a new group: the same preloaded topic from the start.
    Returns each process's partitions and events, and the rate of the two together."""
    import secrets

    password = secrets.token_urlsafe(16)
    served = Settings.from_env({}, home=str(work / "warehouse"), warehouse_port=free_port(),
                               warehouse_password=password)  # fmt: skip
    url = f"http://{served.warehouse_user}:{password}@127.0.0.1:{served.warehouse_port}"
    port = free_port()
    while free_port() == port + 1:  # the second process takes the next port
        port = free_port()
    share = Settings.from_env(
        base.to_env(), home=str(work / "two"), worker_group="bench-two", worker_port=port,
        worker_url=f"http://127.0.0.1:{port}", clickhouse_url=f"{url}/bench_two", worker_processes=2,
    )  # fmt: skip
    each = [msgspec.structs.replace(share, worker_url=f"http://127.0.0.1:{port + n}") for n in (0, 1)]
    warehouse = start(served, "warehouse", work / "warehouse.log")
    try:
        wait_http(f"http://127.0.0.1:{served.warehouse_port}/ping")
        started = time.monotonic()
        workers = start(share, "worker", work / "two.log")
        try:
            for one in each:
                wait_http(f"{one.worker_url}/healthz", 120)
            last = (started, -1)
            while True:
                time.sleep(1.0)
                rows = int(count(share, "SELECT count() FROM events"))
                if rows != last[1]:
                    last = (time.monotonic(), rows)
                elif time.monotonic() - last[0] >= 5 and not any(_lag(one) for one in each):
                    break
            seconds = last[0] - started
            return {
                "partitions": [assigned_partitions(one) for one in each], "events": [events_out(one) for one in each],
                "rows": last[1], "seconds": seconds, "events_per_s": events / seconds,
            }  # fmt: skip
        finally:
            stop(workers)
    finally:
        stop(warehouse)
