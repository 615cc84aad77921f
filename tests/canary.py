"""Canary events that prove the whole pipeline still moves: one for a unit in each partition.

A canary to one unit lands through one partition only; a poison input that stalls another
partition's stage would go unseen. The units are chosen with the project's own partitioner
(``pipeline.records``), which the gateway and the worker route by."""

from __future__ import annotations

import uuid

from sluice.routing import partition_of, unit_route
from tests.builders import encode, solute_event


def units_by_partition(org: str, partitions: int) -> list[str]:
    """A unit key for each partition, in partition order."""
    found: dict[int, str] = {}
    n = 0
    while len(found) < partitions:
        unit = f"canary-unit-{n}"
        found.setdefault(partition_of(unit_route(org, unit), partitions), unit)
        n += 1
    return [found[p] for p in range(partitions)]


def canary_batch(org: str, partitions: int) -> tuple[bytes, list[str]]:
    """A Solute ``/api/events`` body with a new event for a unit of each partition, and their
    message ids (the gateway writes one raw record per partition)."""
    tag = uuid.uuid4().hex
    events = [
        solute_event(messageId=f"canary-{partition}-{tag}", userId=unit)
        for partition, unit in enumerate(units_by_partition(org, partitions))
    ]
    return encode({"batch": events}), [event["messageId"] for event in events]


def landed_sql(message_ids: list[str]) -> str:
    """How many of the canaries are in the ``events`` table (one row each, whatever merges did)."""
    quoted = ", ".join(f"'{message_id}'" for message_id in message_ids)  # ours: no quotes inside
    return f"SELECT uniqExact(message_id) AS n FROM events WHERE message_id IN ({quoted})"
