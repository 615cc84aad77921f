"""Solute raw batches → canonical events: skew correction, ids, extras, invalid events."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec

from pipeline.attribution import layers_of as _layers
from pipeline.canonical import CanonicalEvent
from pipeline.normalize import Invalid, normalize
from sluice.envelope import RawBatch, body_digest, derived_message_id
from tests.builders import (
    ALLOCATED_LAYER,
    UNALLOCATED_LAYER,
    solute_event,
    traffical_schema_events,
    xaiku_sdk_event,
)

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


# --- the other families ------------------------------------------------------------------------


def family_batch(family: str, route: str, *events: object, **batch_fields: str) -> RawBatch:
    return RawBatch(
        family=family, route=route, org_id="acme", project_id="web", env="production",  # type: ignore[arg-type]
        received_at=RECEIVED, body_digest=body_digest(b"body"),
        events=[msgspec.Raw(msgspec.json.encode(e)) for e in events], indexes=list(range(len(events))),
        batch={k: msgspec.Raw(msgspec.json.encode(v)) for k, v in batch_fields.items()},
    )  # fmt: skip


def only(items: list[CanonicalEvent | Invalid]) -> list[CanonicalEvent]:
    assert all(isinstance(i, CanonicalEvent) for i in items), items
    return [i for i in items if isinstance(i, CanonicalEvent)]


def test_halo_events_with_caps_cut_and_extras_kept() -> None:
    events = only(list(normalize(family_batch(
        "halo", "/api/sdk/events",
        {"event_type": "page_view", "page_url": "/settings", "metadata": {"referrer": "/dashboard"}},
        {"event_type": "c" * 150, "element_selector": "#" + "x" * 600, "page_url": "/" + "p" * 2500,
         "hoverDuration": 1200, "framework": "react"},
        user_id="user_123", session_id="s" * 300,
    ))))  # fmt: skip
    page, click = events
    assert (page.type, page.event, page.user_id, page.unit_key) == ("page", "page_view", "user_123", "user_123")
    assert msgspec.json.decode(page.properties) == {"referrer": "/dashboard"}
    assert page.timestamp == page.received_at == datetime.fromtimestamp(RECEIVED, UTC)
    assert (len(click.event), len(click.page_url), len(click.session_id)) == (100, 2000, 200)
    properties = msgspec.json.decode(click.properties)
    assert len(properties["element_selector"]) == 500
    assert (properties["hoverDuration"], properties["framework"]) == (1200, "react")
    assert page.message_id == derived_message_id("acme", body_digest(b"body"), 0)


def test_halo_identify_user_and_company() -> None:
    [user] = only(list(normalize(family_batch(
        "halo", "/api/sdk/users/identify",
        {"user_id": "user_123", "traits": {"plan": "pro"}, "email": "ada@example.com", "context": {"ip": "x"}},
    ))))  # fmt: skip
    assert (user.type, user.user_id) == ("identify", "user_123")
    assert msgspec.json.decode(user.traits) == {"plan": "pro", "email": "ada@example.com"}
    [company] = only(list(normalize(family_batch(
        "halo", "/api/sdk/companies/identify", {"company_id": "co_42", "traits": {"seats": 40}, "user_id": "u1"},
    ))))  # fmt: skip
    assert (company.type, company.group_id, company.user_id) == ("group", "co_42", "u1")


def test_xaiku_impression_is_an_exposure_of_the_session() -> None:
    impression, click = only(list(normalize(family_batch(
        "xaiku", "/api/v1/analytics",
        {"eventName": "impression", "experimentId": "exp_abc123", "variantId": "var_001", "sessionId": "sess_xyz",
         "pathname": "/landing", "loadTime": 1200, "partId": "hero"},
        {"eventName": "click", "experimentId": "exp_abc123", "sessionId": "sess_xyz", "clickTarget": "#cta"},
    ))))  # fmt: skip
    assert (impression.type, impression.experiment_id, impression.variant_id) == ("exposure", "exp_abc123", "var_001")
    assert (impression.unit_key, impression.session_id, impression.page_url) == ("sess_xyz", "sess_xyz", "/landing")
    assert msgspec.json.decode(impression.properties) == {"pathname": "/landing", "loadTime": 1200, "partId": "hero"}
    assert (click.type, click.event) == ("track", "click")


def test_xaiku_user_id_is_the_user_and_org_id_is_context() -> None:
    identified, anonymous = only(list(normalize(family_batch(
        "xaiku", "/api/v1/analytics", xaiku_sdk_event(orgId="org_x"), xaiku_sdk_event(userId=""),
    ))))  # fmt: skip
    assert (identified.user_id, identified.unit_key, identified.session_id) == ("user_42", "3f6c1a2e-guid",
                                                                                "3f6c1a2e-guid")  # fmt: skip
    assert msgspec.json.decode(identified.context) == {"orgId": "org_x"}
    assert identified.org_id == "acme"
    properties = msgspec.json.decode(identified.properties)
    assert "userId" not in properties and "orgId" not in properties and properties["framework"] == "react"
    assert anonymous.user_id == ""


def test_traffical_exposure_track_decision() -> None:
    layer = {"layerId": "l1", "policyId": "policy_color_test", "allocationName": "treatment", "bucket": 7420}
    exposure, track, decision = only(list(normalize(family_batch(
        "traffical", "/v1/events",
        {"type": "exposure", "unitKey": "user_789", "timestamp": "2025-01-15T10:30:00Z", "decisionId": "dec_1",
         "layers": [layer], "sdkName": "js-client"},
        {"type": "track", "unitKey": "user_789", "timestamp": "2025-01-15T10:35:00Z", "event": "purchase",
         "properties": {"order_total": 49.99}, "decisionId": "dec_1", "id": "evt_9", "value": 49.99},
        {"type": "decision", "unitKey": "user_789", "timestamp": "2025-01-15T10:29:59Z", "layers": [layer],
         "latencyMs": 2.5},
    ))))  # fmt: skip
    assert (exposure.type, exposure.experiment_id, exposure.variant_id) == (
        "exposure",
        "policy_color_test",
        "treatment",
    )
    assert msgspec.json.decode(exposure.properties) == {"layers": [layer]}
    assert msgspec.json.decode(exposure.context) == {"sdkName": "js-client"}
    assert (track.message_id, track.event, track.decision_id) == ("evt_9", "purchase", "dec_1")
    assert msgspec.json.decode(track.properties) == {"order_total": 49.99, "value": 49.99}
    assert decision.timestamp == datetime(2025, 1, 15, 10, 29, 59, tzinfo=UTC)
    assert msgspec.json.decode(decision.properties)["latencyMs"] == 2.5


def test_traffical_every_schema_shape_normalizes() -> None:
    shapes = traffical_schema_events()
    events = only(list(normalize(family_batch("traffical", "/v1/events", *shapes.values()))))
    assert len(events) == len(shapes)


def test_traffical_an_unallocated_layer_assigns_nothing_and_the_others_count() -> None:
    shapes = traffical_schema_events()
    first_unallocated, unallocated_only, full = only(list(normalize(family_batch(
        "traffical", "/v1/events",
        shapes["exposure-unallocated-first"], shapes["decision-unallocated-only"], shapes["decision-full"],
    ))))  # fmt: skip
    # the row takes the first allocated layer, wherever it stands
    assert (first_unallocated.experiment_id, first_unallocated.variant_id) == ("policy_color_test", "treatment")
    assert (unallocated_only.experiment_id, unallocated_only.variant_id) == ("", "")
    assert unallocated_only.type == "decision"  # the decision itself still counts
    # every layer is kept; attribution (the worker's) reads only the allocated ones
    for event in (first_unallocated, full):
        properties = msgspec.json.decode(event.properties)
        assert UNALLOCATED_LAYER in properties["layers"] and ALLOCATED_LAYER in properties["layers"]
        assert _layers(properties) == [("policy_color_test", "treatment")]
    assert _layers(msgspec.json.decode(unallocated_only.properties)) == []
    assert (full.user_id, full.anonymous_id, full.session_id) == ("u_1", "anon_1", "s_1")


def test_traffical_a_body_tenant_other_than_the_keys_is_kept_in_context() -> None:
    event = {"type": "track", "unitKey": "u", "timestamp": "2026-05-21T10:35:00Z", "event": "purchase",
             "orgId": "org_other", "projectId": "proj_other", "env": "staging"}  # fmt: skip
    [row] = only(list(normalize(family_batch("traffical", "/v1/events", event))))
    assert (row.org_id, row.project_id, row.env) == ("acme", "web", "production")
    assert msgspec.json.decode(row.context) == {"orgId": "org_other", "projectId": "proj_other", "env": "staging"}


def test_traffical_invalid_events_are_dead_letters() -> None:
    [item] = normalize(family_batch("traffical", "/v1/events", {"type": "exposure", "unitKey": "u"}))
    assert isinstance(item, Invalid) and item.reason == "Object missing required field `timestamp`"


def test_times_outside_the_trusted_window_become_the_received_time_with_the_original_kept() -> None:
    far, near, ancient, year_one, overflow = normalize(batch(
        solute_event(messageId="far", timestamp="2025-01-20T10:30:00Z"),
        solute_event(messageId="near", timestamp="2025-01-15T12:00:00Z"),
        solute_event(messageId="ancient", timestamp="1950-03-01T00:00:00Z"),
        solute_event(messageId="year-one", timestamp="0001-01-01T00:00:00+14:00"),
        solute_event(messageId="overflow", timestamp="9999-12-31T23:59:59Z"),
        sent_at="0001-01-01T00:00:00Z",  # absurd: no skew correction
    ))  # fmt: skip
    arrived = datetime.fromtimestamp(RECEIVED, UTC)
    assert isinstance(near, CanonicalEvent) and near.flags == [] and near.original_timestamp == ""
    assert near.timestamp == datetime(2025, 1, 15, 12, tzinfo=UTC)
    for item, sent in ((far, "2025-01-20T10:30:00+00:00"), (ancient, "1950-03-01T00:00:00+00:00"),
                       (year_one, "0001-01-01T00:00:00+14:00"), (overflow, "9999-12-31T23:59:59+00:00")):  # fmt: skip
        assert isinstance(item, CanonicalEvent) and item.flags == ["timestamp_replaced"]
        assert (item.timestamp, item.original_timestamp) == (arrived, sent)
