"""The whole system held at a rate: steady runs, each with its own seed, and the rule that
decides whether a rate held."""

from __future__ import annotations

import asyncio
import itertools
import os
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from harness import _lag, cpu_seconds, sluice  # noqa: E402

from commands.loadgen import Options, run  # noqa: E402
from sluice.settings import Settings  # noqa: E402

SUSTAIN_SECONDS = float(os.environ.get("BENCH_SUSTAIN_SECONDS", "300"))


PROBE_SECONDS = 30.0


RUN_SEEDS = itertools.count(1000)


"""Each run's own load-generator seed. Message ids follow from the seed, so runs that shared one (a
probe and the long run at its rate) sent the same ids, and the worker deduplicated the second's
first part: fewer rows, a lighter load than offered."""


DRAIN_LIMIT = 3.0


"""Seconds the worker may take to clear the backlog a run leaves when its load stops."""


DRAIN_WAIT = 120.0


"""Seconds to wait for that, at most, before freshness is measured."""


def steady_run(settings: Settings, key: str, rate: float, seconds: float) -> dict[str, Any]:
    """The load generator at ``rate`` events/s for ``seconds`` beside the running system: what it
    accepted, the worker's lag, the freshness of the run's events, and whether it held.

    Held: at least 95 % of the rate accepted; the backlog left when the load stopped drained
    within ``DRAIN_LIMIT`` seconds (the lag stayed flat: a worker that fell behind needs as long
    to catch up as it fell behind); and freshness p99 ≤ 3 s over every event of the run, measured
    once the worker has drained, so the events that waited longest count too. (The backlog was
    once judged by records left, at about 100 events a record; since the gateway splits a request
    by its units' partitions a record holds from 1 to 100 events, so a count of records says
    little.)"""
    began = sluice(settings, "query", "SELECT now64(3)").splitlines()[-1]
    lags: list[float] = []

    async def load() -> Any:
        task = asyncio.create_task(run(Options(
            url=f"http://127.0.0.1:{settings.gateway_port}", key=key, org="bench", batch_size=100, rate=rate,
            duration=seconds, connections=16, seed=next(RUN_SEEDS), progress=False, duplicate_rate=0.05,
        )))  # fmt: skip
        while not task.done():
            await asyncio.sleep(min(10.0, seconds / 6))
            lags.append(await asyncio.to_thread(_lag, settings))
        return (await task).summary()

    summary = asyncio.run(load())
    end_lag = _lag(settings)
    stopped = time.monotonic()
    while _lag(settings) > 0 and time.monotonic() - stopped < DRAIN_WAIT:
        time.sleep(0.25)
    drained = time.monotonic() - stopped
    q = sluice(settings, "query", "SELECT quantiles(0.5, 0.99)(toFloat64(inserted_at) - toFloat64(received_at)) "
               f"FROM events WHERE received_at >= toDateTime64('{began}', 3, 'UTC')")  # fmt: skip
    p50, p99 = (float(x) for x in q.splitlines()[-1].strip("[]").split(","))
    return {
        "rate": rate, "accepted_per_s": summary["events_per_second"], "seconds": seconds, "lag_samples": lags,
        "end_lag_records": end_lag, "drained_s": round(drained, 2), "freshness_p50": p50, "freshness_p99": p99,
        "held": drained <= DRAIN_LIMIT and p99 <= 3.0 and summary["events_per_second"] >= 0.95 * rate,
    }  # fmt: skip


def settle(
    settings: Settings, pids: list[int], quiet: float = 0.3, window: float = 10.0, limit: float = 300.0
) -> float:
    """Wait until the worker has no lag and ``pids`` (the worker and Kafka) together use under
    ``quiet`` of a core for ``window`` seconds, or ``limit`` has passed; returns the seconds waited.
    A run that fell behind leaves a backlog, and behind it the warehouse merging parts, RocksDB
    and Kafka compacting: the next run must not inherit them."""
    began = time.monotonic()
    while time.monotonic() - began < limit:
        before = sum(cpu_seconds(pid) for pid in pids)
        time.sleep(window)
        if sum(cpu_seconds(pid) for pid in pids) - before < quiet * window and _lag(settings) == 0:
            break
    return time.monotonic() - began


def sustained(settings: Settings, key: str, rates: list[float], pids: list[int]) -> dict[str, Any]:
    """The whole system on this machine (Kafka, gateway, worker, load generator): the highest of
    ``rates`` (events/s) that holds with the worker keeping up (lag at the end under 3 s of load)
    and freshness p99 ≤ 3 s, probed for 30 s each, then run for ``SUSTAIN_SECONDS`` — each run
    from a settled system (``settle``: ``pids`` are the worker's and Kafka's)."""

    steady_run(settings, key, rates[0], 10.0)  # warm: partitions owned, state caught up, before anything counts
    probes = []
    best = None
    for rate in rates:
        settle(settings, pids)
        probe = steady_run(settings, key, rate, PROBE_SECONDS)
        probes.append(probe)
        print(f"  probe {rate:,.0f}/s: {probe}", flush=True)
        if not probe["held"]:
            break
        best = rate
    confirmed = None
    runs = []
    for rate in [r for r in rates if best is not None and r <= best][::-1]:
        settled = settle(settings, pids)
        confirmed = steady_run(settings, key, rate, SUSTAIN_SECONDS)
        confirmed["settled_s"] = round(settled)
        runs.append(confirmed)
        print(f"  {SUSTAIN_SECONDS:.0f} s at {rate:,.0f}/s: {confirmed}", flush=True)
        if confirmed["held"]:
            break
    return {"probes": probes, "runs": runs, "confirmed": confirmed}
