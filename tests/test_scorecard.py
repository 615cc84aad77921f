"""The scorecard from the sums query's rows (no warehouse): totals, the interval over time, health,
the control, the table and the JSON names scripts depend on."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from pipeline.results.declared import Declared
from pipeline.results.metric import Metric, MetricError, chosen, metric, parse
from pipeline.scorecard import Request, build, render_table
from pipeline.stats import Options, VariantSums, analyze


def row(variant: str, bucket: int, n: int, converted: int, **more: Any) -> dict[str, Any]:
    """A conversion row: x is 0/1, so Σx² = Σx."""
    return {"variant": variant, "bucket": bucket, "n": str(n), "sum": float(converted),
            "sum_squares": float(converted), "d_sum": 0.0, "d_sum_squares": 0.0, "sum_of_products": 0.0,
            "multi_exposed": "0", "unexposed_tracked": "0"} | more  # fmt: skip


ROWS = [
    row("control", 0, 400, 40), row("control", 1, 600, 60, multi_exposed="2"),
    row("treatment", 0, 500, 60), row("treatment", 1, 500, 70),
    row("treatment", -1, 7, 0, unexposed_tracked="3"),
]  # fmt: skip


def card_of(rows: list[dict[str, Any]], request: Request | None = None, declared: Declared | None = None) -> Any:
    return build("acme", "exp", request or Request(Metric("purchase")), declared or Declared(), rows, 5, 0, 1000)


def test_totals_are_the_buckets_summed_and_analysed_by_the_stats_core() -> None:
    card = card_of(ROWS)
    control, treatment = VariantSums("control", 1000, 100, 100), VariantSums("treatment", 1000, 130, 130)
    expected = analyze(control, [treatment], Options())
    assert [(v.variant, v.units, v.converted, v.exposed) for v in card.variants] == [
        ("control", 1000, 100, 1000), ("treatment", 1000, 130, 1000),
    ]  # fmt: skip
    assert card.variants[1].lift_abs == pytest.approx(0.03) and card.variants[1].lift_rel == pytest.approx(0.3)
    assert card.variants[1].ci_abs == pytest.approx(expected.variants[1].ci_abs)
    assert card.variants[0].lift_abs is None and card.variants[0].control
    assert (card.multiple_exposure_units, card.unexposed_units_with_tracks, card.unattributed_tracks) == (2, 3, 5)
    assert card.sequential and not card.cuped and card.srm_p_value == pytest.approx(1.0) and not card.srm_mismatch


def test_the_interval_over_time_is_the_result_at_each_buckets_end() -> None:
    card = card_of(ROWS)
    assert [p.units for p in card.timeline] == [900, 2000]
    first = analyze(VariantSums("control", 400, 40, 40), [VariantSums("treatment", 500, 60, 60)], Options())
    assert card.timeline[0].variants[1].ci_abs == pytest.approx(first.variants[1].ci_abs)
    assert card.timeline[0].until.timestamp() == 1.0  # origin 0, buckets 1000 ms wide
    low, high = card.timeline[0].variants[1].ci_abs
    low2, high2 = card.timeline[1].variants[1].ci_abs
    assert high2 - low2 < high - low  # the interval narrows as units arrive


def test_the_control_and_the_declared_weights() -> None:
    assert card_of([row("a", 0, 10, 1), row("b", 0, 10, 2)]).control == "a"
    assert card_of([row("a", 0, 10, 1), row("b", 0, 10, 2)], Request(control="b")).control == "b"
    skewed = card_of([row("control", 0, 5000, 1), row("treatment", 0, 5400, 2)])
    assert skewed.srm_mismatch and "MISMATCH" in render_table(skewed)
    declared = Declared(weights={"control": 50.0, "treatment": 54.0}, control="treatment")
    fair = card_of([row("control", 0, 5000, 1), row("treatment", 0, 5400, 2)], declared=declared)
    assert not fair.srm_mismatch and fair.control == "treatment" and fair.variants[0].variant == "treatment"


def test_the_json_has_the_names_scripts_depend_on() -> None:
    card = msgspec.json.decode(msgspec.json.encode(card_of(ROWS)))
    for name in ("experiment_id", "metric", "kind", "sequential", "cuped", "srm_p_value", "variants"):
        assert name in card
    assert card["metric"] == "conversion:purchase" and card["kind"] == "conversion"
    control, treatment = card["variants"]
    assert {"variant", "control", "units", "mean", "variance"} <= set(control) and control["control"] is True
    assert isinstance(treatment["ci_abs"], list) and len(treatment["ci_rel"]) == 2
    assert {"lift_abs", "lift_rel", "p_value"} <= set(treatment)


def test_the_table() -> None:
    table = render_table(card_of(ROWS, Request(Metric("purchase"), sequential=False)))
    assert "control (control)" in table and "fixed horizon" in table and "+30.0%" in table
    assert "sample ratio (equal weights): p = 1 (ok)" in table and "no exposure: 3" in table


def test_metrics_are_read_from_text_and_from_parts() -> None:
    assert parse("purchase") == Metric("purchase", "conversion")
    assert parse("mean:purchase") == Metric("purchase", "mean")
    assert parse("ratio:purchase/checkout") == Metric("purchase", "ratio", "checkout")
    assert parse("ratio:purchase").name == "ratio:purchase/purchase"
    assert parse("count:*").name == "count:*" and parse("count:*").event == ""
    assert metric("purchase", "ratio", "checkout") == Metric("purchase", "ratio", "checkout")
    assert metric("mean:purchase") == Metric("purchase", "mean")
    assert metric(None) == Metric()
    for bad in ("median:x", "mean:a/b"):
        with pytest.raises(MetricError):
            parse(bad)
    with pytest.raises(MetricError):
        metric("purchase", "count", "checkout")
    assert Request(Metric("x", "mean")).use_cuped and not Request(Metric("x")).use_cuped
    assert not Request(Metric("x", "count"), cuped=False).use_cuped


def test_the_metric_asked_for_then_a_kind_then_the_saved_ones() -> None:
    saved = (Metric("purchase", "mean"), Metric("purchase", "ratio", "checkout"))
    assert chosen("purchase", None, None, saved) == [Metric("purchase")]
    assert chosen("mean:purchase", "mean", None, saved) == [Metric("purchase", "mean")]  # the kind said twice
    assert chosen(None, "count", None, saved) == [Metric("", "count")]
    assert chosen(None, None, None, saved) == list(saved)
    assert chosen(None, None, None, ()) == [Metric()]
    assert chosen("Order: Completed", "count", None, ()) == [Metric("Order: Completed", "count")]  # not a kind
    with pytest.raises(MetricError, match="is a mean metric"):
        chosen("mean:purchase", "count", None, saved)
