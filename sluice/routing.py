"""Where an event's state lives: the routing keys and the partition of a key, shared by the
gateway (which puts each event in its unit's partition, :func:`split`) and the worker (which
keeps each piece of state in the partition of its key, ``pipeline.records``).

A unit's events are routed by ``org␀unit:UNIT``, a user's items by ``org␀user:USER``, a
company's by ``org␀company:ID``; the partition is ``crc32(key) mod partitions``.
"""

from __future__ import annotations

import zlib

import msgspec

from sluice.envelope import RawBatch


def partition_of(key: bytes, partitions: int) -> int:
    return zlib.crc32(key) % partitions


def unit_route(org_id: str, unit: str) -> bytes:
    """The routing key of a unit's events (and of a raw record holding them)."""
    return f"{org_id}\x00unit:{unit}".encode()


def user_route(org_id: str, user_id: str) -> bytes:
    return f"{org_id}\x00user:{user_id}".encode()


def company_route(org_id: str, company_id: str) -> bytes:
    return f"{org_id}\x00company:{company_id}".encode()


def split(batch: RawBatch, units: list[str], partitions: int) -> list[tuple[bytes, RawBatch]]:
    """``batch`` as raw records keyed for the partitions of its events' units (``units[i]`` is
    the unit of ``batch.events[i]``, by the rule the family's normalizer applies): one record
    when they share a partition — a client's batch, the common case — else one per partition.
    Each event keeps its index in the request, so derived message ids do not change."""
    if len(units) != len(batch.events) or not units:  # not named event by event: one record
        return [(unit_route(batch.org_id, units[0] if units else ""), batch)]
    first = unit_route(batch.org_id, units[0])
    if all(unit == units[0] for unit in units):
        return [(first, batch)]
    positions: dict[int, list[int]] = {}
    keys: dict[int, bytes] = {}
    for position, unit in enumerate(units):
        key = unit_route(batch.org_id, unit)
        partition = partition_of(key, partitions)
        positions.setdefault(partition, []).append(position)
        keys.setdefault(partition, key)
    if len(positions) == 1:
        return [(first, batch)]
    return [
        (keys[partition], msgspec.structs.replace(
            batch, events=[batch.events[i] for i in taken], indexes=[batch.indexes[i] for i in taken]))
        for partition, taken in positions.items()
    ]  # fmt: skip
