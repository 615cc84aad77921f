"""The keyed stage's logic: dedupe, users and companies, experiment attribution, rollups.

``process_one`` applies one item of a keyed record (with its partition and offset) to the state
stores and to :class:`~pipeline.rows.Writes` — typed rows for the warehouse. It blocks on
nothing and knows nothing of Kafka or ClickHouse; ``pipeline.keyed`` runs it per batch with the
real store, and tests run that same batch body.

Effectively once, in three rules:

1. **Transactions** (``pipeline.keyed``): a batch's state changes and its consumed offsets are
   committed together, per partition, by a producer fenced by the partition's transactional id;
   the rows are written before that commit and are a pure function of the committed state and
   the records, so writing them twice writes the same rows (``pipeline.rows``).
2. **Dedupe by message id** (per org and record kind), remembering the (partition, offset) that
   first carried the id: the same record replayed is not a duplicate, any other copy is —
   client retries, SDK double sends, the normalize stage re-emitting after a crash. A user or
   company item of an event deduplicated where it was processed is ``checked`` and needs no
   entry of its own (``pipeline.records.people``).
3. **Idempotent state** (``pipeline.state``): replaying an event changes nothing, and "first
   exposure / first conversion" is decided by the record that was first, not by whoever comes.

No item can stop the stage: an item that raises becomes a dead letter with the error, and the
batch goes on; state values are bounded by the caps in ``pipeline.state``.

Attribution of a track event to experiments: ``pipeline.attribution``; the stores and the layer
that keeps a batch's changes readable until it commits: ``pipeline.stores``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, TypeVar

import msgspec

from pipeline.attribution import attribute, layers_of, own_pair
from pipeline.canonical import CanonicalEvent
from pipeline.items import Incoming
from pipeline.rows import AliasRow, CompanyRow, RollupRow, UnitRow, UserRow, Writes
from pipeline.rules import assign, convert, decide, expose, join, merge_traits, plain_traits, touch
from pipeline.state import (
    MAX_EXPERIMENTS,
    MAX_PAIRS,
    RAW_SOURCE,
    CompanyState,
    Seen,
    Source,
    UnitState,
    UserState,
)
from pipeline.stores import Stores, WriteBack
from sluice.envelope import DeadLetter

MAX_POST_EXPOSURE = 16
"""Experiments listed in a track's ``post_exposure`` (an optimisation of the covariate's scan, so a
shorter list only makes that scan read more)."""

T = TypeVar("T")
DAY = 86400.0
Group = tuple[str, str, str, str, int, int, int]
"""What the rollup rows of one event share: org, project, env, event name, minute, source partition
and offset (``Processor._group``)."""


@dataclass
class Processor:
    stores: Stores
    topic: str
    dedupe_window: float = 7 * DAY
    value_property: str = "order_total"
    raw_topic: str = ""

    def __post_init__(self) -> None:
        self._seen = WriteBack(self.stores.seen)
        self._units = WriteBack(self.stores.units)
        self._users = WriteBack(self.stores.users)
        self._companies = WriteBack(self.stores.companies)
        self._partition = 0
        self._offset = 0
        self._received: datetime | None = None
        self._received_at = 0.0

    def begin(self) -> Writes:
        return Writes()

    def save_state(self, writes: Writes) -> None:
        """Write the batch's state changes to the stores (the state store stages each key's
        changelog record for the key's partition). They stay readable to the next batches until
        ``release(writes)``, after the batch's commit."""
        writes.layers = [self._seen.flush(), self._units.flush(), self._users.flush(), self._companies.flush()]

    def release(self, writes: Writes) -> None:
        """The batch's commit has ended: its state is in the store (or was dropped, and its
        partitions let go)."""
        caches: tuple[WriteBack[Any], ...] = (self._seen, self._units, self._users, self._companies)
        for cache, layer in zip(caches, writes.layers, strict=False):
            cache.release(layer)
        writes.layers = []

    def holds_seen(self, key: bytes) -> bool:
        """The dedupe entry under the store's ``key`` was written by a batch not yet committed."""
        name = key.split(b"\x00", 1)[-1].decode("utf-8", "replace")
        return any(name in layer for layer in self._seen.layers)

    def discard_state(self, partition: int | None = None) -> None:
        """Forget the state changes not committed yet, of ``partition`` or of all (a commit failed:
        the records will be processed again)."""
        for cache in (self._seen, self._units, self._users, self._companies):
            if partition is None:
                cache.dirty.clear()
                cache.layers.clear()
            else:
                cache.forget(partition)

    def process_one(self, item: Incoming, writes: Writes) -> bool:
        """Apply one item to the state and to ``writes``; an item that fails becomes a dead letter.
        False when the item is a duplicate (and changed nothing). A ``checked`` item was
        deduplicated as an event already (``pipeline.records.people``)."""
        record = item.record
        return self.process(item.partition, item.offset, item.index, item.raw, record.kind, record.event,
                            record.checked, writes)  # fmt: skip

    def process(self, partition: int, offset: int, index: int, raw: bool, kind: str, event: CanonicalEvent,
                checked: bool, writes: Writes) -> bool:  # fmt: skip
        """``process_one`` with the item's fields as arguments (``pipeline.batch`` calls it for
        every event: no ``Incoming`` made)."""
        source = (partition + RAW_SOURCE if raw else partition, offset, index)
        self._partition, self._offset = partition, offset
        try:
            if not checked and self._duplicate(kind, event, source):
                if kind == "event":
                    writes.duplicates[event.family] += 1
                return False
            if kind == "event":
                self._event(event, source, writes)
            elif kind == "user":
                self._user(event, source, writes)
            elif kind == "company":
                self._company(event, source, writes)
            else:
                raise KeyError(kind)
        except Exception as exc:  # a bug or an input nobody foresaw: this item only
            reason = f"worker could not process the {kind}: {type(exc).__name__}: {exc}"
            writes.letters.append(letter(event, reason, f"keyed:{partition}:{offset}:{index}"))
        return True

    def finish(self, writes: Writes) -> Writes:
        """Build the unit, user and company rows, once per unit and experiment, user or company,
        from its state at the end of the batch (a user's version: the offset of its last item)."""
        for (org_id, experiment, unit_key), (event, unit) in writes.touched_units.items():
            unit_row = _unit_row(event, experiment, unit, unit.version)
            writes.units[(org_id, experiment, unit_row.variant_id, unit_key)] = unit_row
        for (org_id, user_id), (user, offset) in writes.touched_users.items():
            writes.users[(org_id, user_id)] = UserRow(
                org_id, user_id, _time(user.first_seen), _time(user.last_seen), _encode(plain_traits(user.traits)),
                list(user.companies), offset,
            )  # fmt: skip
        for (org_id, company_id), (company, offset) in writes.touched_companies.items():
            writes.companies[(org_id, company_id)] = CompanyRow(
                org_id, company_id, _time(company.first_seen), _time(company.last_seen),
                _encode(plain_traits(company.traits)), offset,
            )  # fmt: skip
        writes.touched_units.clear()
        writes.touched_users.clear()
        writes.touched_companies.clear()
        return writes

    def _received_at_of(self, event: CanonicalEvent) -> float:
        """``event.received_at`` in epoch seconds: a raw batch's events share one datetime, which
        is converted once."""
        moment = event.received_at
        if moment is not self._received:
            self._received, self._received_at = moment, moment.timestamp()
        return self._received_at

    def _duplicate(self, kind: str, event: CanonicalEvent, source: Source) -> bool:
        key = f"{kind}\x00{event.org_id}\x00{event.message_id}"
        at = self._received_at_of(event)
        seen = self._seen.get(key)
        if seen is not None:
            if seen.source == source:
                return False  # this very record again: its entry stands
            if at - seen.at <= self.dedupe_window:
                return True
        self._seen.put(key, Seen(source, at), self._partition)
        return False

    # --- kinds ----------------------------------------------------------------------------------

    def _event(self, event: CanonicalEvent, source: Source, writes: Writes) -> None:
        writes.events.append(event)
        kind = event.type
        if kind == "alias" and event.previous_id:
            writes.aliases.append(
                AliasRow(event.org_id, event.previous_id, event.user_id, event.timestamp, event.message_id)
            )
        if kind != "exposure" and kind != "decision" and kind != "track":
            return
        org_id, unit_key = event.org_id, event.unit_key
        key = f"{org_id}\x00{unit_key}"
        unit = self._units.get(key) or UnitState()
        changed = False  # a new unit is stored only once a rule records something in it
        at = event.timestamp.timestamp()
        group = self._group(event, source, at)
        properties = _properties(event)
        if kind == "track":
            touched, converted = self._track(event, unit, properties, at, source, group, writes)
            changed = converted or changed
        else:
            layers = properties.get("layers")
            if isinstance(layers, list) and len(layers) > MAX_PAIRS:
                writes.capped["pairs"] += len(layers) - MAX_PAIRS
            touched = self._tracked(unit, layers_of(properties) or own_pair(event), writes)
            if event.decision_id and touched:
                changed = decide(unit, event.decision_id, touched) or changed
            for experiment, variant in touched:
                if kind == "decision":
                    changed = assign(unit, experiment, variant, at) or changed
                else:
                    first, exposed = expose(unit, experiment, variant, at, source)
                    changed = exposed or changed
                    rollup = self._rollup(writes, group, "exposure", experiment, variant)
                    rollup.count += 1
                    rollup.units += first
        if not changed:
            return  # a unit exposed again, a track it already converted on, a new unit with nothing to record
        unit.version = max(unit.version + 1, int(self._received_at_of(event) * 1_000_000))
        self._units.put(key, unit, self._partition)
        for experiment, _ in touched:
            writes.touched_units[(org_id, experiment, unit_key)] = (event, unit)

    def _tracked(self, unit: UnitState, pairs: list[tuple[str, str]], writes: Writes) -> list[tuple[str, str]]:
        """The pairs the unit tracks or has room for (``MAX_EXPERIMENTS``); the rest are counted."""
        room = MAX_EXPERIMENTS - len(unit.experiments)
        kept = []
        for experiment, variant in pairs:
            if experiment in unit.experiments or room > 0:
                room -= experiment not in unit.experiments
                kept.append((experiment, variant))
        if len(kept) < len(pairs):
            writes.capped["experiments"] += len(pairs) - len(kept)
        return kept

    def _track(
        self, event: CanonicalEvent, unit: UnitState, properties: dict[str, Any], at: float, source: Source,
        group: Group, writes: Writes,
    ) -> tuple[list[tuple[str, str]], bool]:  # fmt: skip
        """Count a track for each experiment it is attributed to; return those, and whether the
        unit changed."""
        value = _number(properties.get("value"))
        if value is None:
            value = _number(properties.get(self.value_property)) or 0.0
        pairs = self._tracked(unit, attribute(event, unit, properties), writes)
        event.value = value
        name = event.event
        changed = False
        post: list[str] = []
        for experiment, variant in pairs or [("", "")]:
            rollup = self._rollup(writes, group, "track", experiment, variant)
            rollup.count += 1
            rollup.value_sum += value
            if experiment:
                first, converted = convert(unit, experiment, variant, name, at, source, value)
                rollup.units += first
                changed = converted or changed
                assignment = unit.experiments.get(experiment)
                exposed = assignment.first_exposed_at if assignment is not None else None
                if exposed is not None and at >= exposed and len(post) < MAX_POST_EXPOSURE:
                    post.append(experiment)
        event.post_exposure = post
        return pairs, changed

    def _user(self, event: CanonicalEvent, source: Source, writes: Writes) -> None:
        key = f"{event.org_id}\x00{event.user_id}"
        at = event.timestamp.timestamp()
        user = self._users.get(key) or UserState(first_seen=at, last_seen=at)
        touch(user, at)
        if event.type == "identify":
            writes.capped["traits"] += merge_traits(user.traits, _object(event.traits), at)
        if event.type == "group":
            join(user, event.group_id)
        self._users.put(key, user, self._partition)
        writes.touched_users[(event.org_id, event.user_id)] = (user, self._offset)

    def _company(self, event: CanonicalEvent, source: Source, writes: Writes) -> None:
        key = f"{event.org_id}\x00{event.group_id}"
        at = event.timestamp.timestamp()
        company = self._companies.get(key) or CompanyState(first_seen=at, last_seen=at)
        touch(company, at)
        writes.capped["traits"] += merge_traits(company.traits, _object(event.traits), at)
        self._companies.put(key, company, self._partition)
        writes.touched_companies[(event.org_id, event.group_id)] = (company, self._offset)

    def _group(self, event: CanonicalEvent, source: Source, at: float) -> Group:
        """What an event's rollup rows share: (org, project, env, event, minute, partition, offset)."""
        return (event.org_id, event.project_id, event.env, event.event, math.floor(at / 60) * 60, source[0], source[1])

    def _rollup(self, writes: Writes, group: Group, kind: str, experiment: str, variant: str) -> RollupRow:
        key = (group, kind, experiment, variant)
        row = writes.rollups.get(key)
        if row is None:  # one row per source record and group: a record counted twice writes it again
            org_id, project_id, env, name, minute, partition, offset = group
            topic = self.raw_topic if partition >= RAW_SOURCE else self.topic
            row = writes.rollups[key] = RollupRow(
                org_id, project_id, env, kind, experiment, variant, name, datetime.fromtimestamp(minute, UTC),
                source_topic=topic, source_partition=partition, source_offset=offset,
            )  # fmt: skip
        return row


def _unit_row(event: CanonicalEvent, experiment: str, unit: UnitState, version: int) -> UnitRow:
    a = unit.experiments[experiment]
    return UnitRow(
        event.org_id, event.project_id, event.env, experiment, a.variant, event.unit_key,
        _maybe_time(a.assigned_at), _maybe_time(a.first_exposed_at), _maybe_time(a.converted_at),
        {name: _time(at) for name, (at, _) in sorted(a.conversions.items())}, len(a.variants), version,
        {name: count for name, (count, _) in sorted(a.tallies.items())},
        {name: total for name, (_, total) in sorted(a.tallies.items())},
    )  # fmt: skip


def _properties(event: CanonicalEvent) -> dict[str, Any]:
    return _object(event.properties)


def _object(raw: msgspec.Raw) -> dict[str, Any]:
    value = _any_decoder.decode(raw)
    return value if isinstance(value, dict) else {}


def _number(value: object) -> float | None:
    """A finite float, or None: not a number, NaN, infinite, or an integer too large for a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        number = float(value)
    except OverflowError:
        return None
    return number if math.isfinite(number) else None


def _time(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, UTC)


def _maybe_time(epoch: float | None) -> datetime | None:
    return None if epoch is None else _time(epoch)


_any_encoder: Final = msgspec.json.Encoder()
_any_decoder: Final = msgspec.json.Decoder()
_encode: Callable[[Any], str] = lambda value: _any_encoder.encode(value).decode()  # noqa: E731


def letter(event: CanonicalEvent, reason: str, letter_id: str = "") -> DeadLetter:
    """A dead letter for a canonical event this stage could not take."""
    return DeadLetter(
        family=event.family, route="", org_id=event.org_id, reason=reason,
        received_at=event.received_at.timestamp(), payload=msgspec.Raw(_any_encoder.encode(event)),
        source="worker", project_id=event.project_id, env=event.env, id=letter_id,
    )  # fmt: skip
