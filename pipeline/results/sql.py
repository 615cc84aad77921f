"""The results' SQL: per variant and time bucket, the sufficient statistics of one metric.

Per variant and bucket of first exposure: n, Σx, Σx², and Σd, Σd², Σxd for a ratio's denominator
or CUPED's covariate; nothing per unit leaves the engine. Two statements: n from the exposure
rollups (``units``), and the other sums over the units that can make them non-zero (``sums``). The
worker keeps each unit's tallies (``event_counts``, ``event_values``: attributed tracks at or after
its first exposure), so x and a ratio's d are map lookups.

CUPED's covariate is the same metric for the unit in the ``window_days`` before its first exposure,
0 where it has none. It comes from ``events``: the tracks named E in the experiment's whole
pre-window (its earliest first exposure − window … its latest), less those the worker marked as
after the unit's first exposure in this experiment (``post_exposure``: never in the unit's window,
so skipped unread), grouped per unit into small arrays — only units with such tracks, so the
join's right side stays small — then LEFT JOINed to the units by a 128-bit hash of the unit key
and filtered per unit to its own window. Copies of one event (a replay not yet merged) are one:
only the first occurrence of a message id's hash in a unit's arrays counts, so ``events`` need not
be read with FINAL. A track that arrives late (after its unit's exposure, its time in the window)
is in the next read.

Values are the worker's (``events.value``): a track's ``value`` property if numeric, else the
configured value property (``order_total``) if numeric, else 0 (``pipeline.processor``) — the
numbers the units' tallies sum. Rows written before the worker wrote them (NULL) get the same
rule at read time, with the value property the reader is configured with.
"""

from __future__ import annotations

from pipeline.stats import Kind

BOUNDS = (
    "SELECT toInt64(toUnixTimestamp(min(minute))) * 1000 AS first, toInt64(toUnixTimestamp(max(minute))) * 1000 "
    "+ 59999 AS last FROM rollups_1m WHERE org_id = {org:String} AND kind = 'exposure' "
    "AND experiment_id = {experiment:String} AND units > 0 HAVING count() > 0"
)
"""The span of first exposures, from the exposure rollups (a few rows, where ``experiment_units``
has one per unit): every unit's first exposure is before the end of the minute of its first
exposure's record. A unit's first exposure moves earlier only when an exposure with an earlier
time is processed later; the CUPED window reaches ``PRE_MARGIN_MS`` further back for those."""
PRE_MARGIN_MS = 86_400_000

EXPERIMENTS = (
    "SELECT experiment_id, count() AS units, toUnixTimestamp64Milli(max(first_exposed_at)) AS last "
    "FROM experiment_units WHERE org_id = {org:String} AND first_exposed_at IS NOT NULL "
    "GROUP BY experiment_id ORDER BY last DESC LIMIT 500"
)
"""An org's experiments with exposed units (rows, not units: versions counted; for listing)."""

ORGS = "SELECT DISTINCT org_id FROM experiment_units ORDER BY org_id LIMIT 500"

UNATTRIBUTED = (
    "SELECT toUInt64(sum(count)) AS tracks FROM rollups_1m FINAL WHERE org_id = {org:String} AND kind = 'track' "
    "AND experiment_id = '' AND minute >= toDateTime(intDiv({first:Int64}, 1000), 'UTC')"
)
"""The org's tracks attributed to no experiment at all since the experiment's first exposure."""

_VALUE = (
    "if(isNull(value), if(JSONType(properties, 'value') IN ('Int64', 'UInt64', 'Double'), "
    "JSONExtractFloat(properties, 'value'), if(JSONType(properties, {value_property:String}) "
    "IN ('Int64', 'UInt64', 'Double'), JSONExtractFloat(properties, {value_property:String}), 0.)), "
    "assumeNotNull(value))"
)
"""A track's value: the worker's (``events.value``), else — a row written before the worker wrote
values (NULL) — the same rule over its properties with the configured value property.

``if``, not ``ifNull``: ClickHouse evaluates ``if``'s branches only for the rows that take them
(short-circuit evaluation, on by default), but computes both of ``ifNull``'s arguments for every
row — the JSON rule over every track's properties in the window, though the worker wrote a value.
Measured on ``bench/results_query.py``'s 10 M units: ``mean`` with CUPED 1.84 → 1.68 s."""

_EVENT = "({event:String} = '' OR event = {event:String})"


def metric_x(kind: Kind) -> str:
    """The per-unit metric x over a unit's tallies (E = '' means any attributed track)."""
    if kind == "conversion":
        return (
            "toFloat64(if({event:String} = '', arrayExists(c -> c > 0, mapValues(event_counts)), "
            "event_counts[{event:String}] > 0))"
        )
    if kind == "count":
        return "toFloat64(if({event:String} = '', arraySum(mapValues(event_counts)), event_counts[{event:String}]))"
    return "if({event:String} = '', arraySum(mapValues(event_values)), event_values[{event:String}])"


def covariate(kind: Kind) -> str:
    """The per-unit covariate d: the metric over the unit's tracks before its first exposure ``t0``
    (ms), within the window — from the arrays ``pre_ids`` (message id hashes), ``pre_times`` (ms)
    and ``pre_values``, in which the copies of one event (a replay not yet merged away) are one:
    only an id's first occurrence counts (``arrayEnumerateUniq``)."""
    inside = "f = 1 AND t >= t0 - {window_ms:Int64} AND t < t0"
    if kind == "conversion":
        return "toFloat64(arrayExists(t -> t >= t0 - {window_ms:Int64} AND t < t0, pre_times))"  # copies alike
    if kind == "count":
        return f"toFloat64(arrayCount((t, f) -> {inside}, pre_times, arrayEnumerateUniq(pre_ids)))"
    return f"arraySum((v, t, f) -> if({inside}, v, 0.), pre_values, pre_times, arrayEnumerateUniq(pre_ids))"


_UNIT = "sipHash128(unit_key)"
"""The join's key for a unit: its key's 128-bit SipHash, a fixed-size key that ClickHouse's hash join
builds and probes at about twice the speed of the string (measured at 10 M units) — and the identity
ClickHouse itself gives a string in ``uniqExact`` and in a GROUP BY on several string keys: two of
10 M keys share one with a probability of about 10⁻²⁵."""

_BUCKET = "least(greatest(intDiv({t} - {{first:Int64}}, {{width:Int64}}), 0), {{last_bucket:Int64}})"


def units() -> str:
    """Exposed units per variant and bucket, from the exposure rollups: a unit is counted once, in
    the variant and minute of its first exposure's record (``pipeline.processor``), exactly — a
    rollup row is keyed by its source record, so a replay replaces it. Parameters: org,
    experiment, first, width, last_bucket."""
    bucket = _BUCKET.format(t="toInt64(toUnixTimestamp(minute)) * 1000")
    return (
        f"SELECT variant_id AS variant, {bucket} AS bucket, "
        "toUInt64(sum(units)) AS n FROM rollups_1m FINAL WHERE org_id = {org:String} AND kind = 'exposure' "
        "AND experiment_id = {experiment:String} AND units > 0 GROUP BY variant, bucket ORDER BY variant, bucket"
    )


def sums(kind: Kind, cuped: bool) -> str:
    """Per variant and bucket of first exposure (−1: never exposed): Σx, Σx², and Σd, Σd², Σxd (a
    ratio's denominator, or with ``cuped`` the covariate), with the health counts.

    Only units with an attributed track can have x ≠ 0 (or a ratio's d ≠ 0), and with CUPED only
    those with a track named E in the window can have d ≠ 0; the rest add nothing to any sum. So
    the scan keeps those units alone *before* FINAL merges versions (``PREWHERE``, which
    ClickHouse applies before FINAL): a unit's tallies, conversions and variants only grow (its
    first conversion ``converted_at``, set with the first, stays set), and
    whether it has pre-window tracks does not depend on the version, so when a unit's newest
    version passes the filter every version after it does, and FINAL still keeps the newest.
    With CUPED, the units' tracks in the window (grouped per unit into a small array) are the
    right side of a LEFT JOIN on ``_UNIT``, filtered per unit to its own window.
    Parameters: org, experiment, event, denominator (ratio), first, width, last_bucket; with ``cuped`` also
    value_property, window_ms, pre_from, pre_to."""
    x = metric_x(kind)
    # converted_at (the first of a unit's conversions, NULL while it has none) in place of the
    # conversions map: one nullable column read instead of a map (measured at 10 M units: the
    # filtered FINAL scan 0.55 → 0.42 s)
    kept = "converted_at IS NOT NULL OR variants_seen > 1"
    window = (
        f"org_id = {{org:String}} AND type = 'track' AND {_EVENT} "
        "AND timestamp >= fromUnixTimestamp64Milli({pre_from:Int64}, 'UTC') "
        "AND timestamp < fromUnixTimestamp64Milli({pre_to:Int64}, 'UTC') "
        "AND NOT has(post_exposure, {experiment:String})"
    )
    cuped = cuped and kind != "ratio"
    if cuped:
        # by a hash of the key: a set of numbers is probed at about twice the speed of one of strings
        # (measured at 10 M units), and a collision only lets one more unit through the filter
        kept += f" OR cityHash64(unit_key) IN (SELECT cityHash64(unit_key) FROM events WHERE {window})"
    d = "toFloat64(event_counts[{denominator:String}])" if kind == "ratio" else "0."
    units = (
        f"SELECT variant_id, {_UNIT} AS unit, variants_seen, converted_at IS NOT NULL AS tracked, "
        "first_exposed_at IS NOT NULL AS exposed, "
        f"ifNull(toUnixTimestamp64Milli(first_exposed_at), 0) AS t0, {x} AS x, {d} AS d0 "
        f"FROM experiment_units FINAL PREWHERE {kept} "
        "WHERE org_id = {org:String} AND experiment_id = {experiment:String}"
    )
    source = f"({units}) AS u"
    if cuped:
        pre = (
            f"SELECT {_UNIT} AS unit, groupArray(cityHash64(message_id)) AS pre_ids, "
            f"groupArray(toUnixTimestamp64Milli(timestamp)) AS pre_times, groupArray({_VALUE}) AS pre_values "
            f"FROM events WHERE {window} GROUP BY unit"
        )
        source += f" LEFT JOIN ({pre}) AS e ON u.unit = e.unit"
    per_unit = (
        f"SELECT variant_id, variants_seen, tracked, exposed, x, {covariate(kind) if cuped else 'd0'} AS d, "
        f"if(exposed, {_BUCKET.format(t='t0')}, -1) AS bucket FROM {source}"
    )
    return (
        "SELECT variant_id AS variant, bucket, sum(x) AS sum, sum(x * x) AS sum_squares, "
        "sum(d) AS d_sum, sum(d * d) AS d_sum_squares, sum(x * d) AS sum_of_products, "
        "countIf(variants_seen > 1) AS multi_exposed, "
        "countIf(NOT exposed AND tracked) AS unexposed_tracked "
        f"FROM ({per_unit}) GROUP BY variant, bucket ORDER BY variant, bucket"
    )
