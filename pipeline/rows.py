"""The rows one keyed batch writes to the warehouse, typed (msgspec structs → JSONEachRow).

Every row is a pure function of the committed state and the records it came from, so a record
processed twice — a replay after a crash, or the last batch of a worker that stalled and lost its
partitions meanwhile — writes the very same rows again, which the tables replace (see
``ddl/0004_fenced_rows.sql``). ``version`` is the source offset of the last record that changed
the row's key: a late write of an older state loses to the newer one.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec

from pipeline.canonical import CanonicalEvent
from pipeline.state import CompanyState, UnitState, UserState
from sluice.envelope import DeadLetter


class UserRow(msgspec.Struct, gc=False):
    org_id: str
    user_id: str
    first_seen: datetime
    last_seen: datetime
    traits: str
    company_ids: list[str]
    version: int


class CompanyRow(msgspec.Struct, gc=False):
    org_id: str
    company_id: str
    first_seen: datetime
    last_seen: datetime
    traits: str
    version: int


class AliasRow(msgspec.Struct, gc=False):
    org_id: str
    previous_id: str
    user_id: str
    aliased_at: datetime
    message_id: str


class UnitRow(msgspec.Struct, gc=False):
    org_id: str
    project_id: str
    env: str
    experiment_id: str
    variant_id: str
    unit_key: str
    assigned_at: datetime | None
    first_exposed_at: datetime | None
    converted_at: datetime | None
    conversions: dict[str, datetime]
    variants_seen: int
    version: int
    """The unit's state version (``UnitState.version``)."""
    event_counts: dict[str, int]
    """Per event name: attributed tracks at or after the first exposure (``Assignment.tallies``)."""
    event_values: dict[str, float]
    """Per event name: the sum of those tracks' values."""


class RollupRow(msgspec.Struct, gc=False):
    """Counts of one keyed record for one group (kind, experiment, variant, event, minute)."""

    org_id: str
    project_id: str
    env: str
    kind: str
    experiment_id: str
    variant_id: str
    event: str
    minute: datetime
    count: int = 0
    units: int = 0
    value_sum: float = 0.0
    source_topic: str = ""
    source_partition: int = 0
    source_offset: int = 0


@dataclass
class Writes:
    """What one batch writes: rows per table, and what the batch turned away."""

    events: list[CanonicalEvent] = field(default_factory=list)
    aliases: list[AliasRow] = field(default_factory=list)
    users: dict[tuple[str, str], UserRow] = field(default_factory=dict)
    companies: dict[tuple[str, str], CompanyRow] = field(default_factory=dict)
    units: dict[tuple[str, str, str, str], UnitRow] = field(default_factory=dict)
    touched_units: dict[tuple[str, str, str], tuple[CanonicalEvent, UnitState]] = field(default_factory=dict)
    """(org, experiment, unit) → the batch's last event for it and the unit: rows built in ``finish``."""
    touched_users: dict[tuple[str, str], tuple[UserState, int]] = field(default_factory=dict)
    """(org, user) → the user and the offset of the batch's last item for it (its row's version)."""
    touched_companies: dict[tuple[str, str], tuple[CompanyState, int]] = field(default_factory=dict)
    rollups: dict[tuple[Any, ...], RollupRow] = field(default_factory=dict)
    duplicates: Counter[str] = field(default_factory=Counter)
    capped: Counter[str] = field(default_factory=Counter)
    """Items a state cap turned away, by cap (see ``pipeline.state``)."""
    letters: list[DeadLetter] = field(default_factory=list)
    """Items that failed in this stage, with why."""
    last_offset: dict[tuple[str, int], int] = field(default_factory=dict)
    """Per (topic, partition): the last offset the batch covered (committed with its state)."""
    forward: dict[int, list[tuple[int, bytes]]] = field(default_factory=dict)
    """Per source partition: keyed records (destination partition, value) that carry its raw
    batches' items to other partitions, produced in its transaction."""
    normalized: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Raw events by (family, outcome): ``in``, ``invalid``; undecodable raw records."""
    staged: dict[int, list[tuple[bytes, bytes | None]]] = field(default_factory=dict)
    """Per partition: the state store's changelog records of the batch (what its commit writes)."""
    layers: list[dict[str, Any]] = field(default_factory=list)
    """The batch's state changes as the processor keeps them readable until its commit has ended
    (``Processor.release``)."""

    def drop(self, partitions: set[int]) -> None:
        """Commit nothing of ``partitions`` (let go while the batch was processed: their records
        are taken again). Their rows stay: a replay writes the same rows (see the module)."""
        self.last_offset = {key: last for key, last in self.last_offset.items() if key[1] not in partitions}
        for partition in partitions:
            self.staged.pop(partition, None)
            self.forward.pop(partition, None)

    def tables(self) -> list[tuple[str, list[Any]]]:
        """Non-event rows per table, in the order the sink writes them."""
        return [
            ("user_aliases", self.aliases),
            ("users", list(self.users.values())),
            ("companies", list(self.companies.values())),
            ("experiment_units", list(self.units.values())),
            ("rollups_1m", list(self.rollups.values())),
        ]
