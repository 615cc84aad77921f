"""The worker's Prometheus metrics (names declared in ``sluice.metrics``)."""

from __future__ import annotations

import contextlib
from collections.abc import Collection
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from pipeline.batch import tally
from pipeline.rows import Writes
from sluice.metrics import base_name


class WorkerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.events = Counter(
            base_name("sluice_worker_events_total"),
            "Events by stage and outcome: in, out, invalid, duplicate, replayed",
            ["stage", "outcome", "family", "reason"], registry=self.registry,
        )  # fmt: skip
        self.sink_rows = Histogram(
            "sluice_worker_sink_rows", "Rows per warehouse insert", ["table"], registry=self.registry,
            buckets=(1, 10, 100, 1000, 5000, 10000, 50000, 100000),
        )  # fmt: skip
        self.sink_seconds = Histogram(
            "sluice_worker_sink_seconds", "Time to write one batch to the warehouse", registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )  # fmt: skip
        self.freshness = Histogram(
            "sluice_worker_freshness_seconds", "Sink time minus the gateway's received_at, per event",
            registry=self.registry, buckets=(0.1, 0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300),
        )  # fmt: skip
        self.lag = Gauge(
            "sluice_worker_consumer_lag", "Records behind the partition's high watermark",
            ["topic", "partition"], registry=self.registry,
        )  # fmt: skip
        self.pruned = Counter(
            base_name("sluice_worker_dedupe_pruned_total"), "Dedupe entries removed past the window",
            registry=self.registry,
        )  # fmt: skip
        self.dead_letters = Counter(
            base_name("sluice_worker_dead_letters_total"),
            "Dead letters the worker wrote, by the stage that refused the input and why",
            ["stage", "reason"], registry=self.registry,
        )  # fmt: skip
        self.capped = Counter(
            base_name("sluice_worker_state_capped_total"),
            "Items a state cap turned away (experiments, traits, state_value: see pipeline/state.py)",
            ["cap"], registry=self.registry,
        )  # fmt: skip
        self.restarts = Counter(
            base_name("sluice_worker_stage_restarts_total"),
            "Steps of a stage that failed as a whole and were taken again", ["stage"], registry=self.registry,
        )  # fmt: skip
        self.fenced = Counter(
            base_name("sluice_worker_fenced_total"),
            "Batches dropped because another worker took their partition over (fencing)", registry=self.registry,
        )  # fmt: skip
        self.progress = Gauge(
            "sluice_worker_stage_progress_timestamp_seconds", "When a stage last committed a step's records",
            ["stage"], registry=self.registry,
        )  # fmt: skip
        self._positions: dict[Any, int] = {}
        self._gauged: set[Any] = set()

    def position(self, tp: Any, offset: int) -> None:
        self._positions[tp] = offset

    def update_lag(
        self, consumer: Any, fetched: dict[Any, int] | None = None, transactional: Collection[str] = ()
    ) -> None:
        """Lag of every partition assigned now; a partition that moved away loses its gauge.

        ``fetched`` is the consumer's position per partition. Records of ``transactional`` topics
        are followed by commit markers (one per transaction that wrote to the partition), which
        take offsets and are never handed over: once the consumer has fetched to the last stable
        offset, what lies between the last record processed and it is markers, and the lag is 0.
        Otherwise lag is the end less the last record processed (or, before any, less the
        position)."""
        fetched = fetched or {}
        assigned = consumer.assignment()
        for tp in [tp for tp in self._gauged if tp not in assigned]:
            self._gauged.discard(tp)
            self._positions.pop(tp, None)
            with contextlib.suppress(KeyError):
                self.lag.remove(tp.topic, str(tp.partition))
        for tp in assigned:
            marked = tp.topic in transactional
            end = consumer.last_stable_offset(tp) if marked else consumer.highwater(tp)
            processed, position = self._positions.get(tp), fetched.get(tp)
            if end is None:
                continue
            if marked and position is not None and position >= end:
                lag = 0
            elif processed is not None:
                lag = end - processed - 1
            elif position is not None:
                lag = end - position
            else:
                continue
            self._gauged.add(tp)
            self.lag.labels(tp.topic, str(tp.partition)).set(max(0, lag))

    def sunk(self, writes: Writes, written: dict[str, int], seconds: float, now: float) -> None:
        for table, rows in written.items():
            self.sink_rows.labels(table).observe(rows)
        self.sink_seconds.observe(seconds)
        families, received = tally(writes.events)  # a request's events share received_at: observed at once
        for moment, count in received.items():
            observe_many(self.freshness, max(0.0, now - moment.timestamp()), count)
        for family, count in families.items():
            self.events.labels("keyed", "out", family, "").inc(count)
        for family, count in writes.duplicates.items():
            self.events.labels("keyed", "duplicate", family, "message_id").inc(count)


def observe_many(histogram: Histogram, amount: float, count: int) -> None:
    """``count`` observations of ``amount``: as many ``observe`` calls, in one (prometheus_client
    has no weighted observe; without its internals, one call per observation)."""
    buckets, bounds, total = (getattr(histogram, name, None) for name in ("_buckets", "_upper_bounds", "_sum"))
    if buckets is None or bounds is None or total is None:
        for _ in range(count):
            histogram.observe(amount)
        return
    total.inc(amount * count)
    for bucket, bound in zip(buckets, bounds, strict=True):
        if amount <= bound:
            bucket.inc(count)
            break
