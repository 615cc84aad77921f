"""Per-key state the worker keeps (``pipeline.statestore``: RocksDB, changelogged in Kafka); its
merge rules are in ``pipeline.rules``.

Every rule is idempotent: applying the same event twice leaves the state as applying it
once. That is what makes a replay after a crash harmless — state recovered from the changelog may
already hold an event whose offset was never committed, and the replayed event changes nothing.

Where counting needs "the first time" (first exposure, first conversion, first sighting of a
message id), the state remembers *which record* (partition, offset, item) was first, so that
the replay of that very record still counts as first, and any other record does not.
"""

from __future__ import annotations

from typing import Any

import msgspec

# ``gc=False`` on every struct here: state holds strings, numbers, tuples, lists and dicts of them
# and of these structs, decoded from JSON or built by ``pipeline.rules``, and nothing that could
# refer back; so no state is in a reference cycle, and the cyclic collector need not scan the
# units and users a batch keeps (it did, every collection).

Source = tuple[int, int, int]
"""(partition, offset, index): an item of a record — of the keyed topic, or of the raw topic with
``RAW_SOURCE`` added to the partition."""
RAW_SOURCE = 1 << 16
"""Added to a raw record's partition in its items' sources (and rollup rows), apart from the
keyed topic's partitions."""


class Seen(msgspec.Struct, array_like=True, gc=False):
    """A message id's first sighting (dedupe)."""

    source: Source
    at: float


class Assignment(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    """One unit in one experiment."""

    variant: str
    assigned_at: float | None = None
    first_exposed_at: float | None = None
    first_exposed_by: Source | None = None
    variants: list[str] = []
    conversions: dict[str, tuple[float, Source]] = {}
    tallies: dict[str, tuple[int, float]] = {}
    """Per event name: (count, value sum) of the attributed tracks at or after the first exposure
    known when each was processed (the per-unit metrics of ``pipeline.results``); names as capped
    by ``MAX_CONVERSIONS``."""
    counted: dict[int, tuple[int, int]] = {}
    """Per source partition: (offset, index) of the last track tallied. A tally is a sum, not a
    merge, so it is kept idempotent by order: a unit's items of one source partition come in
    offset order, and an item at or below the mark (the same record replayed) is not added again."""

    @property
    def converted_at(self) -> float | None:
        return min((t for t, _ in self.conversions.values()), default=None)


# Caps: every state value is bounded by construction, whatever a client sends (a record over
# Kafka's limit would stall the changelog). What a cap turns away is counted
# (``sluice_worker_state_capped_total{cap}``) and documented in docs/effectively-once.md.
MAX_DECISIONS = 256
"""Decisions a unit remembers (the newest), for tracks that cite a decision id."""
MAX_PAIRS = 32
"""(experiment, variant) pairs kept per decision or attribution list: the first ones."""
MAX_EXPERIMENTS = 200
"""Experiments a unit is tracked in; exposures to more are counted in events only."""
MAX_VARIANTS = 16
"""Distinct variants remembered per unit and experiment (for the variants_seen column)."""
MAX_CONVERSIONS = 64
"""Distinct track event names remembered per unit and experiment."""
MAX_COUNTED = 8
"""Source partitions a unit's tally marks are kept for (a unit's items come from its raw partition
and its keyed partition: two)."""
MAX_TRAITS = 500
"""Traits kept per user or company; new names past it are not added."""
MAX_ID = 200
"""Characters kept of an experiment, variant or decision id in state and rollups."""


class UnitState(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    experiments: dict[str, Assignment] = {}
    decisions: dict[str, list[tuple[str, str]]] = {}
    version: int = 0
    """Raised by every event that changes the unit: ``max(version + 1, received_at in µs)``, the
    version of its ``experiment_units`` rows. Monotonic whichever topic the event came by (its
    own partition's raw batch, or forwarded), and above the offsets older releases used."""


class Trait(msgspec.Struct, array_like=True, gc=False):
    at: float
    value: Any


class UserState(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    first_seen: float
    last_seen: float
    traits: dict[str, Trait] = {}
    companies: list[str] = []


class CompanyState(msgspec.Struct, kw_only=True, omit_defaults=True, gc=False):
    first_seen: float
    last_seen: float
    traits: dict[str, Trait] = {}
