"""Processes, brokers and readings for the benchmarks: start and stop a part, a fresh broker,
wait for a port, read lag, rows, partitions and RSS, profile with py-spy; the sizes every phase
shares (``BENCH_*``)."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from commands.localkafka import LocalKafka, ensure_jars, free_port  # noqa: E402
from pipeline.warehouse.remote import warehouse_for_cli  # noqa: E402
from sluice.settings import Settings  # noqa: E402

BATCH_SIZES = (10, 50, 100)


LOAD_LEVELS = (0.25, 0.5, 0.7, 1.0)


SECONDS = float(os.environ.get("BENCH_SECONDS", "6"))


WORKER_EVENTS = int(os.environ.get("BENCH_WORKER_EVENTS", "1000000"))
IDENTIFIED_USERS = 20_000
"""Users of the identified phase (issue 25: 600,000 tracks from 20,000 users)."""


PROFILE_SECONDS = 20


DEDUPE_IDS = int(os.environ.get("BENCH_DEDUPE_IDS", "10000000"))


@dataclass
class Point:
    batch: int
    level: float
    offered: float
    events_per_second: float
    p50_ms: float
    p99_ms: float


def start(settings: Settings, command: str, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "commands.cli", command], env={**os.environ, **settings.to_env()},
            stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)


@contextmanager
def fresh_broker(prefix: str) -> Iterator[tuple[Path, LocalKafka, list[subprocess.Popen[bytes]]]]:
    """A new work directory and a fresh broker in it; the processes put in the list are stopped,
    then the broker, and the directory is removed on the way out (a million-event run leaves
    gigabytes of Kafka log and state). For the standalone benchmarks: worker_rate, sustained,
    gateway_wrk."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    broker = LocalKafka(work / "kafka", ensure_jars(), port=free_port())
    broker.start(heap="1g")
    broker.wait_ready()
    processes: list[subprocess.Popen[bytes]] = []
    try:
        yield work, broker, processes
    finally:
        for process in processes:
            stop(process)
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


def peak_rss_mb(pid: int) -> float:
    """VmHWM of the process and its children (the CLI runs the part in the same process)."""
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status)[1]) / 1024  # type: ignore[index]


def bench_settings(work: Path, bootstrap: str, prefix: str) -> Settings:
    """A gateway and a worker on free ports, homed in ``work``, on topics under ``prefix``."""
    worker_port = free_port()
    return Settings.from_env(
        {}, home=str(work / "home"), kafka_bootstrap=bootstrap, gateway_port=free_port(), worker_port=worker_port,
        worker_url=f"http://127.0.0.1:{worker_port}", rate_limit=0, topic_prefix=prefix, log_level="warning",
    )  # fmt: skip


def bench_key(settings: Settings) -> str:
    """A publishable key of the org ``bench``."""
    return sluice(settings, "keys", "create", "--org", "bench", "--kind", "publishable", "--scope", "sdk:write")


def sluice(settings: Settings, *args: str) -> str:
    return subprocess.run(
        [sys.executable, "-m", "commands.cli", *args], env={**os.environ, **settings.to_env()},
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def events_in_raw(settings: Settings) -> int:
    text = urllib.request.urlopen(f"http://127.0.0.1:{settings.gateway_port}/metrics").read().decode()
    return int(
        sum(
            float(v)
            for v in re.findall(r'sluice_gateway_events_total\{[^}]*outcome="accepted"[^}]*\} ([\d.e+]+)', text)
        )
    )


def py_spy(pid: int, seconds: int, out: Path) -> subprocess.Popen[bytes]:
    """A py-spy profile of ``pid`` for ``seconds``, as collapsed stacks in ``out``."""
    command = [str(REPO / ".venv/bin/py-spy"), "record", "-p", str(pid), "-d", str(seconds), "-f", "raw",
               "-o", str(out), "--nonblocking"]  # fmt: skip
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def profile_top(path: Path, limit: int = 12) -> list[tuple[str, float]]:
    """The functions a profile's samples were in (self time), as shares of all samples."""
    if not path.exists():
        return []
    own: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not samples.isdigit():
            continue
        frame = stack.split(";")[-1]
        name, _, where = frame.partition(" (")
        label = f"{name} ({where.rstrip(')').rsplit('/', 1)[-1]})" if where else name
        own[label] = own.get(label, 0) + int(samples)
        total += int(samples)
    ranked = sorted(own.items(), key=lambda item: -item[1])[:limit]
    return [(label, 100 * n / max(total, 1)) for label, n in ranked]


def drain(settings: Settings, started: float, quiet: float = 5.0) -> tuple[float, int, float]:
    """Watch the worker until it has no lag and its row count has not moved for ``quiet``
    seconds. Returns the seconds from ``started`` to the last new row, the rows, and the steady
    rate in rows/s from the first row to the last."""
    first: tuple[float, int] | None = None
    last = (started, 0)
    while True:
        time.sleep(0.5)
        rows = int(count(settings, "SELECT count() FROM events"))
        now = time.monotonic()
        if rows and first is None:
            first = (now, rows)
        if rows != last[1]:
            last = (now, rows)
        elif rows and now - last[0] >= quiet and _lag(settings) == 0:
            break
    assert first is not None
    steady = (last[1] - first[1]) / max(last[0] - first[0], 1e-3)
    return last[0] - started, last[1], steady


def _lag(settings: Settings) -> float:
    text = urllib.request.urlopen(f"{settings.worker_url}/metrics", timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("sluice_worker_consumer_lag{"))  # fmt: skip


def count(settings: Settings, sql: str) -> float:
    """One number from the warehouse, asked from this process: a ``sluice query`` child per
    poll (every half second while draining) took a tenth of a core from the run it measured."""
    warehouse = warehouse_for_cli(settings)
    try:
        return float(warehouse.execute(sql, "TSV").decode().splitlines()[-1] or 0)
    finally:
        warehouse.close()


def records_per_partition(settings: Settings) -> list[int]:
    """Records in each partition of the raw topic (one org's load: how it spread)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def ends() -> list[int]:
        consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
        await consumer.start()
        try:
            tps = [TopicPartition(settings.raw_topic, p) for p in range(settings.raw_partitions)]
            offsets = await consumer.end_offsets(tps)
            return [offsets[tp] for tp in tps]
        finally:
            await consumer.stop()

    return asyncio.run(ends())


def assigned_partitions(settings: Settings) -> list[int]:
    """The raw partitions a worker holds now (its lag gauges)."""
    text = urllib.request.urlopen(f"{settings.worker_url}/metrics", timeout=10).read().decode()
    found = re.findall(
        rf'sluice_worker_consumer_lag{{partition="(\d+)",topic="{re.escape(settings.raw_topic)}"}}', text
    )
    return sorted(int(p) for p in found)


def events_out(settings: Settings) -> int:
    """Events a worker process wrote (its own metrics)."""
    text = urllib.request.urlopen(f"{settings.worker_url}/metrics", timeout=10).read().decode()
    found = re.findall(r'sluice_worker_events_total\{[^}]*outcome="out"[^}]*stage="keyed"\} ([\d.e+]+)', text)
    return int(sum(float(v) for v in found))
