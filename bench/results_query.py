"""Part of ``make bench``, and on its own: an experiment's results over 10 M exposed units on the
embedded warehouse (chDB), for each metric kind with CUPED (ratio: without; CUPED does not apply),
and without.

The tables are the worker's (migrated DDL) and filled in SQL with ``numbers()``, as the worker
would have left them mid-experiment: ``experiment_units`` in 20 inserts (parts not merged
together) plus a newer version of 5 % of the units (``FINAL`` has work to do); the exposure rollups
(a row per 100 units' record and minute); ``events`` with an
exposure per unit, the purchases after exposure that the units' tallies count (with ``value`` and
``post_exposure`` as the worker writes them), and purchases in the 14 days before exposure for 10 %
of the units (CUPED's covariate). Then each kind's result is
read through ``pipeline.scorecard`` as the CLI and the API do — the same two statements — and
timed; the figure is the median of ``--repeat`` reads. Merges are stopped for the reads: each
read sees the unmerged parts described above, and none competes with the one-off merge of a
10 M-row fill (a live warehouse merges its inserts as they come, a little at a time). Prints one
JSON line.

Usage: ``python bench/results_query.py [--units 10000000] [--repeat 3]``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline.results.metric import Metric  # noqa: E402
from pipeline.scorecard import Request, scorecard  # noqa: E402
from pipeline.warehouse import ChdbWarehouse, migrate  # noqa: E402

START_MS = 1_777_593_600_000  # 2026-05-01 00:00 UTC: first exposures spread over the next 14 days
PARTS = 20

# per unit n: c purchases (20 % of units buy 1-3), worth 20 each plus n % 7
_C = "if(cityHash64(number) % 10 < 2, 1 + intDiv(cityHash64(number), 10) % 3, 0)"
_T = f"fromUnixTimestamp64Milli(toInt64({START_MS} + intDiv(number * 1209600000, {{units}})), 'UTC')"


def _units(units: int, start: int, stop: int, version: int) -> str:
    t = _T.format(units=units)
    return (
        "INSERT INTO experiment_units (org_id, project_id, env, experiment_id, variant_id, unit_key, "
        "first_exposed_at, converted_at, conversions, variants_seen, event_counts, event_values, version) "
        f"SELECT 'bench', 'web', 'production', 'exp_10m', ['control', 'treatment'][number % 2 + 1], "
        f"concat('u', toString(number)), {t}, if(c > 0, {t} + INTERVAL 1 HOUR, NULL), "
        f"if(c > 0, map('purchase', {t} + INTERVAL 1 HOUR), map()), if(number % 1000 = 0, 2, 1), "
        f"if(c > 0, map('purchase', toUInt32(c)), map()), "
        f"if(c > 0, map('purchase', toFloat64(c * 20 + number % 7)), map()), {version} "
        f"FROM (SELECT number, {_C} AS c FROM numbers({start}, {stop - start}))"
    )


def _events(units: int, kind: str) -> str:
    t = _T.format(units=units)
    columns = (
        "INSERT INTO events (org_id, project_id, env, message_id, family, type, event, unit_key, timestamp, "
        "received_at, properties, context, traits, experiment_id, variant_id, value, post_exposure) "
    )
    if kind == "exposure":
        return columns + (
            f"SELECT 'bench', 'web', 'production', concat('x', toString(number)), 'traffical', 'exposure', "
            f"'exposure', concat('u', toString(number)), {t}, {t}, '{{}}', '{{}}', '{{}}', 'exp_10m', "
            f"['control', 'treatment'][number % 2 + 1], 0, [] FROM numbers({units})"
        )
    if kind == "after":
        return columns + (
            f"SELECT 'bench', 'web', 'production', concat('p', toString(number), '-', toString(k)), 'traffical', "
            f"'track', 'purchase', concat('u', toString(number)), {t} + INTERVAL 1 HOUR, {t} + INTERVAL 1 HOUR, "
            "concat('{\"value\":', toString(20 + number % 7), '}'), '{}', '{}', '', '', 20 + number % 7, ['exp_10m'] "
            f"FROM (SELECT number, {_C} AS c FROM numbers({units})) ARRAY JOIN range(c) AS k WHERE c > 0"
        )
    return columns + (  # before: 10 % of units bought 1-5 days before their first exposure
        f"SELECT 'bench', 'web', 'production', concat('b', toString(number)), 'traffical', 'track', 'purchase', "
        f"concat('u', toString(number)), {t} - toIntervalDay(1 + number % 5), {t} - toIntervalDay(1 + number % 5), "
        "concat('{\"order_total\":', toString(10 + number % 13), '}'), '{}', '{}', '', '', 10 + number % 13, [] "
        f"FROM numbers({units}) WHERE cityHash64(number, 1) % 10 = 0"
    )


def _rollups(units: int) -> str:
    """Exposure rollup rows as the worker writes them: per keyed record (here 100 units) and minute."""
    t = _T.format(units=units)
    return (
        "INSERT INTO rollups_1m (org_id, project_id, env, kind, experiment_id, variant_id, event, minute, count, "
        "units, source_topic, source_partition, source_offset) SELECT 'bench', 'web', 'production', 'exposure', "
        "'exp_10m', variant, 'exposure', minute, count(), count(), 'bench.keyed', 0, record FROM (SELECT "
        f"['control', 'treatment'][number % 2 + 1] AS variant, toStartOfMinute({t}) AS minute, "
        f"intDiv(number, 100) AS record FROM numbers({units})) GROUP BY variant, minute, record"
    )


def fill(warehouse: ChdbWarehouse, units: int) -> float:
    started = time.perf_counter()
    step = -(-units // PARTS)
    for start in range(0, units, step):
        warehouse.execute(_units(units, start, min(units, start + step), 1))
    warehouse.execute(_units(units, 0, units // 20, 2))  # a newer version of 5 % of the units
    warehouse.execute(_rollups(units))
    for kind in ("exposure", "after", "before"):
        warehouse.execute(_events(units, kind))
    return time.perf_counter() - started


REQUESTS = {
    "conversion+cuped": Request(Metric("purchase", "conversion"), cuped=True),
    "mean+cuped": Request(Metric("purchase", "mean"), cuped=True),
    "count+cuped": Request(Metric("purchase", "count"), cuped=True),
    "ratio": Request(Metric("purchase", "ratio")),
    "conversion": Request(Metric("purchase", "conversion"), cuped=False),
    "mean": Request(Metric("purchase", "mean"), cuped=False),
    "count": Request(Metric("purchase", "count"), cuped=False),
}
"""Each kind with CUPED (ratio: CUPED does not apply), then without: the covariate's join is most
of a CUPED result's time."""


def main(units: int, repeat: int) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="sluice-results-bench-"))
    try:
        warehouse = ChdbWarehouse(work / "chdb", "bench")
        migrate(warehouse)
        filled = fill(warehouse, units)
        for table in ("experiment_units", "events", "rollups_1m"):  # the reads see the parts as filled
            warehouse.execute(f"SYSTEM STOP MERGES {table}")
        times: dict[str, float] = {}
        checked: dict[str, int] = {}
        for kind, request in REQUESTS.items():
            runs = []
            for _ in range(repeat):
                started = time.perf_counter()
                card = scorecard(warehouse, "bench", "exp_10m", request)
                runs.append(time.perf_counter() - started)
            assert card is not None and card.cuped == kind.endswith("+cuped")
            checked[kind] = sum(v.units for v in card.variants)
            times[kind] = round(statistics.median(runs), 3)
        assert all(n == units for n in checked.values()), checked
        cuped = [t for kind, t in times.items() if kind.endswith("+cuped") or kind == "ratio"]
        plain = [t for kind, t in times.items() if not kind.endswith("+cuped")]
        return {
            "units": units, "fill_seconds": round(filled, 1), "seconds": times,
            "max_seconds": max(cuped), "max_seconds_without_cuped": max(plain),
        }  # fmt: skip
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--units", type=int, default=10_000_000)
    parser.add_argument("--repeat", type=int, default=3)
    options = parser.parse_args()
    print(json.dumps(main(options.units, options.repeat)), flush=True)
