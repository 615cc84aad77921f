"""What a result measures: a metric (kind, event, a ratio's denominator) and how it is analysed.

A metric is written ``kind:event`` (``conversion:purchase``, ``mean:purchase``, ``count:purchase``),
``ratio:numerator/denominator`` (``ratio:purchase/purchase``: the value of ``purchase`` over the
number of ``purchase`` events), or a bare event name (a conversion). The event ``*`` (or nothing)
is any attributed track. Per exposed unit, after its first exposure:

- ``conversion``: 1 if the unit made at least one attributed event E, else 0;
- ``mean``: the sum of its attributed E events' values (0 without one);
- ``count``: the number of its attributed E events;
- ``ratio``: Σ over units of E's values ÷ Σ over units of the number of E2 events.
"""

from __future__ import annotations

import msgspec

from pipeline.stats import KINDS, Kind

CUPED_BY_DEFAULT: frozenset[Kind] = frozenset({"mean", "count"})
WINDOW_DAYS = 14.0
"""CUPED's pre-period: the days before a unit's first exposure."""


class MetricError(ValueError):
    """A metric that cannot be read, and why."""


class Metric(msgspec.Struct, frozen=True):
    event: str = ""
    """The event E ('' is any attributed track)."""
    kind: Kind = "conversion"
    denominator: str = ""
    """A ratio's denominator event (its count); '' for E itself."""

    @property
    def name(self) -> str:
        event = self.event or "*"
        if self.kind == "ratio":
            return f"ratio:{event}/{self.denominator or event}"
        return f"{self.kind}:{event}"

    @property
    def denominator_event(self) -> str:
        return self.denominator or self.event


def metric(event: str | None, kind: str | None = None, denominator: str | None = None) -> Metric:
    """A metric from a request's parts (``--metric``, ``--kind``, ``--denominator``); an ``event``
    written ``kind:event`` carries its kind."""
    text = (event or "").strip()
    written, colon, _ = text.partition(":")
    if colon and (kind is None or written in KINDS):
        if kind is not None and written != kind:  # "mean:purchase" with kind count: which one?
            raise MetricError(f"{text!r} is a {written} metric, but the kind asked is {kind!r}")
        return parse(text) if denominator is None else parse(f"{text}/{denominator}")
    chosen = kind or "conversion"
    if chosen not in KINDS:
        raise MetricError(f"unknown kind {chosen!r}: one of {', '.join(KINDS)}")
    if denominator and chosen != "ratio":
        raise MetricError("a denominator is for ratio metrics only")
    return Metric(_event(text), chosen, _event(denominator or ""))


def chosen(event: str | None, kind: str | None, denominator: str | None, saved: tuple[Metric, ...]) -> list[Metric]:
    """What a request measures, the same in the CLI, the API and the page: the metric asked for
    (``event`` with its ``kind`` and ``denominator``); with no event but a kind, that kind over
    any attributed track; with neither, the experiment's saved metrics; else a conversion on any
    attributed track."""
    if event or kind or denominator:
        return [metric(event, kind, denominator)]
    return list(saved) or [Metric()]


def parse(text: str) -> Metric:
    """``kind:event``, ``ratio:numerator/denominator`` or a bare event name."""
    kind, colon, rest = text.strip().partition(":")
    if not colon:
        return Metric(_event(kind))
    if kind not in KINDS:
        raise MetricError(f"{text!r}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    numerator, slash, denominator = rest.partition("/")
    if slash and kind != "ratio":
        raise MetricError(f"{text!r}: a denominator is for ratio metrics only")
    return Metric(_event(numerator), kind, _event(denominator))


def _event(text: str) -> str:
    text = text.strip()
    if len(text) > 200:
        raise MetricError("an event name is at most 200 characters")
    return "" if text == "*" else text
