"""The results' data path on the embedded warehouse: per-variant sums from ``experiment_units``
(FINAL) and CUPED's covariate from ``events``, against sums computed here from the same rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from pipeline.results.declared import Declared
from pipeline.results.metric import Metric
from pipeline.scorecard import Request, render_table, scorecard
from pipeline.stats import Options, VariantSums, analyze
from pipeline.warehouse import Warehouse

pytestmark = pytest.mark.clickhouse

T0 = datetime(2026, 5, 1, 12, tzinfo=UTC)
WINDOW = timedelta(days=14)


def ms(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@dataclass
class Unit:
    key: str
    variant: str
    exposed: datetime | None
    counts: dict[str, int] = field(default_factory=dict)
    values: dict[str, float] = field(default_factory=dict)
    seen: int = 1
    pre: list[tuple[datetime, float]] = field(default_factory=list)
    """Purchases before exposure (time, value) as the events table holds them."""


UNITS = [
    Unit("a1", "control", T0, {"purchase": 2}, {"purchase": 30.0}, pre=[(T0 - timedelta(days=3), 12.0)]),
    Unit("a2", "control", T0 + timedelta(hours=1)),
    Unit("a3", "control", T0 + timedelta(hours=2), {"purchase": 1, "signup": 1}, {"purchase": 5.0, "signup": 0.0},
         pre=[(T0 - timedelta(days=20), 99.0), (T0 + timedelta(hours=1), 4.0)]),
    Unit("b1", "treatment", T0 + timedelta(hours=3), {"purchase": 3}, {"purchase": 45.5},
         pre=[(T0 + timedelta(hours=2), 7.0), (T0 + timedelta(hours=2, minutes=1), 3.0)]),
    Unit("b2", "treatment", T0 + timedelta(hours=4), {"signup": 2}, {"signup": 0.0}, seen=2),
    Unit("b3", "treatment", T0 + timedelta(hours=5), {"purchase": 1}, {"purchase": 8.0}),
    Unit("b4", "treatment", None),  # decided, tracked, never exposed
]  # fmt: skip


def fill(warehouse: Warehouse, experiment: str = "exp") -> None:
    rows: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    rollups: list[dict[str, Any]] = []
    for offset, unit in enumerate(UNITS):
        if unit.exposed is not None:  # the exposure rollup row of the unit's first exposure, written twice
            rollup = {
                "org_id": "acme", "project_id": "web", "env": "production", "kind": "exposure",
                "experiment_id": experiment, "variant_id": unit.variant, "event": "exposure",
                "minute": unit.exposed.strftime("%Y-%m-%d %H:%M:00"), "count": 1, "units": 1,
                "source_topic": "t", "source_partition": 0, "source_offset": offset,
            }  # fmt: skip
            again = rollup | {"units": 0, "source_offset": 100 + offset}  # exposed again later: no unit
            rollups += [rollup, rollup, again]
        row = {
            "org_id": "acme", "project_id": "web", "env": "production", "experiment_id": experiment,
            "variant_id": unit.variant, "unit_key": unit.key, "first_exposed_at": unit.exposed and ms(unit.exposed),
            "conversions": {"purchase": ms(T0)} if unit.exposed is None else dict.fromkeys(unit.counts, ms(T0)),
            # the first of the conversions, as the worker writes it
            "converted_at": ms(T0) if unit.exposed is None or unit.counts else None,
            "variants_seen": unit.seen,
            "event_counts": unit.counts, "event_values": unit.values, "version": 10,
        }  # fmt: skip
        stale = row | {"event_counts": {"purchase": 99}, "event_values": {"purchase": 1e6}, "version": 9}
        rows += [stale, row]  # an older version of each unit: FINAL must keep the newer
        for n, (moment, value) in enumerate(unit.pre):
            properties = {"value": value} if n % 2 == 0 else {"order_total": value}
            event = {
                "org_id": "acme", "project_id": "web", "env": "production", "message_id": f"{unit.key}-{n}",
                "family": "traffical", "type": "track", "event": "purchase", "unit_key": unit.key,
                "timestamp": ms(moment), "received_at": ms(moment), "context": "{}", "traits": "{}",
                "properties": msgspec.json.encode(properties).decode(),
            }  # fmt: skip
            events += [event, event]  # a replayed copy: counted once
    warehouse.insert_json("experiment_units", msgspec.json.encode(rows))
    warehouse.insert_json("events", msgspec.json.encode(events))
    for row in rollups:  # one insert each: rows of one insert block are not deduplicated by the window
        warehouse.insert_json("rollups_1m", msgspec.json.encode([row]))


def truth(kind: str, cuped: bool, variant: str) -> VariantSums:
    """The sums computed from ``UNITS``: x as the metric defines it, d the ratio's denominator or
    the covariate (the metric over the purchases in the 14 days before first exposure)."""
    xs: list[tuple[float, float]] = []
    multi = 0
    for unit in UNITS:
        if unit.variant != variant or unit.exposed is None:
            continue
        pre = [v for t, v in unit.pre if unit.exposed - WINDOW <= t < unit.exposed]
        count, value = unit.counts.get("purchase", 0), unit.values.get("purchase", 0.0)
        x = {"conversion": float(count > 0), "mean": value, "count": float(count), "ratio": value}[kind]
        d = {"conversion": float(bool(pre)), "mean": sum(pre), "count": float(len(pre)), "ratio": float(count)}[kind]
        xs.append((x, d if (cuped or kind == "ratio") else 0.0))
        multi += unit.seen > 1
    return VariantSums(
        variant, len(xs), sum(x for x, _ in xs), sum(x * x for x, _ in xs), sum(d for _, d in xs),
        sum(d * d for _, d in xs), sum(x * d for x, d in xs), multi,
    )  # fmt: skip


@pytest.mark.parametrize("kind", ["conversion", "mean", "count", "ratio"])
@pytest.mark.parametrize("cuped", [False, True])
def test_the_sums_and_the_result_equal_those_computed_from_the_rows(
    warehouse: Warehouse, kind: str, cuped: bool
) -> None:
    fill(warehouse)
    request = Request(Metric("purchase", kind), cuped=cuped)  # type: ignore[arg-type]
    card = scorecard(warehouse, "acme", "exp", request)
    assert card is not None
    control, treatment = truth(kind, cuped, "control"), truth(kind, cuped, "treatment")
    expected = analyze(control, [treatment], Options(kind=kind, cuped=cuped))  # type: ignore[arg-type]
    assert [(v.variant, v.units) for v in card.variants] == [("control", control.n), ("treatment", treatment.n)]
    assert [v.sum for v in card.variants] == pytest.approx([control.sum, treatment.sum])
    got, want = card.variants[1], expected.variants[1]
    assert got.mean == pytest.approx(want.mean) and got.variance == pytest.approx(want.variance)
    assert got.ci_abs == pytest.approx(want.ci_abs) and got.p_value == pytest.approx(want.p_value)
    assert card.cuped == (cuped and kind != "ratio")
    assert (card.multiple_exposure_units, card.unexposed_units_with_tracks) == (1, 1)
    assert card.timeline[-1].units == control.n + treatment.n
    assert [p.units for p in card.timeline] == sorted(p.units for p in card.timeline)


def test_any_event_and_a_second_event_as_denominator(warehouse: Warehouse) -> None:
    fill(warehouse)
    anything = scorecard(warehouse, "acme", "exp", Request(Metric("", "count"), cuped=False))
    assert anything is not None
    assert [v.sum for v in anything.variants] == [4.0, 6.0]  # purchases and signups after exposure
    per_signup = scorecard(warehouse, "acme", "exp", Request(Metric("purchase", "ratio", "signup")))
    assert per_signup is not None and per_signup.metric == "ratio:purchase/signup"
    assert per_signup.variants[0].mean == pytest.approx(35.0 / 1)  # control: 35 of purchases over 1 signup


def test_defaults_declared_weights_and_the_table(warehouse: Warehouse) -> None:
    fill(warehouse)
    assert scorecard(warehouse, "acme", "nothing", Request()) is None
    mean = scorecard(warehouse, "acme", "exp", Request(Metric("purchase", "mean")))
    assert mean is not None and mean.cuped and mean.sequential and mean.variance_reduction is not None
    skewed = Declared(weights={"control": 1.0, "treatment": 99.0}, control="treatment")
    card = scorecard(warehouse, "acme", "exp", Request(Metric("purchase")), skewed)
    assert card is not None and card.control == "treatment" and card.variants[0].variant == "treatment"
    assert card.srm_mismatch and card.weights == {"control": 1.0, "treatment": 99.0}
    table = render_table(card)
    assert "MISMATCH" in table and "treatment (control)" in table and "declared weights" in table


def test_the_tally_columns_reach_a_clusters_distributed_tables_too() -> None:
    from pipeline.warehouse import migrations
    from pipeline.warehouse.cluster import for_cluster

    [(_, _, statements)] = [m for m in migrations() if m[1] == "0005_unit_tallies.sql"]
    alters = [part for s in statements for part in for_cluster(s, "c") if part.startswith("ALTER")]
    assert [a.split(" ADD COLUMN")[0] for a in alters] == [
        "ALTER TABLE experiment_units_local ON CLUSTER c", "ALTER TABLE experiment_units ON CLUSTER c",
    ] * 2  # fmt: skip


def _cuped_d_sum(warehouse: Warehouse, kind: str) -> list[float]:
    from pipeline.results.sql import sums

    parameters: dict[str, str | int | float] = {
        "org": "acme", "experiment": "exp", "event": "purchase", "denominator": "", "value_property": "order_total",
        "first": int(T0.timestamp() * 1000), "width": 3_600_000, "last_bucket": 19,
        "window_ms": int(WINDOW / timedelta(milliseconds=1)),
        "pre_from": int((T0 - WINDOW - timedelta(days=1)).timestamp() * 1000),
        "pre_to": int((T0 + timedelta(hours=6)).timestamp() * 1000),
    }  # fmt: skip
    out = warehouse.execute(sums(kind, True), "JSONEachRow", parameters=parameters)  # type: ignore[arg-type]
    per: dict[str, float] = {}
    for line in out.splitlines():
        row = msgspec.json.decode(line)
        if int(row["bucket"]) >= 0:
            per[row["variant"]] = per.get(row["variant"], 0.0) + float(row["d_sum"])
    return [per.get("control", 0.0), per.get("treatment", 0.0)]


def test_a_late_track_in_a_units_window_counts_once_replayed_or_not(warehouse: Warehouse) -> None:
    """A track that reaches the warehouse after the unit's first exposure (a late SDK flush) but
    whose time is in its pre-window is in the covariate at the next read; its replayed copies
    (the same message again) add nothing."""
    fill(warehouse)
    before = _cuped_d_sum(warehouse, "mean")
    late = {
        "org_id": "acme", "project_id": "web", "env": "production", "message_id": "late-1", "family": "traffical",
        "type": "track", "event": "purchase", "unit_key": "b3", "timestamp": ms(T0 + timedelta(hours=4)),
        "received_at": ms(T0 + timedelta(days=2)), "context": "{}", "traits": "{}",
        "properties": '{"order_total": 11.5}',
    }  # fmt: skip
    for _ in range(3):  # the record, then two replays of it
        warehouse.insert_json("events", msgspec.json.encode([late]))
        assert _cuped_d_sum(warehouse, "mean") == pytest.approx([before[0], before[1] + 11.5])


def test_the_covariate_reads_the_workers_value_and_skips_tracks_it_marked_post_exposure(warehouse: Warehouse) -> None:
    """Rows the worker wrote carry ``value`` (whatever property it came from, here none the default
    names) and ``post_exposure``; a marked track is skipped even where its time alone would put it
    in the window — the mark is the worker's knowledge that it came after the first exposure."""
    fill(warehouse)
    before = _cuped_d_sum(warehouse, "mean")
    base = {
        "org_id": "acme", "project_id": "web", "env": "production", "family": "traffical", "type": "track",
        "event": "purchase", "unit_key": "b3", "timestamp": ms(T0 + timedelta(hours=1)),
        "received_at": ms(T0 + timedelta(hours=1)), "context": "{}", "traits": "{}", "properties": '{"price": 3}',
    }  # fmt: skip
    counted = base | {"message_id": "w-1", "value": 6.25}
    marked = base | {"message_id": "w-2", "value": 100.0, "post_exposure": ["exp"]}
    elsewhere = base | {"message_id": "w-3", "value": 1.5, "post_exposure": ["another"]}
    warehouse.insert_json("events", msgspec.json.encode([counted, marked, elsewhere]))
    assert _cuped_d_sum(warehouse, "mean") == pytest.approx([before[0], before[1] + 6.25 + 1.5])


def test_the_track_value_columns_reach_a_clusters_distributed_tables_too() -> None:
    from pipeline.warehouse import migrations
    from pipeline.warehouse.cluster import for_cluster

    [(_, _, statements)] = [m for m in migrations() if m[1] == "0006_track_values.sql"]
    alters = [part for s in statements for part in for_cluster(s, "c") if part.startswith("ALTER")]
    assert [a.split(" ADD COLUMN")[0] for a in alters] == [
        "ALTER TABLE events_local ON CLUSTER c",
        "ALTER TABLE events ON CLUSTER c",
    ] * 2


def test_each_point_over_time_counts_the_units_and_their_sums_in_the_same_buckets(warehouse: Warehouse) -> None:
    """n comes from the exposure rollups (by minute), the sums from each unit's first exposure (to the
    millisecond): the buckets are whole minutes, so a unit is in the same point in both. Here every
    unit converted, so each point's rate is 1 — with buckets of 90 s (30 minutes over 20 points) a
    unit exposed at 1:50 was in the first point's n and the second point's sums."""
    rows, rollups = [], []
    for i in range(30):
        exposed = T0 + timedelta(minutes=i, seconds=50)
        variant = ("control", "treatment")[i % 2]
        rows.append({
            "org_id": "acme", "project_id": "web", "env": "production", "experiment_id": "edges",
            "variant_id": variant, "unit_key": f"e{i}", "first_exposed_at": ms(exposed),
            "conversions": {"purchase": ms(exposed)}, "converted_at": ms(exposed), "variants_seen": 1,
            "event_counts": {"purchase": 1}, "event_values": {"purchase": 1.0}, "version": 1,
        })  # fmt: skip
        rollups.append({
            "org_id": "acme", "project_id": "web", "env": "production", "kind": "exposure",
            "experiment_id": "edges", "variant_id": variant, "event": "exposure",
            "minute": exposed.strftime("%Y-%m-%d %H:%M:00"), "count": 1, "units": 1,
            "source_topic": "t", "source_partition": 0, "source_offset": i,
        })  # fmt: skip
    warehouse.insert_json("experiment_units", msgspec.json.encode(rows))
    warehouse.insert_json("rollups_1m", msgspec.json.encode(rollups))
    card = scorecard(warehouse, "acme", "edges", Request(Metric("purchase"), cuped=False))
    assert card is not None and card.timeline[-1].units == 30 and len(card.timeline) > 10
    for point in card.timeline:
        assert [v.mean for v in point.variants if v.units] == [1.0] * len([v for v in point.variants if v.units])
    assert all(p.until.second == 0 and p.until.microsecond == 0 for p in card.timeline)


def test_a_span_without_an_exposed_unit_is_no_result(warehouse: Warehouse) -> None:
    """The span comes from the rollups without FINAL; a unit's row replaced by a no-unit version
    of the same record (not merged yet) leaves a span and no unit: no result, not an IndexError."""
    row = {
        "org_id": "acme", "project_id": "web", "env": "production", "kind": "exposure", "experiment_id": "ghost",
        "variant_id": "control", "event": "exposure", "minute": "2026-05-01 12:00:00", "count": 1, "units": 1,
        "source_topic": "t", "source_partition": 0, "source_offset": 1,
    }  # fmt: skip
    warehouse.insert_json("rollups_1m", msgspec.json.encode([row]))
    warehouse.insert_json("rollups_1m", msgspec.json.encode([row | {"units": 0}]))
    assert scorecard(warehouse, "acme", "ghost", Request(Metric("purchase"))) is None
