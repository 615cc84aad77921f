"""What the normalize stage writes to the keyed topic, and to which partition.

One canonical event fans out to up to three items, each routed by a key so that the state it
touches is local to one partition (and one worker):

- ``event``   routed by ``org␀unit:UNIT``     — dedupe, the events table, experiments;
- ``user``    routed by ``org␀user:USER``     — first/last seen, traits, company membership;
- ``company`` routed by ``org␀company:ID``    — company traits (group / companies/identify).

The partition is ``crc32(key) mod partitions``, chosen here rather than by the producer, so that
one raw batch becomes one keyed record per partition it touches (a list of items): per-record
costs in Kafka are paid per hundred events, not per event.
"""

from __future__ import annotations

import zlib
from typing import Literal

import msgspec

from pipeline.canonical import CanonicalEvent

Kind = Literal["event", "user", "company"]


class Routed(msgspec.Struct, array_like=True):
    kind: Kind
    event: CanonicalEvent


def route(event: CanonicalEvent) -> list[tuple[bytes, Routed]]:
    """The keyed records for one canonical event."""
    out = [(f"{event.org_id}\x00unit:{event.unit_key}".encode(), Routed("event", event))]
    if event.user_id:
        out.append((f"{event.org_id}\x00user:{event.user_id}".encode(), Routed("user", event)))
    if event.type == "group" and event.group_id:
        out.append((f"{event.org_id}\x00company:{event.group_id}".encode(), Routed("company", event)))
    return out


def partition_of(key: bytes, partitions: int) -> int:
    return zlib.crc32(key) % partitions


def by_partition(events: list[CanonicalEvent], partitions: int) -> dict[int, list[Routed]]:
    """The items of one raw batch, grouped into one keyed record per partition."""
    out: dict[int, list[Routed]] = {}
    for event in events:
        for key, item in route(event):
            out.setdefault(partition_of(key, partitions), []).append(item)
    return out


encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(list[Routed])
