"""Experiment scorecards from ``experiment_units`` (exact: read with FINAL).

Per variant: exposed units (units with a first exposure, counted in the variant of their first
exposure), converting units (of those, units with an attributed conversion — any track event,
or the one named by ``event``), the conversion rate with a 95 % Wilson interval, absolute and
relative lift against the control, and a two-sided pooled two-proportion z-test p-value.
Across variants: a sample-ratio-mismatch chi-square test against the expected split (equal
unless weights are given; flagged below p = 0.001), and the number of units exposed to more than
one variant (they stay in their first variant).
"""

from __future__ import annotations

import math

import msgspec

from pipeline.warehouse import Warehouse
from sluice.sql import literal

SRM_THRESHOLD = 0.001
Z95 = 1.959963984540054


class VariantResult(msgspec.Struct):
    variant: str
    exposed: int
    converted: int
    rate: float
    ci_low: float
    ci_high: float
    lift_abs: float | None
    lift_rel: float | None
    p_value: float | None


class Scorecard(msgspec.Struct):
    org_id: str
    experiment_id: str
    event: str | None
    control: str
    variants: list[VariantResult]
    srm_p_value: float | None
    srm_mismatch: bool
    multiple_exposure_units: int


def scorecard(
    warehouse: Warehouse, org_id: str, experiment_id: str, *, event: str | None = None,
    control: str | None = None, weights: list[float] | None = None,
) -> Scorecard:  # fmt: skip
    converted = f"mapContains(conversions, {literal(event)})" if event else "converted_at IS NOT NULL"
    sql = (
        f"SELECT variant_id, count() AS exposed, countIf({converted}) AS converted, "
        "countIf(variants_seen > 1) AS multiple "
        f"FROM experiment_units FINAL WHERE org_id = {literal(org_id)} AND experiment_id = {literal(experiment_id)} "
        "AND first_exposed_at IS NOT NULL GROUP BY variant_id ORDER BY variant_id"
    )
    rows = [msgspec.json.decode(line) for line in warehouse.execute(sql, "JSONEachRow").splitlines() if line]
    counts = [(str(r["variant_id"]), int(r["exposed"]), int(r["converted"])) for r in rows]
    multiple = sum(int(r["multiple"]) for r in rows)
    return compute(org_id, experiment_id, counts, event=event, control=control, weights=weights, multiple=multiple)


def compute(
    org_id: str, experiment_id: str, counts: list[tuple[str, int, int]], *, event: str | None = None,
    control: str | None = None, weights: list[float] | None = None, multiple: int = 0,
) -> Scorecard:  # fmt: skip
    names = [name for name, _, _ in counts]
    base = control if control in names else ("control" if "control" in names else (names[0] if names else ""))
    by_name = {name: (n, c) for name, n, c in counts}
    n0, c0 = by_name.get(base, (0, 0))
    p0 = c0 / n0 if n0 else 0.0
    variants = []
    for name, n, c in counts:
        rate = c / n if n else 0.0
        low, high = wilson(c, n)
        is_control = name == base
        variants.append(VariantResult(
            name, n, c, rate, low, high,
            None if is_control else rate - p0,
            None if is_control or p0 == 0 else (rate - p0) / p0,
            None if is_control else two_proportion_p(c, n, c0, n0),
        ))  # fmt: skip
    srm = srm_p_value([n for _, n, _ in counts], weights)
    return Scorecard(
        org_id, experiment_id, event, base, variants, srm, srm is not None and srm < SRM_THRESHOLD, multiple
    )


def wilson(successes: int, trials: int, z: float = Z95) -> tuple[float, float]:
    if trials == 0:
        return 0.0, 0.0
    p = successes / trials
    denominator = 1 + z * z / trials
    centre = (p + z * z / (2 * trials)) / denominator
    margin = z * math.sqrt(p * (1 - p) / trials + z * z / (4 * trials * trials)) / denominator
    return max(0.0, centre - margin), min(1.0, centre + margin)


def two_proportion_p(c1: int, n1: int, c0: int, n0: int) -> float | None:
    if n1 == 0 or n0 == 0:
        return None
    pooled = (c1 + c0) / (n1 + n0)
    se = math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n0))
    if se == 0:
        return 1.0
    z = (c1 / n1 - c0 / n0) / se
    return math.erfc(abs(z) / math.sqrt(2))


def srm_p_value(observed: list[int], weights: list[float] | None = None) -> float | None:
    """Chi-square goodness of fit of the units per variant to the expected split."""
    total = sum(observed)
    if len(observed) < 2 or total == 0:
        return None
    shares = weights if weights and len(weights) == len(observed) else [1.0] * len(observed)
    expected = [total * w / sum(shares) for w in shares]
    chi2 = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True) if e > 0)
    return chi2_survival(chi2, len(observed) - 1)


def chi2_survival(x: float, df: int) -> float:
    """P(X ≥ x) for X ~ χ²(df): the regularized upper incomplete gamma Q(df/2, x/2)."""
    a, x = df / 2.0, x / 2.0
    if x <= 0:
        return 1.0
    if x < a + 1:  # series for P, then Q = 1 - P
        term = total = 1.0 / a
        k = a
        for _ in range(1000):
            k += 1
            term *= x / k
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(-x + a * math.log(x) - math.lgamma(a)))
    # continued fraction for Q (Lentz)
    tiny = 1e-300
    b = x + 1 - a
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - a)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(-x + a * math.log(x) - math.lgamma(a)) * h)


def render_table(card: Scorecard) -> str:
    head = f"experiment {card.experiment_id} (org {card.org_id}); conversion: {card.event or 'any track event'}"
    lines = [head, ""]
    header = ["variant", "exposed", "converted", "rate", "95% CI", "lift (abs)", "lift (rel)", "p-value"]
    table = [header]
    for v in card.variants:
        table.append([
            v.variant + (" (control)" if v.variant == card.control else ""), str(v.exposed), str(v.converted),
            f"{v.rate:.2%}", f"[{v.ci_low:.2%}, {v.ci_high:.2%}]",
            "-" if v.lift_abs is None else f"{v.lift_abs:+.2%}",
            "-" if v.lift_rel is None else f"{v.lift_rel:+.1%}",
            "-" if v.p_value is None else f"{v.p_value:.4f}",
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    srm = "n/a" if card.srm_p_value is None else f"p = {card.srm_p_value:.4g}"
    verdict = "MISMATCH — do not trust the results" if card.srm_mismatch else "ok"
    lines += [
        "",
        f"sample ratio: {srm} ({verdict})",
        f"units exposed to more than one variant: {card.multiple_exposure_units}",
    ]
    return "\n".join(lines) + "\n"
