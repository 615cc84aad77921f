"""A scripted experiment with known truth, as Traffical batches: who is exposed to what, who
converts, which messages are sent twice. Tests compare the warehouse with ``Truth``."""

from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass, field
from typing import Any

from sluice.settings import Settings
from tests.processes import query_rows


@dataclass
class Truth:
    exposed: dict[str, int] = field(default_factory=dict)
    converted: dict[str, int] = field(default_factory=dict)
    exposure_events: int = 0
    track_events: int = 0
    value_sum: float = 0.0
    message_ids: set[str] = field(default_factory=set)


def ab_test(
    experiment: str, split: dict[str, int], rates: dict[str, float], *, seed: int = 7, duplicate_rate: float = 0.0,
    batch_size: int = 100, value: float = 10.0, prefix: str = "",
) -> tuple[list[dict[str, Any]], Truth]:  # fmt: skip
    """Batches (``{"events": [...]}``) and their truth. Each unit gets a decision, an exposure and,
    if it converts, a purchase attributed by decision id."""
    rng = random.Random(seed)
    truth = Truth()
    events: list[dict[str, Any]] = []
    for variant, units in split.items():
        converting = round(units * rates[variant])
        truth.exposed[variant] = units
        truth.converted[variant] = converting
        for n in range(units):
            unit = f"{prefix}{experiment}-{variant}-{n}"
            decision = f"dec-{unit}"
            layer = [{"layerId": "l1", "policyId": experiment, "allocationName": variant, "bucket": n % 1000}]
            events.append({"type": "decision", "id": f"d-{unit}", "unitKey": unit, "timestamp": _ts(n),
                           "decisionId": decision, "layers": layer})  # fmt: skip
            events.append({"type": "exposure", "id": f"x-{unit}", "unitKey": unit, "timestamp": _ts(n),
                           "decisionId": decision, "layers": layer})  # fmt: skip
            truth.exposure_events += 1
            if n < converting:
                events.append({"type": "track", "id": f"t-{unit}", "unitKey": unit, "timestamp": _ts(n + 1),
                               "event": "purchase", "decisionId": decision, "value": value})  # fmt: skip
                truth.track_events += 1
                truth.value_sum += value
    truth.message_ids = {e["id"] for e in events}
    rng.shuffle(events)
    # keep each unit's decision and exposure before its purchase, as real clients send them
    order = {"decision": 0, "exposure": 1, "track": 2}
    events.sort(key=lambda e: order[e["type"]])
    duplicates = [dict(e) for e in rng.sample(events, int(len(events) * duplicate_rate))]
    stream = events + duplicates
    return [{"events": stream[i : i + batch_size]} for i in range(0, len(stream), batch_size)], truth


def _ts(n: int) -> str:
    return f"2026-05-21T10:{(n // 60) % 60:02d}:{n % 60:02d}Z"


TOTALS_SQL = (
    "SELECT (SELECT count() FROM events FINAL) AS events, "
    "(SELECT sum(exposures) FROM exposures_1m) AS exposures, (SELECT sum(units) FROM exposures_1m) AS units, "
    "(SELECT sum(tracks) FROM tracks_1m WHERE experiment_id != '') AS tracks, "
    "(SELECT sum(value_sum) FROM tracks_1m) AS value"
)
"""What the warehouse holds for an ``ab_test``: compare with :func:`expected_totals`."""


def expected_totals(truth: Truth) -> dict[str, Any]:
    return {
        "events": len(truth.message_ids),
        "exposures": truth.exposure_events,
        "units": sum(truth.exposed.values()),
        "tracks": truth.track_events,
        "value": truth.value_sum,
    }


async def settles_on_truth(settings: Settings, truth: Truth, within: float = 120) -> None:
    """Wait until the warehouse's totals equal the truth, then check that they stay there (a late
    double count would show)."""
    expected = [expected_totals(truth)]
    found: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        found = query_rows(settings, TOTALS_SQL)
        if found == expected:
            break
        await asyncio.sleep(1)
    assert found == expected, f"warehouse {found}, truth {expected}"
    await asyncio.sleep(2)
    assert query_rows(settings, TOTALS_SQL) == expected
