"""A scripted experiment with known truth, as Traffical batches: who is exposed to what, who
converts, which messages are sent twice. Tests compare the warehouse with ``Truth``."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any


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
