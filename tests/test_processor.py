"""The keyed stage's rules, on plain dicts: dedupe, replays, fences, users, attribution, rollups."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest

from pipeline.canonical import CanonicalEvent
from pipeline.processor import Incoming, Processor, Stores, Writes
from pipeline.records import Routed, route

T0 = datetime(2026, 5, 21, 10, 30, tzinfo=UTC)


def event(message_id: str, type: str = "track", unit: str = "u1", **fields: Any) -> CanonicalEvent:
    properties = fields.pop("properties", {})
    traits = fields.pop("traits", {})
    base: dict[str, Any] = {
        "org_id": "acme", "project_id": "web", "env": "production", "message_id": message_id,
        "family": "traffical", "type": type, "event": type, "unit_key": unit,
        "timestamp": T0, "received_at": T0,
        "properties": msgspec.Raw(msgspec.json.encode(properties)), "traits": msgspec.Raw(msgspec.json.encode(traits)),
    }  # fmt: skip
    base.update(fields)
    return CanonicalEvent(**base)


def exposure(message_id: str, unit: str, experiment: str, variant: str, **fields: Any) -> CanonicalEvent:
    layers = [{"policyId": experiment, "allocationName": variant}]
    return event(message_id, "exposure", unit, properties={"layers": layers}, **fields)


class Feed:
    """Keyed records with offsets, as the keyed topic would hold them (one partition)."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self.offset = 0

    def records(self, *events: CanonicalEvent) -> list[Incoming]:
        out = []
        for e in events:
            for _, record in route(e):
                out.append(Incoming(0, self.offset, record))
                self.offset += 1
        return out

    def run(self, items: list[Incoming]) -> Writes:
        writes = self.processor.process(items)
        self.processor.advance_fences(writes)
        return writes


def new_processor() -> Processor:
    return Processor(Stores.in_memory(), "t.keyed")


def rollup_counts(writes: Writes) -> dict[tuple[str, str, str, str], tuple[int, int, float]]:
    out: dict[tuple[str, str, str, str], tuple[int, int, float]] = {}
    for r in writes.rollups.values():
        key = (r.kind, r.experiment_id, r.variant_id, r.event)
        count, units, value = out.get(key, (0, 0, 0.0))
        out[key] = (count + r.count, units + r.units, value + r.value_sum)
    return out


def test_duplicates_inside_and_across_batches_and_families_count_once() -> None:
    feed = Feed(new_processor())
    first = feed.run(feed.records(event("m1"), event("m1"), event("m2")))
    second = feed.run(feed.records(event("m2"), event("m1", family="solute")))
    assert [e.message_id for e in first.events] == ["m1", "m2"]
    assert second.events == []
    assert first.duplicates == {"traffical": 1}
    assert second.duplicates == {"traffical": 1, "solute": 1}


def test_a_replayed_record_is_not_a_duplicate_but_is_fenced_once_counted() -> None:
    processor = new_processor()
    feed = Feed(processor)
    items = feed.records(exposure("e1", "u1", "exp", "A"), event("t1", unit="u1", event="buy"))
    # crash after the state changed but before the rollups were written: no fence yet
    lost = processor.process(items)
    assert rollup_counts(lost)[("exposure", "exp", "A", "exposure")] == (1, 1, 0.0)
    replay = feed.run(items)
    assert replay.duplicates == {} and replay.replayed == 0
    assert rollup_counts(replay) == rollup_counts(lost)  # same counts, first exposure still first
    again = feed.run(items)  # now fenced: skipped whole
    assert again.replayed == len(items) and again.events == [] and again.rollups == {}


def test_dedupe_window_lets_late_copies_through() -> None:
    processor = Processor(Stores.in_memory(), "t.keyed", dedupe_window=3600)
    feed = Feed(processor)
    feed.run(feed.records(event("m1")))
    later = feed.run(feed.records(event("m1", received_at=T0 + timedelta(hours=2))))
    assert [e.message_id for e in later.events] == ["m1"]


def test_exposures_decisions_and_attribution_order() -> None:
    processor = new_processor()
    feed = Feed(processor)
    decision = event("d1", "decision", "u1", decision_id="dec_1",
                     properties={"layers": [{"policyId": "exp", "allocationName": "B"}]})  # fmt: skip
    writes = feed.run(feed.records(
        decision,
        exposure("x1", "u1", "exp", "A"),
        exposure("x2", "u1", "exp", "A", timestamp=T0 + timedelta(minutes=1)),
        event("t1", unit="u1", event="purchase", decision_id="dec_1", properties={"value": 10}),
        event("t2", unit="u1", event="purchase", properties={"order_total": 5,
              "attribution": [{"policyId": "other", "allocationName": "C"}]}),
        event("t3", unit="u1", event="signup"),
        event("t4", unit="nobody", event="signup"),
    ))  # fmt: skip
    counts = rollup_counts(writes)
    assert counts[("exposure", "exp", "A", "exposure")] == (2, 1, 0.0)  # two exposures, one unit
    assert counts[("track", "exp", "B", "purchase")] == (1, 1, 10.0)  # by decision id
    assert counts[("track", "other", "C", "purchase")] == (1, 1, 5.0)  # explicit attribution
    assert counts[("track", "exp", "A", "signup")] == (1, 1, 0.0)  # the unit's assignment
    assert counts[("track", "", "", "signup")] == (1, 0, 0.0)  # unattributed
    unit = writes.units[("acme", "exp", "A", "u1")]
    assert (unit.first_exposed_at, unit.assigned_at, unit.variants_seen) == (T0, T0, 1)
    assert set(unit.conversions) == {"purchase", "signup"}


def test_a_unit_seen_in_two_variants_keeps_its_first_and_is_flagged() -> None:
    feed = Feed(new_processor())
    writes = feed.run(feed.records(exposure("x1", "u1", "exp", "A"), exposure("x2", "u1", "exp", "B")))
    [row] = writes.units.values()
    assert (row.variant_id, row.variants_seen) == ("A", 2)


def test_users_traits_merge_last_writer_wins_by_event_time() -> None:
    feed = Feed(new_processor())
    later, earlier = T0 + timedelta(minutes=5), T0
    writes = feed.run(feed.records(
        event("i1", "identify", "u1", user_id="u1", timestamp=later, traits={"plan": "pro", "seats": 3}),
        event("i2", "identify", "u1", user_id="u1", timestamp=earlier, traits={"plan": "free", "name": "Ada"}),
        event("g1", "group", "u1", user_id="u1", group_id="co_1", timestamp=earlier, traits={"tier": "gold"}),
        event("a1", "alias", "u1", user_id="u1", previous_id="anon_9"),
    ))  # fmt: skip
    user = writes.users[("acme", "u1")]
    assert msgspec.json.decode(user.traits) == {"name": "Ada", "plan": "pro", "seats": 3}
    assert (user.first_seen, user.last_seen, user.company_ids) == (earlier, later, ["co_1"])
    company = writes.companies[("acme", "co_1")]
    assert msgspec.json.decode(company.traits) == {"tier": "gold"}
    [alias] = writes.aliases
    assert (alias.previous_id, alias.user_id) == ("anon_9", "u1")


def test_routing_keys_keep_state_local() -> None:
    keys = [k for k, _ in route(event("m", "group", "anon_1", user_id="u1", group_id="co"))]
    assert keys == [b"acme\x00unit:anon_1", b"acme\x00user:u1", b"acme\x00company:co"]
    assert [r.kind for _, r in route(event("m"))] == ["event"]
    assert isinstance(route(event("m"))[0][1], Routed)


class FakeWarehouse:
    """The warehouse's semantics that matter here: events and units replace by key, rollups add up."""

    def __init__(self) -> None:
        self.events: dict[str, CanonicalEvent] = {}
        self.units: dict[tuple[str, str, str, str], Any] = {}
        self.rollups: list[Any] = []

    def write(self, writes: Writes, upto: str = "rollups") -> None:
        for step in ("events", "units", "rollups"):
            if step == "events":
                self.events.update({e.message_id: e for e in writes.events})
            elif step == "units":
                self.units.update(writes.units)
            else:
                self.rollups.extend(writes.rollups.values())
            if step == upto:
                return

    def fences(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for row in self.rollups:
            out[row.source_partition] = max(row.source_offset, out.get(row.source_partition, -1))
        return out

    def totals(self) -> tuple[int, int, int, int, tuple[tuple[str, int, int], ...]]:
        exposures = sum(r.count for r in self.rollups if r.kind == "exposure")
        units = sum(r.units for r in self.rollups if r.kind == "exposure")
        tracks = sum(r.count for r in self.rollups if r.kind == "track")
        per_variant: dict[str, list[int]] = {}
        for row in self.units.values():
            counts = per_variant.setdefault(row.variant_id, [0, 0])
            counts[0] += row.first_exposed_at is not None
            counts[1] += row.converted_at is not None
        scorecard = tuple((v, n, c) for v, (n, c) in sorted(per_variant.items()))
        return len(self.events), exposures, units, tracks, scorecard


def scripted_events() -> list[CanonicalEvent]:
    out = []
    for n in range(40):
        variant = "A" if n % 2 else "B"
        out.append(exposure(f"x{n}", f"u{n}", "exp", variant))
        if n % 3 == 0:
            out.append(event(f"t{n}", unit=f"u{n}", event="buy", properties={"value": 2}))
    return out + out[::7]  # and some duplicates


@pytest.mark.parametrize(
    ("crash_after", "state_survives"),
    [("nothing", False), ("nothing", True), ("events", True), ("units", True), ("rollups", True)],
)
def test_a_crash_anywhere_in_a_batch_then_replay_gives_the_uncrashed_result(
    crash_after: str, state_survives: bool
) -> None:
    """``state_survives=False`` only before any row: the worker flushes the changelogs first."""
    reference = FakeWarehouse()
    clean = Feed(new_processor())
    items = clean.records(*scripted_events())
    for part in (items[:30], items[30:]):
        writes = clean.run(part)
        reference.write(writes)

    warehouse = FakeWarehouse()
    stores = Stores.in_memory()
    first = Processor(stores, "t.keyed")
    warehouse.write(first.process(items[:30]))  # committed
    snapshot = copy.deepcopy(stores)
    warehouse.write(first.process(items[30:]), upto=crash_after)  # crash mid-sink; offsets not committed
    recovered = Processor(stores if state_survives else snapshot, "t.keyed", fences=warehouse.fences())
    warehouse.write(recovered.process(items[30:]))  # the replay
    assert warehouse.totals() == reference.totals()


def test_a_unit_remembers_only_its_newest_decisions() -> None:
    from pipeline.state import MAX_DECISIONS, UnitState

    unit = UnitState()
    for n in range(MAX_DECISIONS + 10):
        unit.decide(f"d{n}", [("exp", "a")])
    assert len(unit.decisions) == MAX_DECISIONS
    assert "d9" not in unit.decisions and "d10" in unit.decisions and f"d{MAX_DECISIONS + 9}" in unit.decisions
