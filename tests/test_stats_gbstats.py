"""GrowthBook's gbstats 0.8.0 as the oracle for pipeline.stats (issue 23).

On the same sufficient statistics, for every kind (conversion → ProportionStatistic, mean and
count → SampleMeanStatistic, ratio → RatioStatistic, CUPED → RegressionAdjustedStatistic),
sequential (SequentialTwoSidedTTest) and fixed (TwoSidedTTest), with and without CUPED, absolute
and relative: Sluice's lifts, interval bounds and p-values agree within 1e-6 relative.

Tolerances: 1e-6 of the value; an interval bound is compared to 1e-9 of the interval's
half-width besides (a bound near 0 is a difference of two nearly equal numbers), and a p-value
to 1e-12 absolute besides (gbstats computes 2·(1 − cdf), which cannot resolve p below ~1e-15).

Where Sluice deliberately differs, the test below says so:
- θ is pooled over *all* variants (issue 23: one θ per experiment), gbstats pools the two
  variants of each pairwise test: the same with two variants; with three, the oracle is given
  Sluice's θ (test_three_variants_pool_theta_over_all_of_them).
- ``cuped`` is ignored for ratio metrics (gbstats 0.8.0 has no regression-adjusted ratio either).
- On an invalid comparison gbstats returns zeros and p = 1 with an error message; Sluice returns
  no numbers (None) and its own message (test_invalid_comparisons_match_gbstats_errors).
- SRM: a variant with units but no declared weight is a certain mismatch (p = 0); gbstats skips
  it (test_srm_*).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
from gbstats.frequentist.tests import (
    FrequentistConfig,
    SequentialConfig,
    SequentialTwoSidedTTest,
    TwoSidedTTest,
)
from gbstats.models.statistics import (
    ProportionStatistic,
    RatioStatistic,
    RegressionAdjustedStatistic,
    SampleMeanStatistic,
)
from gbstats.utils import check_srm
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.stats import KINDS, Analysis, Kind, Options, VariantResult, VariantSums, analyze, inference, srm_p_value
from pipeline.stats.statistics import Statistic, build, pooled_theta, regression_adjusted

REL = 1e-6


# -- the oracle -----------------------------------------------------------------------------------


def gb_plain(s: VariantSums, kind: Kind) -> Any:
    if kind == "conversion":
        return ProportionStatistic(n=s.n, sum=s.sum)
    if kind == "ratio":
        return RatioStatistic(
            n=s.n,
            m_statistic=SampleMeanStatistic(n=s.n, sum=s.sum, sum_squares=s.sum_squares),
            d_statistic=SampleMeanStatistic(n=s.n, sum=s.d_sum, sum_squares=s.d_sum_squares),
            m_d_sum_of_products=s.sum_of_products,
        )
    return SampleMeanStatistic(n=s.n, sum=s.sum, sum_squares=s.sum_squares)


def gb_adjusted(s: VariantSums, kind: Kind, theta: float = 0.0) -> Any:
    if kind == "conversion":
        post: Any = ProportionStatistic(n=s.n, sum=s.sum)
        pre: Any = ProportionStatistic(n=s.n, sum=s.d_sum)
    else:
        post = SampleMeanStatistic(n=s.n, sum=s.sum, sum_squares=s.sum_squares)
        pre = SampleMeanStatistic(n=s.n, sum=s.d_sum, sum_squares=s.d_sum_squares)
    return RegressionAdjustedStatistic(
        n=s.n, post_statistic=post, pre_statistic=pre, post_pre_sum_of_products=s.sum_of_products, theta=theta
    )


def gb_test(a: VariantSums, b: VariantSums, options: Options, relative: bool, theta: float | None = None) -> Any:
    """gbstats' test of ``b`` against ``a``; ``theta`` overrides gbstats' pairwise θ."""
    cuped = options.cuped and options.kind != "ratio"

    def make(s: VariantSums) -> Any:
        return gb_adjusted(s, options.kind) if cuped else gb_plain(s, options.kind)

    difference = "relative" if relative else "absolute"
    test: Any
    if options.sequential:
        config = SequentialConfig(
            difference_type=difference, alpha=options.alpha, sequential_tuning_parameter=options.tuning
        )
        test = SequentialTwoSidedTTest(make(a), make(b), config)
    else:
        test = TwoSidedTTest(make(a), make(b), FrequentistConfig(difference_type=difference, alpha=options.alpha))
    if theta is not None:
        test.stat_a, test.stat_b = gb_adjusted(a, options.kind, theta), gb_adjusted(b, options.kind, theta)
    return test


# -- comparing ------------------------------------------------------------------------------------


def same(ours: float | None, theirs: float, abs_tol: float = 0.0) -> bool:
    return ours is not None and math.isclose(ours, float(theirs), rel_tol=REL, abs_tol=abs_tol)


def same_interval(ours: tuple[float, float] | None, theirs: list[float]) -> bool:
    assert ours is not None
    half = abs(float(theirs[1]) - float(theirs[0])) / 2
    return all(same(o, t, 1e-9 * half) for o, t in zip(ours, theirs, strict=True))


def sluice_stats(everyone: list[VariantSums], options: Options, theta: float | None) -> list[Statistic]:
    if theta is None:
        return [build(s, options.kind) for s in everyone]
    return [regression_adjusted(s, options.kind, theta) for s in everyone]


def assert_matches(
    control: VariantSums, treatments: list[VariantSums], options: Options, *, pairwise_theta: bool = True
) -> Analysis:
    """Every number of ``analyze`` against gbstats' (θ: gbstats' own unless ``pairwise_theta`` is off)."""
    result = analyze(control, treatments, options)
    theta_override = None if pairwise_theta else result.theta
    stats = sluice_stats([control, *treatments], options, result.theta)
    for b_sums, b_stat, ours in zip(treatments, stats[1:], result.variants[1:], strict=True):
        absolute = gb_test(control, b_sums, options, False, theta_override)
        relative = gb_test(control, b_sums, options, True, theta_override)
        abs_out, rel_out = absolute.compute_result(), relative.compute_result()
        case = (control, b_sums, options, abs_out, rel_out, ours)
        if abs_out.error_message is not None:
            assert ours.error is not None and ours.lift_abs is None and ours.p_value is None, case
            assert rel_out.error_message is not None, case
            continue
        assert ours.error is None, case
        # the per-variant statistic gbstats compared (θ set by its constructor)
        assert same(ours.mean, absolute.stat_b.mean, 1e-15) and same(ours.variance, absolute.stat_b.variance), case
        assert same(result.variants[0].mean, absolute.stat_a.mean, 1e-15), case
        assert same(ours.lift_abs, abs_out.expected, 1e-15), case
        assert same(ours.lift_rel, rel_out.expected, 1e-15), case
        assert same_interval(ours.ci_abs, abs_out.ci), case
        assert same_interval(ours.ci_rel, rel_out.ci), case
        assert same(ours.p_value, abs_out.p_value, 1e-12), case
        # the interval and the p-value are dual: the interval excludes 0 exactly when p < α
        assert ours.ci_abs is not None and ours.p_value is not None
        if abs(ours.p_value - options.alpha) > 1e-9:
            assert (ours.ci_abs[0] > 0 or ours.ci_abs[1] < 0) == (ours.p_value < options.alpha), case
        # the relative test's p-value (analyze reports the absolute one's)
        a_stat = stats[0]
        if options.sequential:
            ours_rel = inference.sequential(a_stat, b_stat, relative=True, alpha=options.alpha, tuning=options.tuning)
        else:
            ours_rel = inference.fixed(a_stat, b_stat, relative=True, alpha=options.alpha)
        assert same(ours_rel.p_value, rel_out.p_value, 1e-12), case
    return result


# -- generated cases --------------------------------------------------------------------------------


def simulate(rng: np.random.Generator, kind: Kind, variant: str, n: int, effect: float) -> VariantSums:
    """One variant's sums from per-unit draws: x the metric, d its denominator or pre-period covariate."""
    if kind == "conversion":
        d = (rng.random(n) < 0.3).astype(float)
        x = (rng.random(n) < 0.1 + 0.3 * d + effect).astype(float)
    elif kind == "count":
        d = rng.poisson(2.0, n).astype(float)
        x = rng.poisson(1.0 + 0.5 * d + effect).astype(float)
    elif kind == "mean":
        d = rng.lognormal(2.0, 1.0, n) * (rng.random(n) < 0.4)
        x = (0.6 * d + rng.lognormal(2.0, 1.0, n)) * (rng.random(n) < 0.5 + effect)
    else:  # ratio: value of purchases over their number
        d = rng.poisson(1.5, n).astype(float)
        x = np.array([rng.gamma(2.0, 10.0 * (1 + effect), int(k)).sum() for k in d])
    return VariantSums(
        variant,
        n,
        float(x.sum()),
        float((x * x).sum()),
        float(d.sum()),
        float((d * d).sum()),
        float((x * d).sum()),
    )


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("sequential", [True, False], ids=["sequential", "fixed"])
@pytest.mark.parametrize("cuped", [False, True], ids=["plain", "cuped"])
def test_seeded_experiments_match_gbstats(kind: Kind, sequential: bool, cuped: bool) -> None:
    options = Options(kind=kind, sequential=sequential, cuped=cuped)
    for seed in range(25):
        rng = np.random.default_rng([seed, KINDS.index(kind)])
        n_a, n_b = (int(v) for v in rng.integers(20, 3000, 2))
        effect = float(rng.choice([0.0, 0.02, 0.1]))
        result = assert_matches(simulate(rng, kind, "a", n_a, 0.0), [simulate(rng, kind, "b", n_b, effect)], options)
        assert result.cuped == (cuped and kind != "ratio")
        if result.cuped:
            assert result.theta is not None and result.variance_reduction is not None


@pytest.mark.parametrize("alpha", [0.01, 0.1])
@pytest.mark.parametrize("tuning", [500.0, 5000.0, 100_000.0])
def test_alpha_and_tuning_are_passed_through(alpha: float, tuning: float) -> None:
    rng = np.random.default_rng(7)
    for kind in KINDS:
        a, b = simulate(rng, kind, "a", 1500, 0.0), simulate(rng, kind, "b", 1400, 0.05)
        for sequential in (True, False):
            assert_matches(a, [b], Options(kind=kind, sequential=sequential, cuped=True, alpha=alpha, tuning=tuning))


# Small integer data (exact sums), so hypothesis reaches the edges: n of 0 to 2, all values equal,
# a control mean of 0, a zero denominator
units = st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5)), min_size=0, max_size=25)


def sums_of(variant: str, rows: list[tuple[int, int]], kind: Kind) -> VariantSums:
    if kind == "conversion":
        rows = [(min(x, 1), min(d, 1)) for x, d in rows]
    xs, ds = [float(x) for x, _ in rows], [float(d) for _, d in rows]
    return VariantSums(
        variant,
        len(rows),
        sum(xs),
        sum(x * x for x in xs),
        sum(ds),
        sum(d * d for d in ds),
        sum(x * d for x, d in zip(xs, ds, strict=True)),
    )


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    control=units,
    treatment=units,
    kind=st.sampled_from(KINDS),
    sequential=st.booleans(),
    cuped=st.booleans(),
)
def test_small_samples_match_gbstats_including_its_errors(
    control: list[tuple[int, int]], treatment: list[tuple[int, int]], kind: Kind, sequential: bool, cuped: bool
) -> None:
    options = Options(kind=kind, sequential=sequential, cuped=cuped)
    assert_matches(sums_of("a", control, kind), [sums_of("b", treatment, kind)], options)


# -- hand cases -----------------------------------------------------------------------------------


def test_a_conversion_by_hand() -> None:
    """12.0 % of 1,000 against 14.85 % of 1,010: numbers checked against gbstats and by hand."""
    a, b = VariantSums("control", 1000, 120, 120), VariantSums("green", 1010, 150, 150)
    fixed = assert_matches(a, [b], Options(sequential=False)).variants[1]
    assert fixed.lift_abs == pytest.approx(150 / 1010 - 0.12)
    assert fixed.lift_rel == pytest.approx((150 / 1010 - 0.12) / 0.12)
    assert fixed.p_value == pytest.approx(0.06067388101, rel=1e-9)
    sequential = assert_matches(a, [b], Options()).variants[1]
    assert sequential.p_value == pytest.approx(0.53543127441, rel=1e-9)
    assert sequential.ci_abs is not None and fixed.ci_abs is not None
    assert sequential.ci_abs[0] < fixed.ci_abs[0] and sequential.ci_abs[1] > fixed.ci_abs[1]


def test_invalid_comparisons_match_gbstats_errors() -> None:
    """gbstats answers 0, [0, 0], p = 1 with a message; Sluice leaves the numbers out (None)."""
    cases = {
        "zero control mean": (VariantSums("a", 100, 0, 0), VariantSums("b", 100, 5, 5)),
        "one unit": (VariantSums("a", 1, 1, 1), VariantSums("b", 100, 5, 5)),
        "all equal": (VariantSums("a", 50, 50, 50), VariantSums("b", 100, 5, 5)),
    }
    for name, (a, b) in cases.items():
        for sequential in (True, False):
            result = assert_matches(a, [b], Options(kind="conversion", sequential=sequential))
            treated = result.variants[1]
            assert treated.error is not None and treated.error.startswith("not enough data"), name
            assert (treated.lift_abs, treated.ci_abs, treated.p_value) == (None, None, None)
            gb = gb_test(a, b, Options(kind="conversion", sequential=sequential), False).compute_result()
            assert (gb.expected, list(gb.ci), gb.p_value) == (0, [0, 0], 1) and gb.error_message
    no_orders = VariantSums("a", 10, 0.0, 0.0, 0.0, 0.0, 0.0)
    ratio = assert_matches(no_orders, [VariantSums("b", 10, 30.0, 200.0, 3.0, 3.0, 30.0)], Options(kind="ratio"))
    assert ratio.variants[0].mean == 0.0 and ratio.variants[1].error is not None


def test_ratio_ignores_cuped() -> None:
    rng = np.random.default_rng(3)
    a, b = simulate(rng, "ratio", "a", 800, 0.0), simulate(rng, "ratio", "b", 900, 0.1)
    with_cuped = analyze(a, [b], Options(kind="ratio", cuped=True))
    assert not with_cuped.cuped and with_cuped.theta is None and with_cuped.variance_reduction is None
    assert with_cuped.variants == analyze(a, [b], Options(kind="ratio", cuped=False)).variants


def test_three_variants_pool_theta_over_all_of_them() -> None:
    """Deliberate difference: one θ from all variants' units (gbstats: from each pair's).

    Each treatment's numbers equal gbstats' once gbstats is given that θ, and differ from
    gbstats' pairwise θ when the pairs' covariances differ.
    """
    rng = np.random.default_rng(11)
    a, b, c = (simulate(rng, "mean", v, 2000, e) for v, e in (("a", 0.0), ("b", 0.05), ("c", 0.2)))
    for sequential in (True, False):
        options = Options(kind="mean", cuped=True, sequential=sequential)
        result = assert_matches(a, [b, c], options, pairwise_theta=False)
        assert result.theta == pytest.approx(pooled_theta([a, b, c], "mean"), rel=1e-15)
        pairwise = gb_test(a, c, options, False)  # gbstats sets θ from a and c only
        assert pairwise.stat_a.theta != pytest.approx(result.theta, rel=1e-6)
    two = analyze(a, [b], Options(kind="mean", cuped=True))
    assert two.theta == pytest.approx(gb_test(a, b, Options(kind="mean", cuped=True), False).stat_a.theta, rel=1e-12)


def results_by_variant(result: Analysis) -> dict[str, VariantResult]:
    return {v.variant: v for v in result.variants}


def test_srm_matches_gbstats_check_srm() -> None:
    for units, weights in [
        ({"a": 1000, "b": 1000}, None),
        ({"a": 1000, "b": 1100}, None),
        ({"a": 5000, "b": 5100, "c": 4800}, None),
        ({"a": 9000, "b": 1000}, {"a": 0.9, "b": 0.1}),
        ({"a": 5000, "b": 5000}, {"a": 0.9, "b": 0.1}),
        ({"a": 700, "b": 650, "c": 1400}, {"a": 1.0, "b": 1.0, "c": 2.0}),
    ]:
        order = sorted(units)
        declared = weights or dict.fromkeys(order, 1.0)
        want = float(check_srm([units[v] for v in order], [declared[v] for v in order]))
        assert srm_p_value(units, weights) == pytest.approx(want, rel=1e-9, abs=1e-300)
    result = analyze(VariantSums("a", 1000, 100, 100), [VariantSums("b", 1100, 100, 100)], Options())
    assert result.srm_p_value == pytest.approx(float(check_srm([1000, 1100], [1, 1])), rel=1e-9)
    assert results_by_variant(result)["b"].units == 1100


def test_srm_deliberate_differences() -> None:
    # a declared variant no unit reached counts with 0 units (as in gbstats when it is listed)
    assert srm_p_value({"a": 600, "b": 600}, {"a": 1, "b": 1, "c": 1}) == pytest.approx(
        float(check_srm([600, 600, 0], [1, 1, 1])), rel=1e-9, abs=1e-300
    )
    # units in a variant the configuration does not declare (or declares at 0): certain mismatch;
    # gbstats skips a zero-weight variant, hiding its units
    assert srm_p_value({"a": 600, "b": 600, "x": 3}, {"a": 1, "b": 1}) == 0.0
    assert srm_p_value({"a": 600, "b": 600, "x": 3}, {"a": 1, "b": 1, "x": 0}) == 0.0
    assert float(check_srm([600, 600, 3], [1, 1, 0])) > 0.5
    # nothing to test
    assert srm_p_value({"a": 10}) is None and srm_p_value({"a": 0, "b": 0}) is None


@pytest.mark.parametrize("kind", KINDS)
def test_ten_million_units_match_gbstats(kind: Kind) -> None:
    """The size issue 23 asks to answer in 2 s: ν near 1e7, where the t functions are hardest.

    Lifts of about 4.5 standard errors, so that both p-values are informative (neither 1 nor 0).
    """
    n_a, n_b = 5_000_000, 5_001_234
    k = n_b / n_a
    if kind == "conversion":
        a = VariantSums("a", n_a, 600_000, 600_000, 900_000, 900_000, 300_000)
        b = VariantSums("b", n_b, 604_800, 604_800, 900_100, 900_100, 302_000)
    else:  # per unit: mean 2.4, variance 12.24; covariate mean 0.6, variance 0.64; covariance 1.6
        a = VariantSums("a", n_a, 1.2e7, 9.0e7, 3.0e6, 5.0e6, 1.52e7)
        b = VariantSums("b", n_b, 1.2e7 * 1.0035 * k, 9.02e7 * k, 3.0e6 * k, 5.0e6 * k, 1.522e7 * k)
    for sequential in (True, False):
        for cuped in (False, True):
            result = assert_matches(a, [b], Options(kind=kind, sequential=sequential, cuped=cuped))
            p_value = result.variants[1].p_value
            assert p_value is not None and 1e-12 < p_value < 0.5, (kind, sequential, cuped, p_value)
