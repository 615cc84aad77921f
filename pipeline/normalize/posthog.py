"""PostHog capture events → canonical.

- Ids: the unit is the ``distinct_id``. It is the user, unless the event says it makes no person
  profile (``$process_person_profile: false``, posthog-js's anonymous visitors), when it is the
  anonymous id. The message id is the event's ``uuid``; an event without one gets an id derived
  from its own bytes and place, so a retried request is deduplicated however its ``sent_at`` moved.
- Time, as PostHog's ingestion computes it: ``timestamp + (now − sent_at)`` when the request
  has a ``sent_at`` (the body's, else the ``_`` parameter), unless ``$ignore_sent_at``; else
  ``now − offset`` (ms) when the event has an ``offset`` and no ``timestamp``; else the
  ``timestamp`` as it is, else the time it arrived.
- ``$identify``, ``$set``, ``$set_once`` → identify: the user's traits from ``$set_once`` then
  ``$set`` (``/engage``'s ``$set`` too); an ``$identify`` naming ``$anon_distinct_id`` also
  aliases that id to the user (a second row, message id ``{uuid}:alias``). ``$create_alias`` →
  alias (``properties.alias`` becomes an alias of the distinct id). ``$groupidentify`` → the
  company ``$group_key`` with ``$group_set`` as its traits (its distinct id is no person).
- ``$feature_flag_called`` with ``$feature_flag`` and ``$feature_flag_response`` is an exposure:
  experiment = the flag, variant = the response. ``$pageview`` and ``$screen`` are page and
  screen; every other event is a track, attributed like every family's.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

from pipeline.canonical import CanonicalEvent, Invalid
from pipeline.normalize.common import (
    SESSION_ID_MAX,
    as_json,
    decode_event,
    event_time,
    extras,
    parse_time,
    received,
    representable,
    skew,
    text,
)  # fmt: skip
from sluice.envelope import RawBatch, body_digest, derived_message_id
from sluice.wire.posthog import PostHogEvent, as_text, check, distinct_id, event_decoder, name_of

FIELDS = frozenset(PostHogEvent.__struct_fields__) | {"$distinct_id", "$token", "$set"}
PEOPLE = frozenset(("$identify", "$set", "$set_once"))
KINDS = {"$pageview": "page", "$screen": "screen"}


def normalize(batch: RawBatch) -> Iterator[CanonicalEvent | Invalid]:
    arrived = received(batch)
    sent = parse_time(batch.sent_at)
    shift = skew(arrived, sent)
    route = batch.route
    for index, payload in zip(batch.indexes, batch.events, strict=True):
        decoded = decode_event(payload, PostHogEvent, lambda e: check(e, route), event_decoder)
        if isinstance(decoded, str):
            yield Invalid(index, decoded, payload)
            continue
        fields, event = decoded
        name = name_of(event, route)
        properties: dict[str, Any] = dict(event.properties or {})
        if event.dollar_set is not None:
            properties.setdefault("$set", event.dollar_set)
        distinct = distinct_id(event)
        person = properties.get("$process_person_profile") is not False
        own_id = event.uuid or derived_message_id(batch.org_id, body_digest(bytes(payload)), index)
        row = CanonicalEvent(
            org_id=batch.org_id, project_id=batch.project_id, env=batch.env,
            message_id=own_id, family="posthog", type=KINDS.get(name, "track"), event=name,
            user_id=distinct if person else "", anonymous_id="" if person else distinct, unit_key=distinct,
            session_id=text(properties.get("$session_id"), SESSION_ID_MAX),
            timestamp=arrived, received_at=arrived, sent_at=representable(sent),
            page_url=text(properties.get("$current_url"), 2000),
        )  # fmt: skip
        row.timestamp, row.original_timestamp = _time(event, properties, arrived, shift)
        if unknown := extras(fields, FIELDS):
            row.context = as_json({"extra": unknown})
        alias = _person(row, name, properties)
        row.properties = as_json(properties)
        yield row
        if alias:
            yield CanonicalEvent(
                org_id=row.org_id, project_id=row.project_id, env=row.env, message_id=f"{own_id}:alias",
                family="posthog", type="alias", event="$identify", user_id=distinct, unit_key=distinct,
                timestamp=row.timestamp, received_at=arrived, sent_at=row.sent_at, previous_id=alias,
            )  # fmt: skip


def _person(row: CanonicalEvent, name: str, properties: dict[str, Any]) -> str:
    """Make ``row`` the identify, alias, group or exposure its event is; return the anonymous id an
    ``$identify`` merges into the user ("" for none)."""
    if name in PEOPLE:
        row.type, row.user_id, row.anonymous_id = "identify", row.unit_key, ""
        traits = {**_object(properties.get("$set_once")), **_object(properties.get("$set"))}
        row.traits = as_json(traits)
        anonymous = as_text(properties.get("$anon_distinct_id"))[:200] if name == "$identify" else ""
        return anonymous if anonymous != row.user_id else ""
    if name == "$create_alias":
        alias = as_text(properties.get("alias"))[:200]
        if alias:
            row.type, row.user_id, row.anonymous_id, row.previous_id = "alias", row.unit_key, "", alias
    elif name == "$groupidentify":
        key = as_text(properties.get("$group_key"))[:200]
        if key:
            row.type, row.group_id, row.user_id = "group", key, ""
            group_type = properties.get("$group_type")
            row.traits = as_json({**_object(properties.get("$group_set")), "$group_type": group_type})
    elif name == "$feature_flag_called":
        flag = text(properties.get("$feature_flag"))[:200]
        response = properties.get("$feature_flag_response")
        if flag and response is not None:
            row.type, row.experiment_id, row.variant_id = "exposure", flag, as_text(response)[:200]
    return ""


def _time(event: PostHogEvent, properties: dict[str, Any], arrived: datetime, shift: timedelta) -> tuple[datetime, str]:
    own = parse_time(event.timestamp)
    if own is None and isinstance(event.offset, int | float) and abs(event.offset) < 10 * 365 * 86_400_000:
        return arrived - timedelta(milliseconds=event.offset), ""
    if properties.get("$ignore_sent_at") is True:
        shift = timedelta(0)
    return event_time(own, arrived, shift)


def _object(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
