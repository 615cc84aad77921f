"""What a live experiment feeds the statistics on its bad days: a variant the declared split does
not name, a purchase worth 1e80, sums the warehouse could not hold, an α no interval is made for,
and CUPED with a covariate that is the outcome itself. Each gives a result or a stated error,
never an exception (an exception is a 500 from the results endpoint and a traceback in the CLI)."""

from __future__ import annotations

import argparse
import math
from typing import Any

import msgspec
import pytest

from commands.resultscli import add_results_commands
from pipeline.results.declared import Declared
from pipeline.results.metric import Metric
from pipeline.results.page import results_page
from pipeline.scorecard import Request, build, merged, render_table
from pipeline.stats import Options, VariantSums, analyze
from pipeline.stats.inference import NOT_FINITE
from pipeline.stats.srm import srm_p_value


def mean_row(variant: str, bucket: int, values: list[float]) -> dict[str, Any]:
    """The sums query's row for units with these values (mean kind, no covariate)."""
    return {"variant": variant, "bucket": bucket, "n": len(values), "sum": sum(values),
            "sum_squares": sum(v * v for v in values)}  # fmt: skip


def test_a_variant_outside_the_declared_split_that_appears_later_is_a_mismatch_not_a_crash() -> None:
    # at the first bucket 'stray' has no units yet: SRM is taken over control and green only
    assert srm_p_value({"control": 500, "green": 500, "stray": 0}, {"control": 1, "green": 1}) == pytest.approx(1.0)
    rows = [
        {"variant": "control", "bucket": 0, "n": 500, "sum": 50.0, "sum_squares": 50.0},
        {"variant": "green", "bucket": 0, "n": 500, "sum": 60.0, "sum_squares": 60.0},
        {"variant": "stray", "bucket": 1, "n": 20, "sum": 2.0, "sum_squares": 2.0},
    ]
    declared = Declared(weights={"control": 1.0, "green": 1.0})
    card = build("acme", "exp", Request(Metric("purchase")), declared, merged(rows), 0, 0, 1000)
    assert [v.variant for v in card.variants] == ["control", "green", "stray"]
    assert card.srm_p_value == 0.0 and card.srm_mismatch  # units where none were declared
    assert card.timeline[0].variants[1].lift_abs is not None


@pytest.mark.parametrize("sequential", [True, False])
def test_a_huge_value_gives_a_result_or_says_it_is_too_large(sequential: bool) -> None:
    control = [1e80] + [5.0] * 99  # one purchase of 1e80: its square, 1e160, is still a double
    treatment = [5.0 + i % 3 for i in range(100)]
    rows = [mean_row("control", 0, control), mean_row("treatment", 0, treatment)]
    request = Request(Metric("purchase", "mean"), sequential=sequential, cuped=False)
    card = build("acme", "exp", request, Declared(), merged(rows), 0, 0, 1000)
    result = card.variants[1]
    assert result.error is None and result.lift_abs == pytest.approx(sum(treatment) / 100 - 1e78)
    assert result.ci_abs is not None and result.p_value is not None and result.lift_abs is not None
    low, high = result.ci_abs
    assert low < result.lift_abs < high and 0.0 < result.p_value <= 1.0
    # 1e200: the sum of squares overflows to inf; no numbers, and the reason
    rows = [mean_row("control", 0, [1e200] + [5.0] * 99), mean_row("treatment", 0, treatment)]
    card = build("acme", "exp", request, Declared(), merged(rows), 0, 0, 1000)
    assert card.variants[1].error == NOT_FINITE and card.variants[1].lift_abs is None
    assert NOT_FINITE in render_table(card)
    results_page("acme", "exp", [card], {})  # the page draws it


def test_a_sum_the_warehouse_could_not_hold_comes_as_null_and_reads_as_too_large() -> None:
    # ClickHouse writes an overflowed Float64 sum (inf) in JSON as null
    rows = merged([
        {"variant": "control", "bucket": 0, "n": 100, "sum": 500.0, "sum_squares": 3000.0},
        {"variant": "treatment", "bucket": 0, "n": 100, "sum": 1e300, "sum_squares": None},
    ])  # fmt: skip
    assert math.isnan(rows[1]["sum_squares"])
    request = Request(Metric("purchase", "mean"), cuped=False)
    card = build("acme", "exp", request, Declared(), rows, 0, 0, 1000)
    assert card.variants[1].error == NOT_FINITE and card.variants[1].p_value is None
    decoded = msgspec.json.decode(msgspec.json.encode(card))  # valid JSON: NaN is written as null
    assert decoded["variants"][1]["variance"] is None


@pytest.mark.parametrize("alpha", [0.0, 1.0, 1.5, -0.05, 1e-17, math.nan])
def test_an_alpha_no_interval_is_made_for_is_refused_by_name(alpha: float) -> None:
    with pytest.raises(ValueError, match="alpha must be"):
        Options(alpha=alpha)
    with pytest.raises(ValueError, match="alpha must be"):
        Request(Metric("purchase"), alpha=alpha)
    parser = argparse.ArgumentParser()
    add_results_commands(parser.add_subparsers(dest="command"))
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["results", "exp", "--org", "acme", "--alpha", str(alpha)])
    assert exited.value.code == 2


def test_the_intervals_level_is_written_as_people_write_it() -> None:
    rows = merged([
        {"variant": "control", "bucket": 0, "n": 1000, "sum": 120.0, "sum_squares": 120.0},
        {"variant": "treatment", "bucket": 0, "n": 1010, "sum": 150.0, "sum_squares": 150.0},
    ])  # fmt: skip
    for alpha, level in ((0.05, "95%"), (0.001, "99.9%"), (0.1, "90%")):
        card = build("acme", "exp", Request(Metric("purchase"), alpha=alpha), Declared(), rows, 0, 0, 1000)
        page = results_page("acme", "exp", [card], {})
        assert f"{level} intervals" in render_table(card) and f"{level} intervals" in page
        assert card.variants[1].ci_abs is not None
        low, high = card.variants[1].ci_abs
        assert low < high


def test_cuped_that_leaves_no_variance_reports_no_reduction() -> None:
    # the covariate is the outcome itself: θ ≈ 1 and the adjusted variances are ≤ 0 (a proportion's
    # variance divides by n, the covariance by n − 1); gbstats refuses the comparison as well
    control = VariantSums("control", 100, 30, 30, 30, 30, 30)
    treatment = VariantSums("treatment", 100, 40, 40, 40, 40, 40)
    result = analyze(control, [treatment], Options(kind="conversion", cuped=True))
    assert result.theta == pytest.approx(1.0, abs=0.01)
    assert result.variance_reduction is None
    assert result.variants[1].error is not None and result.variants[1].lift_abs is None


def test_the_page_colours_by_the_absolute_change_when_the_control_mean_is_negative() -> None:
    # net revenue after refunds: the control loses 10 a unit, the treatment 8 — better, though the
    # relative lift over a negative mean is negative
    control = [-10.0 + (i % 5) for i in range(2000)]
    treatment = [-8.0 + (i % 5) for i in range(2000)]
    rows = merged([mean_row("control", 0, control), mean_row("treatment", 0, treatment)])
    card = build("acme", "exp", Request(Metric("purchase", "mean"), cuped=False), Declared(), rows, 0, 0, 1000)
    result = card.variants[1]
    assert result.ci_abs is not None and result.ci_rel is not None
    assert result.ci_abs[0] > 0 and result.ci_rel[1] < 0
    page = results_page("acme", "exp", [card], {})
    bar = page[page.index("data-variant='treatment'") :]
    assert "fill='#1e6b34'" in bar[: bar.index("</g>")]  # green: better
