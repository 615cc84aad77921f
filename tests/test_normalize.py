"""Solute raw batches → canonical events: skew correction, ids, extras, invalid events."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from pipeline.canonical import CanonicalEvent
from pipeline.normalize import Invalid, normalize
from sluice.envelope import RawBatch, body_digest, derived_message_id
from tests.builders import solute_event

RECEIVED = datetime(2025, 1, 15, 10, 30, 7, tzinfo=UTC).timestamp()


def batch(*events: dict[str, object], sent_at: str | None = "2025-01-15T10:30:05Z") -> RawBatch:
    return RawBatch(
        family="solute", route="/api/events", org_id="acme", project_id="web", env="production",
        received_at=RECEIVED, body_digest=body_digest(b"body"),
        events=[msgspec.Raw(msgspec.json.encode(e)) for e in events],
        indexes=list(range(len(events))), sent_at=sent_at,
    )  # fmt: skip


def test_reference_event_maps_to_canonical_with_skew_corrected() -> None:
    [event] = normalize(batch(solute_event()))
    assert isinstance(event, CanonicalEvent)
    # client clock is 2 s behind (sent 10:30:05, received 10:30:07): timestamp moves 2 s later
    assert event.timestamp == datetime(2025, 1, 15, 10, 30, 2, tzinfo=UTC)
    assert event.sent_at == datetime(2025, 1, 15, 10, 30, 5, tzinfo=UTC)
    assert (event.message_id, event.type, event.event) == ("msg_789", "track", "Button Clicked")
    assert (event.user_id, event.anonymous_id, event.unit_key) == ("user_123", "anon_456", "user_123")
    assert event.session_id == "session_abc"
    assert event.page_url == "https://example.com/homepage"
    assert msgspec.json.decode(event.properties) == {"button_id": "cta-signup", "page": "/homepage"}


def test_without_sent_at_the_timestamp_is_kept() -> None:
    [event] = normalize(batch(solute_event(), sent_at=None))
    assert isinstance(event, CanonicalEvent)
    assert event.timestamp == datetime(2025, 1, 15, 10, 30, 0, tzinfo=UTC)
    assert event.sent_at is None


def test_missing_message_id_is_derived_deterministically() -> None:
    first = list(normalize(batch(solute_event(messageId=None), solute_event(messageId=None))))
    again = list(normalize(batch(solute_event(messageId=None), solute_event(messageId=None))))
    ids = [e.message_id for e in first if isinstance(e, CanonicalEvent)]
    assert ids == [derived_message_id("acme", body_digest(b"body"), i) for i in (0, 1)]
    assert ids == [e.message_id for e in again if isinstance(e, CanonicalEvent)]
    assert ids[0] != ids[1]


def test_unknown_fields_are_kept_in_context() -> None:
    [event] = normalize(batch(solute_event(integrations={"All": True}, channel="web")))
    assert isinstance(event, CanonicalEvent)
    context = msgspec.json.decode(event.context)
    assert context["extra"] == {"integrations": {"All": True}, "channel": "web"}
    assert context["sessionId"] == "session_abc"


def test_identify_page_group_alias() -> None:
    events = list(normalize(batch(
        solute_event(type="identify", event=None, traits={"plan": "pro"}),
        solute_event(type="page", event=None, name="Pricing", category="Docs"),
        solute_event(type="group", event=None, groupId="co_1"),
        solute_event(type="alias", event=None, previousId="anon_456"),
    )))  # fmt: skip
    assert all(isinstance(e, CanonicalEvent) for e in events)
    identify, page, group, alias = events
    assert isinstance(identify, CanonicalEvent) and msgspec.json.decode(identify.traits) == {"plan": "pro"}
    assert isinstance(page, CanonicalEvent) and page.event == "Pricing"
    assert msgspec.json.decode(page.properties)["category"] == "Docs"
    assert isinstance(group, CanonicalEvent) and group.group_id == "co_1"
    assert isinstance(alias, CanonicalEvent) and alias.previous_id == "anon_456"


def test_invalid_events_come_back_with_reason_and_bytes() -> None:
    bad = solute_event(type="launch")
    [item] = normalize(batch(bad))
    assert isinstance(item, Invalid)
    assert item.index == 0
    assert item.reason == "Invalid enum value 'launch' - at `$.type`"
    assert msgspec.json.decode(item.payload) == bad
