"""Experiment results: a metric's per-variant sums from the warehouse, analysed by ``pipeline.stats``.

``scorecard`` runs two statements (``pipeline.results.sql``): the span of first exposures, then
one scan grouped by variant and bucket of first exposure — the totals are the sums over every
bucket, the interval over time the cumulative sums at each bucket's end. One object comes out
(``Scorecard``), which the CLI prints (``render_table`` or JSON), the HTTP API returns and the
page draws.

Health beside the statistics: the SRM p-value against the declared split
(``pipeline.results.declared``; flagged below ``SRM_THRESHOLD``), units exposed to more than one
variant (they stay in their first), units with attributed tracks but no exposure (not counted:
results are per exposed unit), and the org's tracks attributed to no experiment since the
experiment began.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import msgspec

from pipeline.results.declared import Declared
from pipeline.results.metric import CUPED_BY_DEFAULT, WINDOW_DAYS, Metric
from pipeline.results.sql import BOUNDS, PRE_MARGIN_MS, UNATTRIBUTED, sums, units
from pipeline.stats import Analysis, Options, VariantResult, VariantSums, analyze
from pipeline.stats.sums import checked_alpha
from pipeline.warehouse import Warehouse
from sluice.sql import Parameters

SRM_THRESHOLD = 0.001
BUCKETS = 20
"""Points of the interval over time."""


class Variant(VariantResult):
    """A variant's result (``pipeline.stats.VariantResult``) and its sums."""

    sum: float = 0.0
    """Σx over its units (converting units for ``conversion``; Σ numerator for ``ratio``)."""
    exposed: int = 0
    """= units (the scorecard's older name, kept for scripts)."""
    converted: int | None = None
    """``conversion``: units with the event (the older name, kept for scripts)."""


class Point(msgspec.Struct):
    """The result as it stood when units first exposed up to ``until`` were in."""

    until: datetime
    units: int
    variants: list[VariantResult]


class Scorecard(msgspec.Struct):
    org_id: str
    experiment_id: str
    metric: str
    kind: str
    event: str
    denominator: str | None
    control: str
    sequential: bool
    cuped: bool
    alpha: float
    srm_p_value: float | None
    srm_mismatch: bool
    weights: dict[str, float] | None
    """The declared split the SRM test used (None: equal)."""
    variance_reduction: float | None
    theta: float | None
    variants: list[Variant]
    multiple_exposure_units: int
    unexposed_units_with_tracks: int
    unattributed_tracks: int
    timeline: list[Point]


class Request(msgspec.Struct, frozen=True):
    metric: Metric = Metric()
    sequential: bool = True
    cuped: bool | None = None
    """None: the kind's default (on for mean and count)."""
    alpha: float = 0.05
    control: str | None = None
    timeline: bool = True

    def __post_init__(self) -> None:
        checked_alpha(self.alpha)

    @property
    def use_cuped(self) -> bool:
        return self.metric.kind in CUPED_BY_DEFAULT if self.cuped is None else self.cuped


def scorecard(
    warehouse: Warehouse, org_id: str, experiment_id: str, request: Request, declared: Declared | None = None,
    value_property: str = "order_total",
) -> Scorecard | None:  # fmt: skip
    """The experiment's result, or None when it has no exposed unit."""
    declared = declared or Declared()
    parameters: dict[str, str | int | float] = {"org": org_id, "experiment": experiment_id}
    spans = _rows(warehouse, BOUNDS, parameters)
    if not spans:
        return None
    span = spans[0]
    first, last = int(span["first"]), int(span["last"])
    metric, cuped = request.metric, request.use_cuped and request.metric.kind != "ratio"
    window = int(WINDOW_DAYS * 86_400_000)
    # whole minutes: n is bucketed by the minute of the exposure rollups, the sums by each unit's
    # first exposure; with minute-wide multiples from a minute's start both put a unit in one bucket
    width = max(1, math.ceil((last - first + 1) / BUCKETS / 60_000)) * 60_000
    parameters |= {
        "event": metric.event, "denominator": metric.denominator_event, "value_property": value_property,
        "first": first, "width": width, "last_bucket": (last - first) // width,
        "window_ms": window, "pre_from": first - window - PRE_MARGIN_MS, "pre_to": last,
    }  # fmt: skip
    rows = merged(_rows(warehouse, units(), parameters), _rows(warehouse, sums(metric.kind, cuped), parameters))
    if not any(row["bucket"] >= 0 and row["n"] > 0 for row in rows):
        # BOUNDS reads the rollups without FINAL: a unit's row replaced by a no-unit version of the
        # same record, not merged yet, gives a span but no exposed unit
        return None
    unattributed = _rows(warehouse, UNATTRIBUTED, {"org": org_id, "first": first})[0]["tracks"]
    return build(org_id, experiment_id, request, declared, rows, int(unattributed or 0), first, width)


SUMS = ("n", "sum", "sum_squares", "d_sum", "d_sum_squares", "sum_of_products", "multi_exposed", "unexposed_tracked")


def merged(*parts: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The statements' rows, one per (variant, bucket), each sum added (0 where a statement had none)."""
    out: dict[tuple[str, int], dict[str, Any]] = {}
    for rows in parts:
        for row in rows:
            key = (str(row["variant"]), int(row["bucket"]))
            into = out.setdefault(key, {"variant": key[0], "bucket": key[1]} | dict.fromkeys(SUMS, 0))
            for name in SUMS:
                if name in row:
                    if "sum" not in name:
                        into[name] += int(row[name])
                    else:  # an overflowed sum (inf) comes back as null: the analysis says so
                        into[name] += math.nan if row[name] is None else float(row[name])
    return [out[key] for key in sorted(out)]


def build(
    org_id: str, experiment_id: str, request: Request, declared: Declared, rows: list[dict[str, Any]],
    unattributed: int, first: int, width: int | str | float,
) -> Scorecard:  # fmt: skip
    """The scorecard from the sums query's rows (per variant and bucket; bucket −1: never exposed)."""
    metric = request.metric
    buckets: dict[int, dict[str, VariantSums]] = {}
    unexposed = multiple = 0
    for row in rows:
        bucket = int(row["bucket"])
        if bucket < 0:
            unexposed += int(row["unexposed_tracked"])
            continue
        multiple += int(row["multi_exposed"])
        buckets.setdefault(bucket, {})[str(row["variant"])] = msgspec.convert(row, VariantSums, strict=False)
    names = sorted({name for sums_ in buckets.values() for name in sums_})
    control = _control(names, request.control, declared)
    options = Options(
        kind=metric.kind, sequential=request.sequential, cuped=request.use_cuped, alpha=request.alpha,
        weights=declared.weights,
    )  # fmt: skip
    running = {name: VariantSums(name, 0, 0.0, 0.0) for name in names}
    timeline: list[Point] = []
    analysis: Analysis | None = None
    for bucket in sorted(buckets):
        for name, more in buckets[bucket].items():
            running[name] = _add(running[name], more, name)
        analysis = _analyze(running, control, names, options)
        if request.timeline and sum(s.n for s in running.values()) > 0:
            until = datetime.fromtimestamp((first + (bucket + 1) * int(width)) / 1000, UTC)
            timeline.append(Point(until, sum(s.n for s in running.values()), analysis.variants))
    analysis = analysis or _analyze(running, control, names, options)
    srm = analysis.srm_p_value
    totals = {name: running[name] for name in names}
    return Scorecard(
        org_id=org_id, experiment_id=experiment_id, metric=metric.name, kind=metric.kind, event=metric.event,
        denominator=metric.denominator_event if metric.kind == "ratio" else None, control=control,
        sequential=analysis.sequential, cuped=analysis.cuped, alpha=analysis.alpha, srm_p_value=srm,
        srm_mismatch=srm is not None and srm < SRM_THRESHOLD, weights=declared.weights,
        variance_reduction=analysis.variance_reduction, theta=analysis.theta,
        variants=[_variant(v, totals[v.variant], metric) for v in analysis.variants],
        multiple_exposure_units=multiple, unexposed_units_with_tracks=unexposed, unattributed_tracks=unattributed,
        timeline=timeline,
    )  # fmt: skip


def _analyze(running: dict[str, VariantSums], control: str, names: list[str], options: Options) -> Analysis:
    return analyze(running[control], [running[name] for name in names if name != control], options)


def _add(a: VariantSums, b: VariantSums, name: str) -> VariantSums:
    return VariantSums(
        name, a.n + b.n, a.sum + b.sum, a.sum_squares + b.sum_squares, a.d_sum + b.d_sum,
        a.d_sum_squares + b.d_sum_squares, a.sum_of_products + b.sum_of_products, a.multi_exposed + b.multi_exposed,
    )  # fmt: skip


def _variant(result: VariantResult, sums_: VariantSums, metric: Metric) -> Variant:
    fields = msgspec.structs.asdict(result)
    converted = round(sums_.sum) if metric.kind == "conversion" else None
    return Variant(**fields, sum=sums_.sum, exposed=result.units, converted=converted)


def _control(names: list[str], asked: str | None, declared: Declared) -> str:
    for candidate in (asked, declared.control, "control"):
        if candidate and candidate in names:
            return candidate
    return names[0]


def _rows(warehouse: Warehouse, sql: str, parameters: Parameters) -> list[dict[str, Any]]:
    out = warehouse.execute(sql, "JSONEachRow", parameters=parameters, behind_writes=True)
    return [msgspec.json.decode(line) for line in out.splitlines() if line]


# --- the table ----------------------------------------------------------------------------------


def confidence(alpha: float) -> str:
    """The intervals' level as people write it: 95 %, 99.9 % (not "100%" for α = 0.001)."""
    return f"{(1.0 - alpha) * 100:.6g}%"


def render_table(card: Scorecard) -> str:
    test = "sequential (always valid)" if card.sequential else "fixed horizon"
    cuped = f"CUPED on (variance reduction {card.variance_reduction:.1%})" if card.cuped and card.variance_reduction \
        is not None else ("CUPED on" if card.cuped else "CUPED off")  # fmt: skip
    lines = [
        f"experiment {card.experiment_id} (org {card.org_id}); metric {card.metric}",
        f"{test}, {confidence(card.alpha)} intervals; {cuped}",
        "",
    ]
    table = [["variant", "units", "mean", "lift (abs)", "interval (abs)", "lift (rel)", "interval (rel)", "p-value"]]
    for v in card.variants:
        table.append([
            v.variant + (" (control)" if v.control else ""), str(v.units), _number(v.mean),
            _signed(v.lift_abs), _interval(v.ci_abs, _signed), _percent(v.lift_rel), _interval(v.ci_rel, _percent),
            "-" if v.p_value is None else f"{v.p_value:.4f}",
        ])  # fmt: skip
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in table]
    lines += [v.variant + ": " + v.error for v in card.variants if v.error]
    srm = "n/a" if card.srm_p_value is None else f"p = {card.srm_p_value:.4g}"
    split = "declared weights" if card.weights else "equal weights"
    verdict = "MISMATCH — do not trust the results" if card.srm_mismatch else "ok"
    lines += [
        "",
        f"sample ratio ({split}): {srm} ({verdict})",
        f"units exposed to more than one variant: {card.multiple_exposure_units}",
        f"units with attributed tracks but no exposure: {card.unexposed_units_with_tracks}",
        f"tracks attributed to no experiment since the first exposure: {card.unattributed_tracks}",
    ]
    return "\n".join(lines) + "\n"


def _number(x: float | None) -> str:
    return "-" if x is None else f"{x:.4g}"


def _signed(x: float | None) -> str:
    return "-" if x is None else f"{x:+.4g}"


def _percent(x: float | None) -> str:
    return "-" if x is None else f"{x:+.1%}"


def _interval(ci: tuple[float, float] | None, show: Callable[[float | None], str]) -> str:
    return "-" if ci is None else f"[{show(ci[0])}, {show(ci[1])}]"
