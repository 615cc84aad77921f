"""The keyed stage's work on one record, with no Kafka and no waiting: decode it, apply its
items, route the rest (``pipeline.keyed`` runs it for every record of a batch). Compiled with the
other per-event modules (``pipeline.native``): no Struct here."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Generic, TypeVar

import msgspec

from pipeline.canonical import CanonicalEvent, Invalid
from pipeline.items import Decoded, Routed
from pipeline.items import decoder as routed_decoder
from pipeline.items import encoder as routed_encoder
from pipeline.normalize import normalize
from pipeline.processor import Processor, letter
from pipeline.records import events_by_partition, people
from pipeline.rows import Writes
from pipeline.state import CompanyState, Seen, UnitState, UserState
from pipeline.statestore import StateStore
from pipeline.stores import Stores
from sluice.envelope import MAX_RECORD_BYTES, DeadLetter, encoder, raw_batch_decoder

T = TypeVar("T")

MAX_STATE_VALUE = 1 << 20
"""Bytes of one state value; a larger one is not written (counted as ``state_value``). The caps in
``pipeline.state`` keep real values far below it; this only makes the bound a guarantee."""


class KindStore(Generic[T]):
    """One kind of state (a prefix of the store's keys) as msgspec structs."""

    def __init__(self, state: StateStore, prefix: str, kind: type[T], refused: Callable[[str], None]) -> None:
        self.state = state
        self.db = state.db  # read directly: the store's get, without a Python call in between
        self.prefix = prefix.encode() + b"\x00"
        self.decoder = msgspec.json.Decoder(kind)
        self.refused = refused

    def get(self, key: str) -> T | None:
        value = self.db.get(self.prefix + key.encode())
        return None if value is None else self.decoder.decode(value)

    def set_all(self, values: dict[str, tuple[T, int]]) -> list[str]:
        """Stage the values for the commit, each in its key's partition; the keys refused."""
        encode, prefix, pending = encoder.encode, self.prefix, self.state.pending  # a batch's every new id
        refused: list[str] = []
        for key, (value, partition) in values.items():
            encoded = encode(value)
            if len(encoded) > MAX_STATE_VALUE:
                self.refused("state_value")
                refused.append(key)
                continue
            pending.setdefault(partition, []).append((prefix + key.encode(), encoded))  # StateStore.put, inlined
        return refused


def stores_on(state: StateStore, refused: Callable[[str], None]) -> Stores:
    return Stores(
        seen=KindStore(state, "seen", Seen, refused),
        units=KindStore(state, "unit", UnitState, refused),
        users=KindStore(state, "user", UserState, refused),
        companies=KindStore(state, "company", CompanyState, refused),
    )


def decode_keyed(value: bytes) -> Decoded:
    """One keyed record → its items, or a dead letter when it cannot be decoded."""
    try:
        return Decoded([], [], routed_decoder.decode(value), Counter())
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Decoded([undecodable(value, f"undecodable keyed record: {exc}")], [], [], Counter())


def decode_raw(value: bytes) -> Decoded:
    """One raw record → its canonical events, and dead letters for the rest."""
    try:
        batch = raw_batch_decoder.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        return Decoded([undecodable(value, f"undecodable raw record: {exc}", time.time())], [], [],
                       Counter({("", "undecodable"): 1}))  # fmt: skip
    letters: list[DeadLetter] = []
    canonical: list[CanonicalEvent] = []
    for item in normalize(batch):
        if isinstance(item, Invalid):
            letters.append(DeadLetter(
                family=batch.family, route=batch.route, org_id=batch.org_id, reason=item.reason,
                received_at=batch.received_at, payload=item.payload, source="worker", index=item.index,
                project_id=batch.project_id, env=batch.env, batch=batch.batch,
                id=f"normalize:{batch.org_id}:{batch.body_digest}:{item.index}",
            ))  # fmt: skip
        else:
            canonical.append(item)
    counts: Counter[tuple[str, str]] = Counter(
        {(batch.family, "invalid"): len(letters), (batch.family, "in"): len(canonical)}
    )
    return Decoded(letters, canonical, [], counts)


def take_raw(processor: Processor, partitions: int, partition: int, offset: int, decoded: Decoded, writes: Writes,
             forwarding: dict[int, list[Routed]]) -> None:  # fmt: skip
    """A raw batch: its events of this partition's units processed here, every other item
    forwarded to its partition (committed with this partition's transaction). The user and
    company items of the events processed here go only for those that were new, ``checked``."""
    writes.letters += decoded.letters
    for key, count in decoded.normalized.items():
        writes.normalized[key] += count
    here: list[CanonicalEvent] = []
    elsewhere: list[CanonicalEvent] = []
    index = 0
    for destination, items in events_by_partition(decoded.events, partitions).items():
        for item in items:
            event = item.event
            if destination != partition:  # the topic's partitions differ from the gateway's count
                forwarding.setdefault(destination, []).append(item)
                elsewhere.append(event)
            elif processor.process(partition, offset, index, True, "event", event, False, writes):
                here.append(event)
            index += 1
    for checked, events in ((True, here), (False, elsewhere)):
        for destination, items in people(events, partitions, checked).items():
            forwarding.setdefault(destination, []).extend(items)


def take_keyed(processor: Processor, partition: int, offset: int, decoded: Decoded, writes: Writes) -> None:
    """A keyed record: each of its items applied here."""
    writes.letters += decoded.letters
    for index, item in enumerate(decoded.items):
        processor.process(partition, offset, index, False, item.kind, item.event, item.checked, writes)


def tally(events: list[CanonicalEvent]) -> tuple[dict[str, int], dict[datetime, int]]:
    """Events by family and by received time (the metrics of a batch's rows)."""
    families: dict[str, int] = {}
    received: dict[datetime, int] = {}
    for event in events:
        families[event.family] = families.get(event.family, 0) + 1
        received[event.received_at] = received.get(event.received_at, 0) + 1
    return families, received


def undecodable(value: bytes, reason: str, received_at: float = 0.0) -> DeadLetter:
    return DeadLetter(
        family="", route="", org_id="", reason=reason, received_at=received_at, source="worker",
        payload=msgspec.Raw(msgspec.json.encode(value.decode("utf-8", "replace"))),
    )  # fmt: skip


def split(items: list[Routed], letters: list[DeadLetter]) -> list[bytes]:
    """Items as keyed records of at most ``MAX_RECORD_BYTES``; an item larger than that alone is
    a dead letter (it could never be produced)."""
    whole = routed_encoder.encode(items)
    if len(whole) <= MAX_RECORD_BYTES:
        return [whole]
    if len(items) == 1:
        letters.append(letter(items[0].event, f"event too large after normalizing ({len(whole)} bytes)"))
        return []
    middle = len(items) // 2
    return split(items[:middle], letters) + split(items[middle:], letters)
