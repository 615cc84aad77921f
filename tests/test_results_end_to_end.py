"""End to end: a scripted experiment of known truth — purchases before exposure (some inside
CUPED's 14-day window, some outside), decisions and exposures, purchases and signups after — sent
through the gateway, read back with ``sluice experiments results`` for every kind and over HTTP,
and compared with the sums computed here from the script."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.stats import Options, VariantSums, analyze
from pipeline.warehouse.readonly import query_token
from sluice.settings import Settings
from tests.builders import encode
from tests.processes import sluice
from tests.test_pipeline import system

pytestmark = [pytest.mark.kafka, pytest.mark.clickhouse]

EXPERIMENT = "exp_e2e"
T0 = datetime(2026, 11, 20, 10, tzinfo=UTC)


@dataclass
class Unit:
    key: str
    variant: str
    exposed: datetime
    after: list[float] = field(default_factory=list)
    """Values of its purchases after exposure."""
    before: list[tuple[datetime, float]] = field(default_factory=list)


def script() -> list[Unit]:
    units = []
    for variant, lift in (("control", 0.0), ("treatment", 5.0)):
        for i in range(24):
            exposed = T0 + timedelta(minutes=7 * i + (3 if lift else 0))
            buys = i % 4 + (i % 3 == 0) + (lift > 0 and i % 2 == 1)  # who bought before buys more after
            after = [10.0 + i % 7 + lift + k for k in range(buys)]
            before = [(exposed - timedelta(days=2, hours=i), 4.0 + i % 5)] if i % 3 == 0 else []
            if i % 5 == 0:
                before.append((exposed - timedelta(days=20), 100.0))  # outside the window
            units.append(Unit(f"{variant}-{i}", variant, exposed, after, before))
    return units


def events(units: list[Unit]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(the purchases before any exposure, then decisions, exposures and what followed)."""
    early: list[dict[str, Any]] = []
    later: list[dict[str, Any]] = []
    for u in units:
        for n, (moment, value) in enumerate(u.before):
            early.append({"type": "track", "id": f"b-{u.key}-{n}", "unitKey": u.key, "event": "purchase",
                          "timestamp": _ts(moment), "value": value})  # fmt: skip
        layer = [{"layerId": "l1", "policyId": EXPERIMENT, "allocationName": u.variant, "bucket": 1}]
        decision = f"dec-{u.key}"
        later.append({"type": "decision", "id": f"d-{u.key}", "unitKey": u.key, "timestamp": _ts(u.exposed),
                      "decisionId": decision, "layers": layer})  # fmt: skip
        later.append({"type": "exposure", "id": f"x-{u.key}", "unitKey": u.key, "timestamp": _ts(u.exposed),
                      "decisionId": decision, "layers": layer})  # fmt: skip
    for u in units:  # after every exposure: each unit's decision and exposure come before its purchases
        for n, value in enumerate(u.after):
            later.append({"type": "track", "id": f"p-{u.key}-{n}", "unitKey": u.key, "event": "purchase",
                          "timestamp": _ts(u.exposed + timedelta(hours=1 + n)), "decisionId": f"dec-{u.key}",
                          "value": value})  # fmt: skip
        if len(u.after) == 1:
            later.append({"type": "track", "id": f"s-{u.key}", "unitKey": u.key, "event": "signup",
                          "timestamp": _ts(u.exposed + timedelta(minutes=5)), "value": 1})  # fmt: skip
    return early, later


def _ts(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def truth(units: list[Unit], variant: str, kind: str, cuped: bool) -> VariantSums:
    pairs = []
    for u in units:
        if u.variant != variant:
            continue
        pre = [v for t, v in u.before if u.exposed - timedelta(days=14) <= t < u.exposed]
        x = {"conversion": float(bool(u.after)), "mean": sum(u.after), "count": float(len(u.after)),
             "ratio": sum(u.after)}[kind]  # fmt: skip
        d = {"conversion": float(bool(pre)), "mean": sum(pre), "count": float(len(pre)),
             "ratio": float(len(u.after))}[kind]  # fmt: skip
        pairs.append((x, d if cuped or kind == "ratio" else 0.0))
    xs, ds = [x for x, _ in pairs], [d for _, d in pairs]
    return VariantSums(variant, len(pairs), sum(xs), sum(x * x for x in xs), sum(ds), sum(d * d for d in ds),
                       sum(x * d for x, d in pairs))  # fmt: skip


def results(settings: Settings, *options: str) -> dict[str, Any]:
    done = sluice(settings, "experiments", "results", EXPERIMENT, "--org", "acme", "--format", "json", *options)
    assert done.returncode == 0, done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


async def settled(settings: Settings, units: list[Unit], within: float = 150) -> dict[str, Any]:
    """The mean result once every unit and purchase is in (units are spread over partitions)."""
    want = {v: (truth(units, v, "mean", False).n, truth(units, v, "mean", False).sum) for v in ("control", "treatment")}
    deadline = time.monotonic() + within
    card: dict[str, Any] = {}
    while time.monotonic() < deadline:
        card = results(settings, "--metric", "purchase", "--kind", "mean", "--no-cuped")
        if {v["variant"]: (v["units"], v["sum"]) for v in card["variants"]} == want:
            return card
        await asyncio.sleep(0.5)
    raise AssertionError(f"not settled: {card} != {want}")


async def test_a_scripted_experiment_reads_back_exactly(kafka_settings: Settings, tmp_path: Path) -> None:
    units = script()
    early, later = events(units)
    async with system(kafka_settings, tmp_path) as s:
        for batch in (early, later):
            for i in range(0, len(batch), 50):
                await s.post("/v1/events/batch", encode({"events": batch[i : i + 50]}))
            if batch is early:  # the purchases before exposure land first: then nothing attributes them
                s.wait("SELECT count() AS n FROM events FINAL WHERE event = 'purchase'", [{"n": len(early)}])
        await settled(kafka_settings, units)

        outputs: dict[str, dict[str, Any]] = {}
        for kind, options in [("conversion", ()), ("mean", ()), ("count", ()), ("ratio", ()),
                              ("mean", ("--no-cuped", "--fixed"))]:  # fmt: skip
            card = results(kafka_settings, "--metric", "purchase", "--kind", kind, *options)
            cuped = kind in ("mean", "count") and "--no-cuped" not in options
            control, treatment = truth(units, "control", kind, cuped), truth(units, "treatment", kind, cuped)
            expected = analyze(control, [treatment], Options(kind=kind, sequential="--fixed" not in options,  # type: ignore[arg-type]
                                                             cuped=cuped))  # fmt: skip
            assert (card["kind"], card["cuped"], card["sequential"]) == (kind, cuped, "--fixed" not in options)
            got = {v["variant"]: v for v in card["variants"]}
            for sums, result in zip((control, treatment), expected.variants, strict=True):
                row = got[sums.variant]
                assert (row["units"], row["control"]) == (sums.n, sums.variant == "control")
                assert row["sum"] == pytest.approx(sums.sum, rel=1e-12)
                assert row["mean"] == pytest.approx(result.mean, rel=1e-9)
                assert row["variance"] == pytest.approx(result.variance, rel=1e-9)
                if not cuped and kind != "ratio":
                    assert row["mean"] == pytest.approx(sums.sum / sums.n, rel=1e-12)
            want = expected.variants[1]
            assert got["treatment"]["lift_abs"] == pytest.approx(want.lift_abs, rel=1e-9)
            assert got["treatment"]["ci_abs"] == pytest.approx(list(want.ci_abs or ()), rel=1e-9)
            assert got["treatment"]["ci_rel"] == pytest.approx(list(want.ci_rel or ()), rel=1e-9)
            assert got["treatment"]["p_value"] == pytest.approx(want.p_value, rel=1e-9)
            assert card["srm_p_value"] == pytest.approx(1.0) and card["multiple_exposure_units"] == 0
            outputs[f"{kind}{''.join(options)}"] = card
        assert outputs["ratio"]["variants"][0]["mean"] == pytest.approx(
            truth(units, "control", "ratio", False).sum / truth(units, "control", "ratio", False).d_sum
        )  # fmt: skip
        assert outputs["mean"]["variance_reduction"] is not None

        token = query_token(kafka_settings.query_token, kafka_settings.home, create=False)
        url = (f"{kafka_settings.worker_url}/api/v1/experiments/{EXPERIMENT}/results?org=acme&metric=purchase"
               "&kind=count")  # fmt: skip
        async with s.http.get(url, headers={"Authorization": f"Bearer {token}"}) as response:
            assert response.status == 200, await response.text()
            over_http = await response.json()
        assert over_http["variants"] == outputs["count"]["variants"]
        (tmp_path / "results.json").write_text(json.dumps(outputs, indent=1))
