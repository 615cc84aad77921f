"""Sample-ratio mismatch: Pearson's chi-square of the exposed units against the declared split.

χ² = Σ_v (o_v − e_v)²/e_v with e_v = w_v/Σw · Σo, p = P(χ²_{k−1} > χ²) over the k variants
(gbstats ``utils.check_srm``). Weights are the experiment's declared allocation; equal when unknown.

Deliberate differences from gbstats: a variant declared with weight ≤ 0 (or absent from the
declared weights) that nevertheless has units is a certain mismatch, p = 0 (gbstats skips it);
a declared variant that no unit reached counts with o = 0. No units, or fewer than two
variants, give None: there is nothing to test.
"""

from __future__ import annotations

from collections.abc import Mapping

from pipeline.stats.distributions import chi2_sf


def srm_p_value(units: Mapping[str, int], weights: Mapping[str, float] | None = None) -> float | None:
    """The SRM p-value of ``units`` (exposed units per variant) against ``weights``."""
    declared = dict(weights) if weights else dict.fromkeys(units, 1.0)
    variants = sorted(set(units) | set(declared))
    observed = {v: units.get(v, 0) for v in variants}
    total = sum(observed.values())
    if total == 0 or len(variants) < 2:
        return None
    if any(observed[v] > 0 and declared.get(v, 0.0) <= 0 for v in variants):
        return 0.0
    total_weight = sum(w for w in declared.values() if w > 0)
    statistic = 0.0
    for v in variants:
        if declared.get(v, 0.0) > 0:  # an undeclared variant is here with 0 units (checked above)
            expected = declared[v] / total_weight * total
            statistic += (observed[v] - expected) ** 2 / expected
    return chi2_sf(statistic, len(variants) - 1)
