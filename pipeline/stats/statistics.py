"""Per-variant statistics built from sufficient statistics: a mean and a per-unit variance.

Each builder mirrors one gbstats 0.8.0 class (``gbstats/models/statistics.py``), formula for
formula, so the oracle test can hold Sluice to it:

- ``proportion``          ProportionStatistic: mean p = Σx/n, variance p(1 − p).
- ``sample_mean``         SampleMeanStatistic: mean Σx/n, variance (Σx² − (Σx)²/n)/(n − 1).
- ``ratio``               RatioStatistic: mean Σx/Σd; variance by the delta method
                          σ²_M/μ_D² − 2·cov(M,D)·μ_M/μ_D³ + μ_M²·σ²_D/μ_D⁴ (per unit; divided by n
                          later), cov = (Σxd − ΣxΣd/n)/(n − 1).
- ``regression_adjusted`` RegressionAdjustedStatistic (CUPED, Deng et al. 2013): mean
                          ȳ − θ·x̄, variance σ²_Y + θ²σ²_X − 2θ·cov(Y, X); the unadjusted mean ȳ
                          is kept for the relative lift's denominator.
- ``pooled_theta``        compute_theta, but over all variants at once (gbstats pools the two
                          variants of each pairwise test; the issue asks for one θ per experiment).
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from pipeline.stats.sums import Kind, VariantSums


class Statistic(msgspec.Struct, frozen=True):
    """One variant's estimate of its metric per unit, ready for a two-sample test.

    ``variance`` is per unit (the variance of the mean is variance/n). ``unadjusted_mean`` equals
    ``mean`` except under CUPED, where ``mean`` is the adjusted one.
    """

    n: int
    mean: float
    variance: float
    unadjusted_mean: float


def _mean(total: float, n: int) -> float:
    return total / n if n else 0.0


def _sample_variance(total: float, squares: float, n: int) -> float:
    return (squares - total * total / n) / (n - 1) if n > 1 else 0.0


def _covariance(products: float, x_total: float, d_total: float, n: int) -> float:
    return (products - x_total * d_total / n) / (n - 1) if n > 1 else 0.0


def proportion(s: VariantSums) -> Statistic:
    p = _mean(s.sum, s.n)
    return Statistic(n=s.n, mean=p, variance=p * (1.0 - p), unadjusted_mean=p)


def sample_mean(s: VariantSums) -> Statistic:
    m = _mean(s.sum, s.n)
    return Statistic(n=s.n, mean=m, variance=_sample_variance(s.sum, s.sum_squares, s.n), unadjusted_mean=m)


def ratio(s: VariantSums) -> Statistic:
    mean = s.sum / s.d_sum if s.d_sum else 0.0
    m_mean, d_mean = _mean(s.sum, s.n), _mean(s.d_sum, s.n)
    if d_mean == 0 or s.n <= 1:
        return Statistic(n=s.n, mean=mean, variance=0.0, unadjusted_mean=mean)
    m_var = _sample_variance(s.sum, s.sum_squares, s.n)
    d_var = _sample_variance(s.d_sum, s.d_sum_squares, s.n)
    cov = _covariance(s.sum_of_products, s.sum, s.d_sum, s.n)
    d2 = d_mean * d_mean  # products, not **: a float ** overflows with an exception, a product to inf
    variance = m_var / d2 - 2.0 * cov * m_mean / (d2 * d_mean) + m_mean * m_mean * d_var / (d2 * d2)
    return Statistic(n=s.n, mean=mean, variance=variance, unadjusted_mean=mean)


def _post_pre(s: VariantSums, kind: Kind) -> tuple[Statistic, Statistic]:
    """The outcome and its pre-exposure covariate as gbstats would hold them for ``kind``."""
    pre = VariantSums(s.variant, s.n, s.d_sum, s.d_sum_squares)
    if kind == "conversion":  # 0/1 outcome and 0/1 covariate: ProportionStatistic for both
        return proportion(s), proportion(pre)
    return sample_mean(s), sample_mean(pre)


def regression_adjusted(s: VariantSums, kind: Kind, theta: float) -> Statistic:
    post, pre = _post_pre(s, kind)
    if s.n <= 1:
        variance = 0.0
    else:
        cov = _covariance(s.sum_of_products, s.sum, s.d_sum, s.n)
        variance = post.variance + theta * theta * pre.variance - 2.0 * theta * cov
    return Statistic(n=s.n, mean=post.mean - theta * pre.mean, variance=variance, unadjusted_mean=post.mean)


def pooled_theta(variants: Sequence[VariantSums], kind: Kind) -> float:
    """θ = cov(Y, X)/var(X) over the union of the variants' units (gbstats ``compute_theta``).

    0 when either pooled variance is 0 (gbstats then falls back to the unadjusted test, which is
    what θ = 0 computes).
    """
    n = sum(v.n for v in variants)
    joint = VariantSums(
        "pooled",
        n,
        sum(v.sum for v in variants),
        sum(v.sum_squares for v in variants),
        sum(v.d_sum for v in variants),
        sum(v.d_sum_squares for v in variants),
        sum(v.sum_of_products for v in variants),
    )
    post, pre = _post_pre(joint, kind)
    if pre.variance == 0 or post.variance == 0:
        return 0.0
    return _covariance(joint.sum_of_products, joint.sum, joint.d_sum, n) / pre.variance


def build(s: VariantSums, kind: Kind) -> Statistic:
    """The unadjusted statistic of ``kind`` for one variant."""
    if kind == "conversion":
        return proportion(s)
    if kind == "ratio":
        return ratio(s)
    return sample_mean(s)
