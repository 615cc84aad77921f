"""The statistics behave as promised on simulated experiments (issue 23's proofs).

- Peeking is safe: A/A experiments read 20 times as units arrive. The sequential interval
  excludes 0 at some read in at most α of them (with binomial slack); the fixed-horizon interval,
  read the same 20 times, does so in far more than α (and in about α when read once, at the end).
- CUPED helps: with a pre-period covariate of correlation ρ, the variance of the estimate falls by
  about 1 − ρ², the variance reduction reported is about ρ², and the estimate stays unbiased.

Data are drawn per unit with a seeded numpy generator and reduced to the sums the warehouse
returns (cumulative sums at each read); every result comes from ``analyze``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from pipeline.stats import Kind, Options, VariantSums, analyze

ALPHA = 0.05
EXPERIMENTS = 500
READS = 20
UNITS_PER_READ = 100  # per arm: the last read sees 2,000 units per arm, 4,000 in all


def slack(rate: float, trials: int) -> float:
    """Three binomial standard errors."""
    return 3.0 * math.sqrt(rate * (1.0 - rate) / trials)


def draw(rng: np.random.Generator, kind: Kind, shape: tuple[int, ...]) -> np.ndarray:
    if kind == "conversion":
        return (rng.random(shape) < 0.1).astype(float)
    return rng.exponential(10.0, shape)  # a skewed value per unit, the same law in both arms


def any_read_significant(kind: Kind, sequential: bool, sums: np.ndarray, squares: np.ndarray) -> np.ndarray:
    """Per experiment: did the interval exclude 0 at any of the reads?"""
    options = Options(kind=kind, sequential=sequential, alpha=ALPHA)
    significant = np.zeros((EXPERIMENTS, READS), dtype=bool)
    for e in range(EXPERIMENTS):
        for r in range(READS):
            n = UNITS_PER_READ * (r + 1)
            control = VariantSums("a", n, float(sums[e, 0, r]), float(squares[e, 0, r]))
            treatment = VariantSums("b", n, float(sums[e, 1, r]), float(squares[e, 1, r]))
            ci = analyze(control, [treatment], options).variants[1].ci_abs
            significant[e, r] = ci is not None and (ci[0] > 0 or ci[1] < 0)
    return significant


@pytest.mark.parametrize("kind", ["conversion", "mean"])
def test_peeking_at_the_sequential_interval_is_safe_and_at_the_fixed_one_is_not(kind: Kind) -> None:
    rng = np.random.default_rng(20261204)
    values = draw(rng, kind, (EXPERIMENTS, 2, READS * UNITS_PER_READ))
    reads = np.arange(1, READS + 1) * UNITS_PER_READ - 1
    sums = np.cumsum(values, axis=2)[:, :, reads]
    squares = np.cumsum(values * values, axis=2)[:, :, reads]

    sequential = any_read_significant(kind, True, sums, squares)
    fixed = any_read_significant(kind, False, sums, squares)
    sequential_rate, fixed_rate = sequential.any(axis=1).mean(), fixed.any(axis=1).mean()
    fixed_once = fixed[:, -1].mean()
    shown = (
        f"{kind}: {EXPERIMENTS} A/A experiments read {READS} times: sequential declared {sequential_rate:.3f}, "
        f"fixed-horizon {fixed_rate:.3f} (read once at the end: {fixed_once:.3f}); α = {ALPHA}"
    )
    print(shown)
    assert sequential_rate <= ALPHA + slack(ALPHA, EXPERIMENTS), shown
    assert fixed_rate > ALPHA + slack(ALPHA, EXPERIMENTS), shown
    assert abs(fixed_once - ALPHA) <= slack(ALPHA, EXPERIMENTS), shown  # the fixed test is fine when read once


REPLICATES = 1000
UNITS = 2000  # per arm
SPREAD = 3 * math.sqrt(2 / (REPLICATES - 1))  # three standard errors of a sample variance, relative


def correlated(rng: np.random.Generator, kind: Kind, effect: float) -> tuple[np.ndarray, np.ndarray, float, float]:
    """(outcome, pre-period covariate) per replicate and unit, their correlation ρ, the true lift."""
    shape = (REPLICATES, UNITS)
    if kind == "mean":  # y = 5 + (x − 10) + ε + τ, corr(x, y) = 3/√(9 + σ²_ε) = 0.7
        pre = rng.normal(10.0, 3.0, shape)
        noise_sd = math.sqrt((3.0 / 0.7) ** 2 - 9.0)
        return 5.0 + (pre - 10.0) + rng.normal(0.0, noise_sd, shape) + effect, pre, 0.7, effect
    # count: the same unit-level rate λ ~ Gamma(2, 2) drives both periods, corr = Var λ/(Var λ + E λ)
    rate = rng.gamma(2.0, 2.0, shape)
    pre = rng.poisson(rate).astype(float)
    post = rng.poisson(rate * (1.0 + effect)).astype(float)
    return post, pre, 8.0 / 12.0, 4.0 * effect


def sums_of(variant: str, post: np.ndarray, pre: np.ndarray) -> VariantSums:
    return VariantSums(
        variant,
        post.size,
        float(post.sum()),
        float((post * post).sum()),
        float(pre.sum()),
        float((pre * pre).sum()),
        float((post * pre).sum()),
    )


@pytest.mark.parametrize("kind", ["mean", "count"])
def test_cuped_cuts_the_variance_by_rho_squared_and_stays_unbiased(kind: Kind) -> None:
    rng = np.random.default_rng(1339)
    post_a, pre_a, rho, _ = correlated(rng, kind, 0.0)
    post_b, pre_b, _, truth = correlated(rng, kind, 0.1)
    plain, adjusted, reported_reduction, reported_variance = [], [], [], []
    for r in range(REPLICATES):
        a, b = sums_of("a", post_a[r], pre_a[r]), sums_of("b", post_b[r], pre_b[r])
        without = analyze(a, [b], Options(kind=kind, cuped=False)).variants[1]
        result = analyze(a, [b], Options(kind=kind, cuped=True))
        assert without.lift_abs is not None and result.variants[1].lift_abs is not None
        assert result.variance_reduction is not None
        plain.append(without.lift_abs)
        adjusted.append(result.variants[1].lift_abs)
        reported_reduction.append(result.variance_reduction)
        treated, control = result.variants[1], result.variants[0]
        reported_variance.append(treated.variance / treated.units + control.variance / control.units)
    plain_var, adjusted_var = float(np.var(plain, ddof=1)), float(np.var(adjusted, ddof=1))
    shown = (
        f"{kind}: ρ = {rho:.3f}, variance of the lift {plain_var:.3g} → {adjusted_var:.3g} with CUPED "
        f"(ratio {adjusted_var / plain_var:.3f}, theory 1 − ρ² = {1 - rho**2:.3f}); reported reduction "
        f"{np.mean(reported_reduction):.3f}; mean lift {np.mean(adjusted):.4f} (truth {truth})"
    )
    print(shown)
    # the variance the result reports is ρ² smaller, and the replicates' spread agrees
    assert np.mean(reported_reduction) == pytest.approx(rho**2, abs=0.01), shown
    assert adjusted_var / plain_var == pytest.approx(1 - rho**2, rel=SPREAD), shown
    assert adjusted_var == pytest.approx(float(np.mean(reported_variance)), rel=SPREAD), shown
    # unbiased: the mean over replicates is within 3 standard errors of the truth
    assert abs(np.mean(adjusted) - truth) <= 3 * math.sqrt(adjusted_var / REPLICATES), shown
