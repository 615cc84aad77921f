"""What keyed records hold: items, each a canonical event with the kind of state it touches
(routed by ``pipeline.records``); and an item as the keyed stage takes it, with where it came from."""

from __future__ import annotations

from collections import Counter
from typing import Literal, NamedTuple

import msgspec

from pipeline.canonical import CanonicalEvent
from sluice.envelope import DeadLetter

Kind = Literal["event", "user", "company"]


class Routed(msgspec.Struct, array_like=True, gc=False):
    kind: Kind
    event: CanonicalEvent
    checked: bool = False
    """A user or company item of an event its own partition has already deduplicated: it is
    applied without a dedupe lookup of its own (see ``pipeline.records.people``)."""


class Incoming(msgspec.Struct, gc=False):
    partition: int
    offset: int
    record: Routed
    index: int = 0
    """The item's position in its record (a keyed record holds a list of items; a raw batch's
    events are numbered as ``pipeline.records.events_by_partition`` lists them)."""
    raw: bool = False
    """The record is a raw batch (its source partition is ``RAW_SOURCE + partition``)."""


class Decoded(NamedTuple):
    """A record decoded (``KeyedStage.prepare``): a raw batch's dead letters, canonical events and
    counts by (family, outcome); or a keyed record's items."""

    letters: list[DeadLetter]
    events: list[CanonicalEvent]
    items: list[Routed]
    normalized: Counter[tuple[str, str]]


encoder = msgspec.json.Encoder()
decoder = msgspec.json.Decoder(list[Routed])
