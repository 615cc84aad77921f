"""The results pages, as HTML with SVG drawn here: nothing is fetched from elsewhere, no script.

- ``experiments_page``: an org's experiments (or the orgs), each a link to its results;
- ``results_page``: per metric, each variant's relative lift with its interval as a bar on one
  axis, the table of figures, the interval over time (the band the sequential interval drew as
  units arrived), and the health: a sample-ratio-mismatch warning, multi-exposed units.
"""

from __future__ import annotations

from html import escape
from urllib.parse import quote, urlencode

from pipeline.scorecard import Point, Scorecard, confidence

STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;color:#1d232a;padding:0 1rem}
h1{font-size:1.4rem}h2{font-size:1.1rem;margin-top:2rem}table{border-collapse:collapse;margin:.5rem 0}
td,th{padding:.25rem .6rem;border-bottom:1px solid #d8dde3;text-align:right}
td:first-child,th:first-child{text-align:left}
.warning{background:#fff1f0;border:1px solid #d93025;color:#8c1d18;padding:.6rem .8rem;border-radius:4px}
.ok{color:#1e6b34}.muted{color:#5f6b7a}svg text{font:12px system-ui,sans-serif;fill:#1d232a}
a{color:#0b57d0}
"""
WIDTH, ROW, LEFT, RIGHT = 680, 34, 140, 100
COLOURS = ("#0b57d0", "#b3261e", "#1e6b34", "#8e4ec6", "#c26401", "#00838f")


def document(title: str, body: str) -> str:
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f"<style>{STYLE}</style></head><body>{body}</body></html>"
    )


def experiments_page(org: str | None, orgs: list[str], experiments: list[dict[str, object]]) -> str:
    if org is None:
        items = "".join(f'<li><a href="?org={quote(o)}">{escape(o)}</a></li>' for o in orgs)
        return document("Sluice experiments", f"<h1>Experiments</h1><p>Orgs:</p><ul>{items or '<li>none</li>'}</ul>")
    rows = "".join(
        f'<tr><td><a href="results/{quote(org, safe="")}/{quote(str(e["experiment_id"]), safe="")}">'
        f"{escape(str(e['experiment_id']))}</a></td><td>{int(str(e['units'])):,}</td></tr>"
        for e in experiments
    )
    body = (
        f"<h1>Experiments of {escape(org)}</h1><table><tr><th>experiment</th><th>unit rows</th></tr>{rows}</table>"
        if rows
        else f"<h1>Experiments of {escape(org)}</h1><p>No exposures yet.</p>"
    )
    return document(f"Experiments of {org}", body)


def results_page(org: str, experiment: str, cards: list[Scorecard], query: dict[str, str]) -> str:
    parts = [f"<h1>{escape(experiment)} <span class='muted'>({escape(org)})</span></h1>"]
    if not cards:
        parts.append("<p>No exposed units yet.</p>")
    for card in cards:
        parts.append(_card(card, query))
    return document(f"{experiment}: results", "".join(parts))


def _card(card: Scorecard, query: dict[str, str]) -> str:
    test = "sequential, always valid" if card.sequential else "fixed horizon"
    cuped = "CUPED on" if card.cuped else "CUPED off"
    if card.cuped and card.variance_reduction is not None:
        cuped += f", variance −{card.variance_reduction:.1%}"
    # the card's own metric, written whole (kind:event, ratio:E/E2); the page's other settings kept
    kept = {k: v for k, v in query.items() if k not in ("org", "metric", "kind", "denominator")}
    link = urlencode({**kept, "metric": card.metric})
    head = (
        f"<section class='metric' data-metric='{escape(card.metric)}'><h2>{escape(card.metric)}</h2>"
        f"<p class='muted'>{test}; {confidence(card.alpha)} intervals; {cuped}; "
        f"<a href='../../api/v1/experiments/{quote(card.experiment_id, safe='')}/results?{escape(link)}&amp;org="
        f"{quote(card.org_id)}'>JSON</a></p>"
    )
    return head + _health(card) + _bars(card) + _table(card) + _timeline(card) + "</section>"


def _health(card: Scorecard) -> str:
    split = "the declared split" if card.weights else "an equal split"
    p = "n/a" if card.srm_p_value is None else f"{card.srm_p_value:.3g}"
    if card.srm_mismatch:
        units = ", ".join(f"{escape(v.variant)} {v.units:,}" for v in card.variants)
        srm = (
            f"<p class='warning srm' role='alert'><strong>Sample ratio mismatch</strong> (p = {p} against {split}): "
            f"units {units}. Do not trust these results until the assignment is explained.</p>"
        )
    else:
        srm = f"<p class='ok srm'>Sample ratio ok (p = {p} against {split}).</p>"
    return srm + (
        f"<p class='muted'>Units exposed to more than one variant: {card.multiple_exposure_units:,}; "
        f"units with attributed tracks but no exposure: {card.unexposed_units_with_tracks:,}; "
        f"tracks attributed to no experiment since the first exposure: {card.unattributed_tracks:,}.</p>"
    )


def _scale(values: list[float]) -> tuple[float, float]:
    finite = [v for v in values if v == v and abs(v) != float("inf")]
    low, high = min([0.0, *finite]), max([0.0, *finite])
    pad = (high - low) * 0.1 or 0.05
    return low - pad, high + pad


def _bars(card: Scorecard) -> str:
    treatments = [v for v in card.variants if not v.control and v.ci_rel is not None and v.lift_rel is not None]
    if not treatments:
        return "<p class='muted'>Not enough data for an interval yet.</p>"
    low, high = _scale([x for v in treatments for x in (*(v.ci_rel or ()), v.lift_rel or 0.0)])
    span = WIDTH - LEFT - RIGHT

    def x(value: float) -> float:
        return LEFT + (value - low) / (high - low) * span

    height = ROW * len(treatments) + 30
    out = [
        f"<svg class='lifts' width='{WIDTH}' height='{height}' viewBox='0 0 {WIDTH} {height}' role='img' "
        f"aria-label='relative lift against {escape(card.control)}, with intervals'>",
        f"<line x1='{x(0):.1f}' y1='0' x2='{x(0):.1f}' y2='{height - 20}' stroke='#5f6b7a' stroke-dasharray='3 3'/>",
        f"<text x='{x(0):.1f}' y='{height - 6}' text-anchor='middle'>0</text>",
        f"<text x='{LEFT}' y='{height - 6}'>{low:+.1%}</text>",
        f"<text x='{WIDTH - RIGHT}' y='{height - 6}' text-anchor='end'>{high:+.1%}</text>",
    ]
    for i, v in enumerate(treatments):
        lo, hi = v.ci_rel or (0.0, 0.0)
        y = 10 + i * ROW
        # better or worse by the absolute interval: a relative lift over a negative control mean
        # (net revenue after refunds) has the opposite sign of the change
        lo_abs, hi_abs = v.ci_abs or (lo, hi)
        colour = "#1e6b34" if lo_abs > 0 else ("#b3261e" if hi_abs < 0 else "#0b57d0")
        out.append(
            f"<g class='variant' data-variant='{escape(v.variant)}'>"
            f"<text x='{LEFT - 8}' y='{y + 14}' text-anchor='end'>{escape(v.variant)}</text>"
            f"<rect class='interval' x='{x(max(lo, low)):.1f}' y='{y + 4}' "
            f"width='{max(1.0, x(min(hi, high)) - x(max(lo, low))):.1f}' height='12' rx='3' fill='{colour}' "
            f"fill-opacity='0.35' stroke='{colour}'><title>{lo:+.2%} to {hi:+.2%}</title></rect>"
            f"<circle class='estimate' cx='{x(v.lift_rel or 0.0):.1f}' cy='{y + 10}' r='4' fill='{colour}'/>"
            f"<text x='{WIDTH - RIGHT + 6}' y='{y + 14}'>{(v.lift_rel or 0.0):+.1%}</text></g>"
        )
    out.append("</svg>")
    return "".join(out)


def _table(card: Scorecard) -> str:
    def f(x: float | None, fmt: str) -> str:
        return "–" if x is None else format(x, fmt)

    rows = []
    for v in card.variants:
        ci_abs = "–" if v.ci_abs is None else f"[{v.ci_abs[0]:+.4g}, {v.ci_abs[1]:+.4g}]"
        ci_rel = "–" if v.ci_rel is None else f"[{v.ci_rel[0]:+.1%}, {v.ci_rel[1]:+.1%}]"
        rows.append(
            f"<tr class='row' data-variant='{escape(v.variant)}'><td>{escape(v.variant)}"
            f"{' (control)' if v.control else ''}</td><td>{v.units:,}</td><td>{v.mean:.4g}</td>"
            f"<td>{f(v.lift_abs, '+.4g')}</td><td>{ci_abs}</td><td>{f(v.lift_rel, '+.1%')}</td><td>{ci_rel}</td>"
            f"<td>{f(v.p_value, '.4f')}</td></tr>"
        )
    return (
        "<table class='figures'><tr><th>variant</th><th>units</th><th>mean</th><th>lift</th><th>interval</th>"
        f"<th>relative</th><th>interval</th><th>p-value</th></tr>{''.join(rows)}</table>"
    )


def _timeline(card: Scorecard) -> str:
    points: list[Point] = [p for p in card.timeline if any(v.ci_rel is not None for v in p.variants)]
    if len(points) < 2:
        return ""
    names = [v.variant for v in card.variants if not v.control]
    values = [x for p in points for v in p.variants if v.ci_rel is not None for x in v.ci_rel]
    low, high = _scale(values)
    height, top, bottom = 220, 10, 30
    first, last = points[0].units, points[-1].units

    def x(units: int) -> float:
        return LEFT + (units - first) / max(1, last - first) * (WIDTH - LEFT - RIGHT)

    def y(value: float) -> float:
        clipped = min(max(value, low), high)
        return top + (high - clipped) / (high - low) * (height - top - bottom)

    out = [
        f"<h3>The interval over time</h3><svg class='timeline' width='{WIDTH}' height='{height}' "
        f"viewBox='0 0 {WIDTH} {height}' role='img' aria-label='relative lift interval as units arrived'>",
        f"<line x1='{LEFT}' y1='{y(0):.1f}' x2='{WIDTH - RIGHT}' y2='{y(0):.1f}' stroke='#5f6b7a' "
        "stroke-dasharray='3 3'/>",
        f"<text x='{LEFT - 8}' y='{y(high) + 10:.1f}' text-anchor='end'>{high:+.0%}</text>",
        f"<text x='{LEFT - 8}' y='{y(low):.1f}' text-anchor='end'>{low:+.0%}</text>",
        f"<text x='{LEFT}' y='{height - 8}'>{first:,} units</text>",
        f"<text x='{WIDTH - RIGHT}' y='{height - 8}' text-anchor='end'>{last:,} units</text>",
    ]
    for i, name in enumerate(names):
        colour = COLOURS[i % len(COLOURS)]
        series = [(p.units, v) for p in points for v in p.variants if v.variant == name and v.ci_rel is not None]
        if not series:
            continue
        upper = " ".join(f"{x(u):.1f},{y(v.ci_rel[1]):.1f}" for u, v in series if v.ci_rel)
        lower = " ".join(f"{x(u):.1f},{y(v.ci_rel[0]):.1f}" for u, v in reversed(series) if v.ci_rel)
        line = " ".join(f"{x(u):.1f},{y(v.lift_rel or 0.0):.1f}" for u, v in series)
        out.append(
            f"<g class='band' data-variant='{escape(name)}'><polygon points='{upper} {lower}' fill='{colour}' "
            f"fill-opacity='0.18'/><polyline points='{line}' fill='none' stroke='{colour}' stroke-width='2'/>"
            f"<text x='{WIDTH - RIGHT + 6}' y='{y(series[-1][1].lift_rel or 0.0) + 4:.1f}'>{escape(name)}</text></g>"
        )
    out.append("</svg>")
    return "".join(out)
