"""``analyze``: every treatment against the control, from sufficient statistics to the result.

The result is one structure for the CLI, the HTTP API and the page (issue 23, item 6).

- Statistics per variant by kind (``statistics.build``); with CUPED (not for ``ratio``) each is
  regression-adjusted with one θ pooled over *all* variants' units.
- Each treatment against the control, no multiple-comparison correction: the absolute and the
  relative difference, each with its interval, from the sequential test by default or the fixed
  one. ``p_value`` is the absolute difference's (the test of μ_B = μ_A; the relative one tests the
  same null through a delta-method approximation and is close to it).
- ``variance_reduction`` = 1 − Σ_v σ²_adj,v/n_v ÷ Σ_v σ²_v/n_v: the share of the variance of the
  variants' means that CUPED removed (≈ ρ² for a covariate with correlation ρ); None when an
  adjusted variance is not positive.
"""

from __future__ import annotations

import math

import msgspec

from pipeline.stats import inference
from pipeline.stats.srm import srm_p_value
from pipeline.stats.statistics import Statistic, build, pooled_theta, regression_adjusted
from pipeline.stats.sums import Options, VariantSums


class VariantResult(msgspec.Struct):
    variant: str
    control: bool
    units: int
    mean: float  # per unit (the rate, the ratio), CUPED-adjusted when CUPED is on
    variance: float  # per unit, of the statistic ``mean`` is (adjusted; delta method for ratio)
    lift_abs: float | None = None
    lift_rel: float | None = None
    ci_abs: tuple[float, float] | None = None
    ci_rel: tuple[float, float] | None = None
    p_value: float | None = None
    error: str | None = None  # why the lifts are missing, e.g. "not enough data: …"


class Analysis(msgspec.Struct):
    sequential: bool
    cuped: bool
    alpha: float
    srm_p_value: float | None
    variance_reduction: float | None  # CUPED: 1 − Σ σ²_adj/n ÷ Σ σ²/n over variants; None when off
    theta: float | None  # CUPED's pooled θ; None when off
    variants: list[VariantResult]


def _compare(a: Statistic, b: Statistic, options: Options, relative: bool) -> inference.TestResult:
    if options.sequential:
        return inference.sequential(a, b, relative=relative, alpha=options.alpha, tuning=options.tuning)
    return inference.fixed(a, b, relative=relative, alpha=options.alpha)


def _variance_reduction(adjusted: list[Statistic], plain: list[Statistic]) -> float | None:
    """None where it would mislead: an adjusted variance ≤ 0 (a covariate equal to the outcome can
    make one, since a proportion's variance divides by n where the covariance divides by n − 1: the
    comparison is then invalid and the "reduction" would exceed 100 %), or sums too large."""
    if any(s.n and not s.variance > 0 for s in adjusted):
        return None
    before = sum(s.variance / s.n for s in plain if s.n)
    after = sum(s.variance / s.n for s in adjusted if s.n)
    reduction = 1.0 - after / before if before > 0 else None
    return reduction if reduction is not None and math.isfinite(reduction) else None


def analyze(control: VariantSums, treatments: list[VariantSums], options: Options) -> Analysis:
    """Analyse ``treatments`` against ``control`` as ``options`` say (pure; no I/O)."""
    everyone = [control, *treatments]
    plain = [build(s, options.kind) for s in everyone]
    cuped = options.cuped and options.kind != "ratio"
    theta = pooled_theta(everyone, options.kind) if cuped else None
    stats = [regression_adjusted(s, options.kind, theta) for s in everyone] if theta is not None else plain
    a = stats[0]
    results = [VariantResult(control.variant, True, a.n, a.mean, a.variance)]
    for sums, b in zip(treatments, stats[1:], strict=True):
        absolute, relative = _compare(a, b, options, False), _compare(a, b, options, True)
        results.append(
            VariantResult(
                variant=sums.variant,
                control=False,
                units=b.n,
                mean=b.mean,
                variance=b.variance,
                lift_abs=absolute.estimate,
                lift_rel=relative.estimate,
                ci_abs=absolute.ci,
                ci_rel=relative.ci,
                p_value=absolute.p_value,
                error=absolute.error or relative.error,
            )
        )
    return Analysis(
        sequential=options.sequential,
        cuped=cuped,
        alpha=options.alpha,
        srm_p_value=srm_p_value({s.variant: s.n for s in everyone}, options.weights),
        variance_reduction=_variance_reduction(stats, plain) if cuped else None,
        theta=theta,
        variants=results,
    )
