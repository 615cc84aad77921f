"""``make bench``: Sluice's throughput, latency, freshness and memory on this machine.

Everything runs here, on loopback: a fresh Kafka broker, the gateway and a worker as processes,
the load generator in this process. Writes ``docs/benchmarks.md`` and ``docs/benchmarks.png``.
Reference points in the same run: Kafka's own producer performance tool for the same record
sizes, and chDB's raw insert rate.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import (  # noqa: E402
    DEDUPE_IDS,
    IDENTIFIED_USERS,
    PROFILE_SECONDS,
    WORKER_EVENTS,
    assigned_partitions,
    bench_key,
    bench_settings,
    drain,
    peak_rss_mb,
    profile_top,
    py_spy,
    records_per_partition,
    start,
    stop,
    wait_http,
)
from loads import chdb_reference, dedupe_ids, gateway_points, kafka_reference, preload, two_workers, wrk_points  # noqa: E402
from report import write_report  # noqa: E402
from steady import steady_run, sustained  # noqa: E402

from commands.localkafka import LocalKafka, ensure_jars, free_port  # noqa: E402
from sluice.settings import Settings  # noqa: E402


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="sluice-bench-"))
    libs = ensure_jars()
    broker = LocalKafka(work / "kafka", libs, port=free_port())
    broker.start(heap="1g")
    broker.wait_ready()
    results: dict[str, Any] = {}
    processes: list[subprocess.Popen[bytes]] = []
    try:
        print("kafka producer performance …", flush=True)
        results["kafka"] = kafka_reference(broker, libs)
        print("chdb insert rate …", flush=True)
        results["chdb"] = chdb_reference(work / "chdb")

        base = bench_settings(work, broker.bootstrap, "gw.")
        key = bench_key(base)
        gateway = start(base, "gateway", work / "gateway.log")
        processes.append(gateway)
        wait_http(f"http://127.0.0.1:{base.gateway_port}/readyz")
        print("gateway throughput and latency …", flush=True)
        results["gateway"] = asyncio.run(gateway_points(base, key))
        print("gateway peak from wrk …", flush=True)
        assert broker.process is not None
        results["wrk"] = wrk_points(base, key, gateway.pid, broker.process.pid, work)
        results["gateway_rss"] = peak_rss_mb(gateway.pid)
        stop(gateway)

        print("gateway, two processes on one port …", flush=True)
        two = Settings.from_env(base.to_env(), gateway_processes=2)
        gateway = start(two, "gateway", work / "gateway-two.log")
        processes.append(gateway)
        wait_http(f"http://127.0.0.1:{base.gateway_port}/readyz")
        time.sleep(2)  # both processes up, not only the first to answer
        [point] = wrk_points(two, key, gateway.pid, broker.process.pid, work, connections=(64,))
        results["gateway_two"] = (point["events_per_s"], point["p50_ms"], point["p99_ms"])
        print(f"  two processes, batch 100, wrk at 64 connections: {results['gateway_two']}", flush=True)
        stop(gateway)

        print("worker throughput …", flush=True)
        mine = Settings.from_env(base.to_env(), topic_prefix="wk.", gateway_port=free_port())
        filled = preload(mine, work, WORKER_EVENTS)  # then the worker alone on the machine with Kafka
        key = bench_key(mine)  # the freshness and sustained phases load through mine's gateway
        results["spread"] = records_per_partition(mine)  # one org ("bench"): how its load spread
        started = time.monotonic()
        worker = start(mine, "worker", work / "worker.log")
        processes.append(worker)
        wait_http(f"{mine.worker_url}/healthz", 120)
        spy = py_spy(worker.pid, PROFILE_SECONDS, work / "worker.prof")
        seconds, _rows, steady = drain(mine, started)
        results["worker"] = (filled, seconds, filled / seconds)
        results["worker_steady"] = steady
        spy.wait(timeout=120)
        results["worker_profile"] = profile_top(work / "worker.prof")
        results["worker_partitions"] = assigned_partitions(mine)
        results["worker_rss"] = peak_rss_mb(worker.pid)
        stop(worker)
        print("worker throughput, identified users …", flush=True)
        results["identified"] = identified_rate(work / "identified", broker.bootstrap)
        print("two worker processes, one group …", flush=True)
        results["two_workers"] = two_workers(mine, work, filled)
        worker = start(mine, "worker", work / "worker.log")
        processes.append(worker)
        wait_http(f"{mine.worker_url}/healthz", 120)
        gateway = start(mine, "gateway", work / "gateway2.log")
        processes.append(gateway)
        wait_http(f"http://127.0.0.1:{mine.gateway_port}/readyz")

        print("freshness at half load …", flush=True)
        half = round(results["worker"][2] / 2, -2)
        steady_run(mine, key, half, 10.0)  # the worker restarted: warm it first
        at_half = steady_run(mine, key, half, 20.0)
        assert at_half["accepted_per_s"] > 0, f"the gateway accepted nothing at {half:,.0f}/s: {at_half}"
        results["freshness"] = [at_half["freshness_p50"], at_half["freshness_p99"]]
        print("the whole system, sustained …", flush=True)
        results["sustained"] = sustained(mine, key, [10_000, 15_000, 20_000, 25_000, 30_000, 40_000],
                                         [worker.pid, broker.process.pid])  # fmt: skip
        results["worker_rss"] = max(results["worker_rss"], peak_rss_mb(worker.pid))
        results["gateway2_rss"] = peak_rss_mb(gateway.pid)
        print(f"state store with {DEDUPE_IDS:,} dedupe ids …", flush=True)
        results["dedupe"] = dedupe_ids(broker.bootstrap, work / "dedupe")
    finally:
        for process in processes:
            stop(process)
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)  # about 16 GB by the end: never left behind, even by a failed run
    print("experiment results over 10 M exposed units …", flush=True)  # alone: Kafka and the rest are stopped
    results["results_query"] = results_query()
    write_report(results)


def identified_rate(work: Path, bootstrap: str) -> dict[str, float]:
    """One worker process on identified traffic: ``IDENTIFIED_USERS`` users' Solute tracks with
    userId, anonymousId, properties and context, 5 % of the batches retried, preloaded through the
    gateway, then drained alone (as the mix's phase does)."""
    work.mkdir(parents=True, exist_ok=True)
    settings = msgspec.structs.replace(bench_settings(work, bootstrap, "id."), worker_group="bench-identified")
    filled = preload(settings, work, WORKER_EVENTS, IDENTIFIED_USERS)
    started = time.monotonic()
    worker = start(settings, "worker", work / "worker.log")
    try:
        wait_http(f"{settings.worker_url}/healthz", 120)
        seconds, _rows, steady = drain(settings, started)
    finally:
        stop(worker)
    return {"events": filled, "seconds": seconds, "events_per_s": filled / seconds, "steady_rows_per_s": steady}


def results_query() -> dict[str, Any]:
    """``bench/results_query.py`` in its own process (chDB takes one path per process)."""
    done = subprocess.run(
        [sys.executable, str(REPO / "bench" / "results_query.py")], capture_output=True, text=True, check=True
    )
    answer: dict[str, Any] = msgspec.json.decode(done.stdout.strip().splitlines()[-1])
    return answer


if __name__ == "__main__":
    main()
