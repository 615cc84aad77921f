"""The worker's per-unit tallies behind the results' mean, count and ratio metrics
(``pipeline.rules.tally``): tracks at or after the unit's first exposure, counted once per source
item whatever replays, written with the unit's row."""

from __future__ import annotations

from datetime import timedelta

from pipeline.canonical import CanonicalEvent, to_rows
from tests.test_processor import T0, Feed, event, exposure, new_processor


def purchase(message_id: str, value: float, minutes: int = 1, unit: str = "u1") -> CanonicalEvent:
    return event(message_id, unit=unit, event="purchase", timestamp=T0 + timedelta(minutes=minutes),
                 properties={"value": value})  # fmt: skip


def test_tracks_after_the_first_exposure_are_counted_and_summed() -> None:
    feed = Feed(new_processor())
    writes = feed.run(feed.records(
        exposure("x1", "u1", "exp", "A"),
        purchase("p1", 10.0), purchase("p2", 2.5, minutes=2),
        event("s1", unit="u1", event="signup", timestamp=T0 + timedelta(minutes=3)),
    ))  # fmt: skip
    row = writes.units[("acme", "exp", "A", "u1")]
    assert row.event_counts == {"purchase": 2, "signup": 1}
    assert row.event_values == {"purchase": 12.5, "signup": 0.0}


def test_a_track_before_the_first_exposure_is_not_counted() -> None:
    feed = Feed(new_processor())
    early = event("p0", unit="u1", event="purchase", timestamp=T0 - timedelta(minutes=5), properties={"value": 7},
                  experiment_id="exp", variant_id="A")  # fmt: skip
    writes = feed.run(feed.records(early, exposure("x1", "u1", "exp", "A"), purchase("p1", 3.0)))
    row = writes.units[("acme", "exp", "A", "u1")]
    assert row.event_counts == {"purchase": 1} and row.event_values == {"purchase": 3.0}


def test_a_replayed_record_and_a_duplicate_message_are_counted_once() -> None:
    feed = Feed(new_processor())
    records = feed.records(exposure("x1", "u1", "exp", "A"), purchase("p1", 10.0), purchase("p2", 1.0))
    feed.run(records)
    again = feed.run(records[1:])  # the same records, as after a crash before the commit
    copy = feed.run(feed.records(purchase("p1", 10.0)))  # the same message id in a new record
    assert not again.units and not copy.units  # nothing changed: no row
    later = feed.run(feed.records(purchase("p3", 4.0, minutes=5)))
    row = later.units[("acme", "exp", "A", "u1")]
    assert row.event_counts == {"purchase": 3} and row.event_values == {"purchase": 15.0}


def test_one_track_attributed_twice_to_one_experiment_counts_once() -> None:
    feed = Feed(new_processor())
    twice = [{"policyId": "exp", "allocationName": "A"}, {"policyId": "exp", "allocationName": "B"}]
    writes = feed.run(feed.records(
        exposure("x1", "u1", "exp", "A"),
        event("p1", unit="u1", event="purchase", timestamp=T0 + timedelta(minutes=1),
              properties={"value": 5, "attribution": twice}),
    ))  # fmt: skip
    assert writes.units[("acme", "exp", "A", "u1")].event_counts == {"purchase": 1}


def test_each_track_row_carries_its_value_and_the_experiments_it_came_after() -> None:
    """``events.value`` is the number the tallies sum; ``events.post_exposure`` names the experiments
    whose first exposure (as known) a track came at or after — never a track in the unit's
    pre-exposure window, which CUPED's covariate reads (a late one included)."""
    feed = Feed(new_processor())
    early = event("p0", unit="u1", event="purchase", timestamp=T0 - timedelta(days=2), properties={"order_total": 7})
    late = event("p9", unit="u1", event="purchase", timestamp=T0 - timedelta(days=1), properties={"value": "x"})
    writes = feed.run(feed.records(
        early, exposure("x1", "u1", "exp", "A"), exposure("x2", "u1", "other", "B", timestamp=T0 + timedelta(hours=1)),
        purchase("p1", 10.0), late, purchase("p2", 2.5, minutes=90),
        event("s1", unit="u1", event="signup", timestamp=T0 + timedelta(minutes=3)),
        purchase("n1", 4.0, unit="u2"),  # a unit in no experiment
    ))  # fmt: skip
    rows = {e.message_id: (e.value, e.post_exposure) for e in writes.events if e.type == "track"}
    assert rows == {
        "p0": (7.0, []), "p1": (10.0, ["exp"]), "p9": (0.0, []), "p2": (2.5, ["exp", "other"]),
        "s1": (0.0, ["exp"]), "n1": (4.0, []),
    }  # fmt: skip
    assert b'"value":10.0' in to_rows([e for e in writes.events if e.message_id == "p1"])
