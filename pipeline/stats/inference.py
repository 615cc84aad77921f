"""Two-sample tests of a treatment against the control: one estimate, its interval, a p-value.

Both tests follow gbstats 0.8.0 (``gbstats/frequentist/tests.py``) formula for formula:

- The difference (``frequentist_diff``): absolute μ_B − μ_A; relative (μ_B − μ_A)/ȳ_A, where
  ȳ_A is the control's *unadjusted* mean (equal to μ_A without CUPED).
- Its variance (``frequentist_variance``): absolute σ²_B/n_B + σ²_A/n_A; relative by the delta
  method σ²_B/(ȳ_A² n_B) + σ²_A ȳ_B²/(ȳ_A⁴ n_A) (unadjusted means, adjusted variances).
- ``fixed``: ``TwoSidedTTest`` — Welch's t with the Welch–Satterthwaite degrees of freedom
  ν = (σ²_B/n_B + σ²_A/n_A)² / (σ⁴_B/(n_B²(n_B−1)) + σ⁴_A/(n_A²(n_A−1))) for every kind,
  proportions included; interval Δ ± t_{1−α/2,ν}·√V, p = 2·P(T_ν > |Δ|/√V).
- ``sequential``: ``SequentialTwoSidedTTest`` — the asymptotic mixture-normal confidence sequence
  of Waudby-Smith et al. (2023, "Time-uniform central limit theory and asymptotic confidence
  sequences", arXiv:2103.06476v7; eq. 9 for the interval, eq. 161 for ρ, eq. 155 for the
  p-value; after Howard et al. 2021, "Time-uniform, nonparametric, nonasymptotic confidence
  sequences", Ann. Statist.). With N = n_A + n_B, s² = V·N and tuning N*:
  ρ² = (−2 ln α + ln(1 − 2 ln α))/N*,
  half-width = s·√(2(Nρ² + 1)/(N²ρ²) · ln(√(Nρ² + 1)/α)),
  p = min(1, √(Nρ² + 1) · exp(−ρ²·(Δ²N/V)/(2(Nρ² + 1)))).

The result is invalid (``error`` set, no numbers) when the control's mean is 0 or either
variance is ≤ 0 — gbstats' ``ZERO_NEGATIVE_BASELINE_VARIATION`` / ``ZERO_NEGATIVE_VARIANCE`` — and,
where Sluice differs from gbstats (which returns NaN or raises ``OverflowError``), when a mean, a
variance or the result is not a finite number: values so large (about 1e154 and up, whose squares
overflow a double) that no interval can be computed from their sums.
"""

from __future__ import annotations

import math

import msgspec

from pipeline.stats.distributions import t_ppf, t_sf
from pipeline.stats.statistics import Statistic

ZERO_CONTROL_MEAN = "not enough data: the control's mean is 0"
ZERO_VARIANCE = "not enough data: a variance is 0 or less (fewer than 2 units, all values equal, or CUPED left none)"
NOT_FINITE = "the values are too large to compare: their sums overflow a double"


class TestResult(msgspec.Struct, frozen=True):
    """One comparison: the estimate, its interval and p-value, or why there are none."""

    __test__ = False  # not a pytest class

    estimate: float | None = None
    ci: tuple[float, float] | None = None
    p_value: float | None = None
    error: str | None = None


def check(a: Statistic, b: Statistic) -> str | None:
    """Why ``a`` (control) and ``b`` (treatment) cannot be compared, or None."""
    if not all(math.isfinite(x) for s in (a, b) for x in (s.mean, s.unadjusted_mean, s.variance)):
        return NOT_FINITE
    if a.mean == 0 or a.unadjusted_mean == 0:
        return ZERO_CONTROL_MEAN
    if a.variance <= 0 or b.variance <= 0:
        return ZERO_VARIANCE
    return None


def _result(estimate: float, width: float, p_value: float) -> TestResult:
    if not (math.isfinite(estimate) and math.isfinite(width) and math.isfinite(p_value)):
        return TestResult(error=NOT_FINITE)  # finite inputs whose products overflow
    return TestResult(estimate=estimate, ci=(estimate - width, estimate + width), p_value=p_value)


def difference(a: Statistic, b: Statistic, relative: bool) -> float:
    delta = b.mean - a.mean
    return delta / a.unadjusted_mean if relative else delta


def variance(a: Statistic, b: Statistic, relative: bool) -> float:
    """The variance of ``difference`` (the relative one by the delta method)."""
    if relative:
        mu_a, mu_b = a.unadjusted_mean, b.unadjusted_mean
        mu_a2 = mu_a * mu_a  # products, not **: a float ** overflows with an exception, a product to inf
        return b.variance / (mu_a2 * b.n) + a.variance * (mu_b * mu_b) / (mu_a2 * mu_a2 * a.n)
    return b.variance / b.n + a.variance / a.n


def welch_df(a: Statistic, b: Statistic) -> float:
    """Welch–Satterthwaite degrees of freedom (gbstats ``TTest.dof``), in shares of va + vb so that
    no square of a large variance overflows: ν = 1 / (s_B²/(n_B − 1) + s_A²/(n_A − 1)), s = v/(va + vb)."""
    va, vb = a.variance / a.n, b.variance / b.n
    sa, sb = va / (va + vb), vb / (va + vb)
    return 1.0 / (sb * sb / (b.n - 1) + sa * sa / (a.n - 1))


def fixed(a: Statistic, b: Statistic, *, relative: bool, alpha: float) -> TestResult:
    """Welch's two-sided t-test and interval (gbstats ``TwoSidedTTest``)."""
    if error := check(a, b):
        return TestResult(error=error)
    estimate, se, df = difference(a, b, relative), math.sqrt(variance(a, b, relative)), welch_df(a, b)
    if not (math.isfinite(estimate) and math.isfinite(se) and math.isfinite(df) and se > 0):
        return TestResult(error=NOT_FINITE)
    width = t_ppf(1.0 - alpha / 2.0, df) * se
    p_value = 2.0 * t_sf(abs(estimate) / se, df)
    return _result(estimate, width, p_value)


def mixture_rho_squared(alpha: float, tuning: float) -> float:
    """ρ² that makes the confidence sequence tightest at N = tuning (Waudby-Smith eq. 161)."""
    return (-2.0 * math.log(alpha) + math.log(1.0 - 2.0 * math.log(alpha))) / tuning


def sequential(a: Statistic, b: Statistic, *, relative: bool, alpha: float, tuning: float) -> TestResult:
    """The always-valid mixture-normal interval and p-value (gbstats ``SequentialTwoSidedTTest``)."""
    if error := check(a, b):
        return TestResult(error=error)
    estimate, var = difference(a, b, relative), variance(a, b, relative)
    if not (math.isfinite(estimate) and math.isfinite(var) and var > 0):
        return TestResult(error=NOT_FINITE)
    n = a.n + b.n
    rho2 = mixture_rho_squared(alpha, tuning)
    grown = n * rho2 + 1.0
    width = math.sqrt(var * n) * math.sqrt(2.0 * grown * math.log(math.sqrt(grown) / alpha) / (n * n * rho2))
    # p = 1/e-value, e-value = exp(ρ²·st²/(2(Nρ²+1)))/√(Nρ²+1); in logs to avoid overflow
    log_evalue = rho2 * (estimate * estimate * n / var) / (2.0 * grown) - 0.5 * math.log(grown)
    p_value = math.exp(-log_evalue) if log_evalue > 0 else 1.0
    return _result(estimate, width, p_value)
