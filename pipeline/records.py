"""Routing: which partition's state each canonical event touches, and the keyed records that
carry an item to a partition other than the one its raw batch landed in.

One canonical event fans out to up to three items, each routed by a key so that the state it
touches is local to one partition (and one worker):

- ``event``   routed by ``org␀unit:UNIT``     — dedupe, the events table, experiments;
- ``user``    routed by ``org␀user:USER``     — first/last seen, traits, company membership;
- ``company`` routed by ``org␀company:ID``    — company traits (group / companies/identify).

The partition is ``crc32(key) mod partitions``. The gateway puts each event in the partition of
its unit (:func:`sluice.routing.split`: one raw record per partition a request's events fall in, one for a
client's batch), so the worker processes events where they land, in one hop and in the order
they came; user and company items (and an event that landed elsewhere, if the topic's partition
count differs from ``SLUICE_RAW_PARTITIONS``) are forwarded to their partition as keyed records
(lists of items), in the transaction that commits the raw batch (``pipeline.keyed``). One org's
traffic spreads over every partition, as its units do.
"""

from __future__ import annotations

from pipeline.canonical import CanonicalEvent
from pipeline.items import Routed
from sluice.routing import company_route, partition_of, unit_route, user_route


def route(event: CanonicalEvent) -> list[tuple[bytes, Routed]]:
    """The keyed records for one canonical event."""
    out = [(unit_route(event.org_id, event.unit_key), Routed("event", event))]
    if event.user_id:
        out.append((user_route(event.org_id, event.user_id), Routed("user", event)))
    if event.type == "group" and event.group_id:
        out.append((company_route(event.org_id, event.group_id), Routed("company", event)))
    return out


def by_partition(events: list[CanonicalEvent], partitions: int) -> dict[int, list[Routed]]:
    """Every item of ``events`` (a raw batch's), grouped by partition: the events, in the
    batch's order, then the users' and companies' items (:func:`people`)."""
    out = events_by_partition(events, partitions)
    for partition, items in people(events, partitions).items():
        out.setdefault(partition, []).extend(items)
    return out


def events_by_partition(events: list[CanonicalEvent], partitions: int) -> dict[int, list[Routed]]:
    """The events' items grouped by their units' partitions, in the batch's order."""
    out: dict[int, list[Routed]] = {}
    units: dict[tuple[str, str], list[Routed]] = {}  # a batch is mostly one unit's: route it once
    for event in events:
        unit = (event.org_id, event.unit_key)
        items = units.get(unit)
        if items is None:
            items = units[unit] = out.setdefault(partition_of(unit_route(*unit), partitions), [])
        items.append(Routed("event", event))
    return out


def people(events: list[CanonicalEvent], partitions: int, checked: bool = False) -> dict[int, list[Routed]]:
    """The user and company items of ``events``, grouped by partition.

    A user's items are what changes the user: every ``identify`` and ``group``, and of its other
    events only the earliest and the latest — touching a user only widens its first/last seen,
    which the batch's extremes decide alone. One user item per batch instead of one per event.

    ``checked``: the events are new, deduplicated where they were processed, so a duplicate
    event sends no item at all. Such items need no dedupe entry of their own at their
    destination because every rule they apply is idempotent and independent of order (first/last
    seen, traits by time, company membership): an item applied twice — a replay, or a copy of the
    event that came by another partition — changes nothing the first did not. Items of events
    forwarded unprocessed are not checked: their destination deduplicates them."""
    out: dict[int, list[Routed]] = {}
    touches: dict[tuple[str, str], tuple[CanonicalEvent, CanonicalEvent]] = {}
    for event in events:
        if event.user_id:
            if event.type in ("identify", "group"):
                key = user_route(event.org_id, event.user_id)
                out.setdefault(partition_of(key, partitions), []).append(Routed("user", event, checked))
            else:
                user = (event.org_id, event.user_id)
                earliest, latest = touches.get(user, (event, event))
                touches[user] = (
                    event if event.timestamp < earliest.timestamp else earliest,
                    event if event.timestamp > latest.timestamp else latest,
                )
        if event.type == "group" and event.group_id:
            key = company_route(event.org_id, event.group_id)
            out.setdefault(partition_of(key, partitions), []).append(Routed("company", event, checked))
    for (org_id, user_id), (earliest, latest) in touches.items():
        items = out.setdefault(partition_of(user_route(org_id, user_id), partitions), [])
        items.append(Routed("user", touch_of(earliest), checked))
        if latest is not earliest:
            items.append(Routed("user", touch_of(latest), checked))
    return out


def touch_of(event: CanonicalEvent) -> CanonicalEvent:
    """What touching a user takes of an event: who, when, and its id (a destination that
    deduplicates the item needs it) — not its properties, context or traits, which the user's
    state never reads from a touch. A keyed record of touches is a fraction of the size of the
    events it stands for: less to encode, send, fetch and decode."""
    return CanonicalEvent(
        org_id=event.org_id, project_id=event.project_id, env=event.env, message_id=event.message_id,
        family=event.family, type=event.type, user_id=event.user_id, timestamp=event.timestamp,
        received_at=event.received_at,
    )  # fmt: skip
