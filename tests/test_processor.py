"""The keyed stage's rules, on plain dicts: dedupe, replays, users, attribution, rollups, caps.

Batches go through the batch body the worker runs (``KeyedStage.process``, started by
``KeyedStage.start``), as keyed records; the state is kept by in-memory stores instead of the
state store, and nothing is written or committed. ``tests/test_keyed.py`` drives the same body
with the real store, Kafka transactions and the warehouse."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from pipeline.canonical import CanonicalEvent
from pipeline.items import Routed
from pipeline.items import encoder as routed_encoder
from pipeline.keyed import KeyedStage, Record
from pipeline.processor import Processor
from pipeline.records import by_partition, route
from pipeline.rows import Writes
from pipeline.rules import decide
from pipeline.state import CompanyState, Seen, UnitState, UserState
from pipeline.statestore import StateStore
from pipeline.stores import DictStore, Stores
from sluice.routing import partition_of, split, unit_route

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


KEYED = "t.keyed"


class NoStateStore(StateStore):
    """The state store's staging alone: the in-memory stores keep the state themselves, so nothing
    is ever staged for a commit."""

    def __init__(self) -> None:
        self.pending = {}


class Feed:
    """Keyed records with offsets, as the keyed topic would hold them (one partition), and the
    keyed stage that processes them."""

    def __init__(self, processor: Processor) -> None:
        self.processor = processor
        self.stage = KeyedStage(NoStateStore(), processor, None, None, KEYED, None, "t.raw", 1)  # type: ignore[arg-type]
        self.offset = 0

    def records(self, *events: CanonicalEvent) -> list[Record]:
        """A keyed record for each item of each event."""
        out: list[Record] = []
        for e in events:
            for _, item in route(e):
                out.append((KEYED, 0, self.offset, routed_encoder.encode([item])))
                self.offset += 1
        return out

    def process(self, records: list[Record]) -> Writes:
        """A batch through the worker's batch body; its state staged, as while its commit runs."""
        return asyncio.run(self.stage.process(records))

    def run(self, records: list[Record]) -> Writes:
        """A batch processed and its state released (the in-memory stores hold it already: there
        is nothing to commit)."""
        writes = self.process(records)
        self.processor.release(writes)
        return writes


def process(processor: Processor, records: list[Record]) -> Writes:
    return Feed(processor).run(records)


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


def test_a_replayed_batch_from_the_same_state_writes_the_same_rows() -> None:
    """A replay (a crash before the commit) or a fenced worker's last batch: the same committed
    state and records give the same rows, which the warehouse replaces."""
    stores = Stores.in_memory()
    feed = Feed(Processor(stores, "t.keyed"))
    feed.run(feed.records(exposure("e0", "u1", "exp", "A")))
    names = ("seen", "units", "users", "companies")
    committed = msgspec.json.encode({name: getattr(stores, name).data for name in names})
    items = feed.records(exposure("e1", "u2", "exp", "A"), event("t1", unit="u1", event="buy", properties={"value": 3}))
    first = feed.run(items)
    replica = Stores.in_memory()
    for name, data in msgspec.json.decode(committed).items():
        kind = {"seen": Seen, "units": UnitState, "users": UserState, "companies": CompanyState}[name]
        getattr(replica, name).data.update(msgspec.convert(data, dict[str, kind]))  # type: ignore[valid-type]
    again = process(Processor(replica, "t.keyed"), items)
    assert again.duplicates == {} and first.duplicates == {}
    assert list(again.rollups.values()) == list(first.rollups.values())
    assert list(again.units.values()) == list(first.units.values())
    assert [e.message_id for e in again.events] == [e.message_id for e in first.events]


def test_an_item_that_fails_becomes_a_dead_letter_and_the_batch_goes_on() -> None:
    feed = Feed(new_processor())
    broken = event("t2", event="buy")
    broken.properties = msgspec.Raw(b'{"value": 1e999}')  # nothing upstream makes this: an unforeseen input
    huge = 10**400  # float() overflows: once a crash of the stage
    writes = feed.run(feed.records(
        event("t1", event="buy", properties={"value": huge, "order_total": huge}), broken, event("t3", event="ok"),
    ))  # fmt: skip
    assert [e.message_id for e in writes.events] == ["t1", "t2", "t3"]
    [letter] = writes.letters
    assert letter.reason.startswith("worker could not process the event: ValidationError") and letter.id
    assert rollup_counts(writes)[("track", "", "", "buy")] == (1, 0, 0.0)  # t1, with no value
    assert rollup_counts(writes)[("track", "", "", "ok")] == (1, 0, 0.0)


def test_state_caps_bound_a_unit_however_many_experiments_it_sees() -> None:
    from pipeline.state import MAX_EXPERIMENTS, MAX_PAIRS

    processor = new_processor()
    feed = Feed(processor)
    layers = [{"policyId": f"p{n}", "allocationName": "a"} for n in range(11_000)]
    writes = Writes()
    for n in range(20):
        writes = feed.run(feed.records(event(f"x{n}", "exposure", "u1",
                                             properties={"layers": layers[n * 500:(n + 1) * 500]})))  # fmt: skip
    unit = processor.stores.units.get("acme\x00u1")
    assert unit is not None and len(unit.experiments) == MAX_EXPERIMENTS
    assert len(msgspec.json.encode(unit)) < 200_000
    assert writes.capped["experiments"] == MAX_PAIRS  # every pair past the cap is counted


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


def test_a_batch_sends_each_user_its_changes_and_its_extremes_only() -> None:
    events = [event(f"m{n}", user_id="u1", timestamp=T0 + timedelta(minutes=(n * 7) % 10)) for n in range(10)]
    events.insert(4, event("id", "identify", user_id="u1", traits={"plan": "pro"}))
    items = [item for items in by_partition(events, 1).values() for item in items]
    users = [(item.event.message_id, item.event.type) for item in items if item.kind == "user"]
    # the identify, then the earliest (m0, minute 0) and the latest (m7, minute 9) of the others
    assert users == [("id", "identify"), ("m0", "track"), ("m7", "track")]
    assert sum(item.kind == "event" for item in items) == 11
    # the same user state as one item per event
    one_by_one, collapsed = new_processor(), new_processor()
    feed = Feed(one_by_one)
    feed.run(feed.records(*events))
    process(collapsed, [(KEYED, 0, 0, routed_encoder.encode(items))])  # one record of many items
    assert one_by_one.stores.users.get("acme\x00u1") == collapsed.stores.users.get("acme\x00u1")


def test_a_request_of_many_units_splits_by_partition_and_keeps_its_message_ids() -> None:
    from pipeline.normalize import normalize
    from services.gateway.sink import by_key
    from tests.builders import solute_event
    from tests.test_normalize import family_batch

    units = [f"u{n}" for n in range(8)]
    batch = family_batch("solute", "/api/events", *[solute_event(userId=u, messageId=None) for u in units])
    parts = split(batch, units, 3)
    assert len(parts) == len({partition_of(unit_route("acme", u), 3) for u in units}) > 1
    for key, part in parts:
        for event in normalize(part):
            assert isinstance(event, CanonicalEvent)
            assert partition_of(unit_route("acme", event.unit_key), 3) == by_key(key, [0, 1, 2], [])
    ids = {e.message_id for _, part in parts for e in normalize(part) if isinstance(e, CanonicalEvent)}
    assert ids == {e.message_id for e in normalize(batch) if isinstance(e, CanonicalEvent)}
    assert split(batch, ["u1"] * 8, 3) == [(unit_route("acme", "u1"), batch)]  # one client: one record
    assert by_key(None, [0, 1, 2], [1]) == 1


def test_a_unit_remembers_only_its_newest_decisions() -> None:
    from pipeline.state import MAX_DECISIONS, UnitState

    unit = UnitState()
    for n in range(MAX_DECISIONS + 10):
        decide(unit, f"d{n}", [("exp", "a")])
    assert len(unit.decisions) == MAX_DECISIONS
    assert "d9" not in unit.decisions and "d10" in unit.decisions and f"d{MAX_DECISIONS + 9}" in unit.decisions


def test_an_attribution_only_layer_exposes_nothing() -> None:
    layers = [{"policyId": "shown", "allocationName": "A"},
              {"policyId": "hidden", "allocationName": "B", "attributionOnly": True}]  # fmt: skip
    feed = Feed(new_processor())
    writes = feed.run(feed.records(event("x1", "exposure", "u1", properties={"layers": layers})))
    assert {(r.experiment_id, r.variant_id) for r in writes.rollups.values()} == {("shown", "A")}


def test_a_dead_letter_too_large_for_kafka_keeps_the_start_of_its_payload() -> None:
    from pipeline.deadletters import bounded as _bounded
    from sluice.envelope import MAX_RECORD_BYTES, DeadLetter

    big = DeadLetter(family="xaiku", route="/api/v1/analytics", org_id="acme", reason="eventName is required",
                     received_at=0.0, payload=msgspec.Raw(msgspec.json.encode({"x": "é" * 800_000})))  # fmt: skip
    record = _bounded(big)
    assert len(record) < MAX_RECORD_BYTES
    letter = msgspec.json.decode(record, type=DeadLetter)
    assert letter.reason.startswith("eventName is required (payload of 1,600,") and len(bytes(letter.payload)) > 60_000


async def test_a_raw_batch_forwards_its_new_events_users_checked_and_nothing_for_a_duplicate(tmp_path: Any) -> None:
    from pipeline.batch import stores_on
    from pipeline.items import decoder as routed_decoder
    from pipeline.items import encoder as routed_encoder
    from pipeline.keyed import KeyedStage
    from pipeline.statestore import StateStore
    from sluice.envelope import encoder
    from tests.builders import solute_event
    from tests.test_normalize import family_batch

    state = StateStore(tmp_path / "state", "t.state", "127.0.0.1:1")
    processor = Processor(stores_on(state, lambda cap: None), "t.keyed", raw_topic="t.raw")
    stage = KeyedStage(state, processor, None, None, "t.keyed", None, "t.raw", 1)  # type: ignore[arg-type]
    first = family_batch("solute", "/api/events", solute_event(messageId="m1", userId="u1"))
    again = family_batch(  # an SDK's retry of m1, and a new event
        "solute", "/api/events", solute_event(messageId="m1", userId="u1"), solute_event(messageId="m2", userId="u2")
    )  # fmt: skip
    raw = [("t.raw", 0, 0, encoder.encode(first)), ("t.raw", 0, 1, encoder.encode(again))]
    writes = await stage.process(raw, prepared=await stage.prepare(raw))
    assert len(writes.events) == 2 and writes.duplicates["solute"] == 1
    [(_, record)] = writes.forward[0]
    items = routed_decoder.decode(record)
    assert [(i.kind, i.event.message_id, i.checked) for i in items] == [("user", "m1", True), ("user", "m2", True)]
    processor.release(writes)

    # checked: applied without a dedupe entry of its own; unchecked (an event forwarded
    # unprocessed): deduplicated at its destination, so its copy changes nothing
    writes = await stage.process([("t.keyed", 0, 0, record)])
    processor.release(writes)
    staged = dict(writes.staged[0])
    assert b"user\x00acme\x00u1" in staged and b"user\x00acme\x00u2" in staged
    assert not any(key.startswith(b"seen\x00user") for key in staged)
    assert writes.users[("acme", "u2")].version == 0
    unchecked = routed_encoder.encode([msgspec.structs.replace(items[0], checked=False)])
    writes = await stage.process([("t.keyed", 0, 1, unchecked), ("t.keyed", 0, 2, unchecked)])
    assert [key for key, _ in writes.staged[0] if key.startswith(b"seen\x00user")] == [b"seen\x00user\x00acme\x00m1"]
    assert writes.users[("acme", "u1")].version == 1  # the second copy was a duplicate


def test_what_a_batch_staged_is_read_by_the_next_until_released_but_never_a_refused_value() -> None:
    """The next batch is processed while this one commits (``pipeline.worker``): it reads the
    state this one staged, but not a value the store refused (too large: its old value stays)."""

    class Refusing:
        def get(self, key: str) -> UnitState | None:
            return None

        def set_all(self, values: dict[str, tuple[UnitState, int]]) -> list[str]:
            return list(values)  # every unit too large: nothing written

    stores = Stores(DictStore(), Refusing(), DictStore(), DictStore())
    processor = Processor(stores, "t.keyed")
    feed = Feed(processor)
    first = feed.process(feed.records(exposure("e1", "u1", "exp", "A")))  # staged, not released: committing
    second = feed.run(feed.records(event("e1"), exposure("e2", "u1", "exp", "B")))
    assert second.duplicates == {"traffical": 1}  # e1's dedupe entry read from what the first staged
    assert second.units[("acme", "exp", "B", "u1")].variants_seen == 1  # u1's refused state was not read
    processor.release(first)
    assert all(not cache.layers for cache in (processor._seen, processor._units))
