"""Raw batches (one per accepted request) → canonical events, one mapper per family.

Each event becomes a :class:`CanonicalEvent` or an :class:`Invalid` with its reason, which goes
to the dead-letter topic — whatever the event holds: a mapper that raises on one event (a bug,
an input nobody foresaw) costs that event alone, which becomes a dead letter naming the error,
never the batch or the stage. The field mapping of every family is in ``docs/field-mapping.md``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import msgspec

from pipeline.canonical import CanonicalEvent, Invalid
from pipeline.normalize import halo, posthog, segment, solute, traffical, xaiku
from sluice.envelope import RawBatch

log = logging.getLogger("sluice.worker")

Mapper = Callable[[RawBatch], Iterator[CanonicalEvent | Invalid]]

MAPPERS: dict[str, Mapper] = {
    "solute": solute.normalize,
    "halo": halo.normalize,
    "xaiku": xaiku.normalize,
    "traffical": traffical.normalize,
    "segment": segment.normalize,
    "posthog": posthog.normalize,
}


def normalize(batch: RawBatch) -> list[CanonicalEvent | Invalid]:
    """Every event of ``batch``, in order, as a canonical event or a dead letter's content."""
    mapper = MAPPERS.get(batch.family)
    if mapper is None:
        return [
            Invalid(i, f"unknown family {batch.family!r}", p) for i, p in zip(batch.indexes, batch.events, strict=False)
        ]
    try:
        items = list(mapper(batch))
    except Exception:  # one event broke the mapper: map them one by one, to isolate it
        items = [item for one in _singles(batch) for item in _map_one(mapper, one)]
    return [_checked(item) for item in items]


def _singles(batch: RawBatch) -> Iterator[RawBatch]:
    for index, payload in zip(batch.indexes, batch.events, strict=False):
        yield msgspec.structs.replace(batch, events=[payload], indexes=[index])


def _map_one(mapper: Mapper, one: RawBatch) -> list[CanonicalEvent | Invalid]:
    try:
        return list(mapper(one))
    except Exception as exc:
        log.warning("normalizing a %s event failed: %s: %s", one.family, type(exc).__name__, exc)
        return [Invalid(one.indexes[0], f"worker could not normalize the event: {type(exc).__name__}: {exc}",
                        one.events[0])]  # fmt: skip


def _checked(item: CanonicalEvent | Invalid) -> CanonicalEvent | Invalid:
    if isinstance(item, CanonicalEvent) and item.original_timestamp:
        item.flags.append("timestamp_replaced")
    return item


__all__ = ["Invalid", "normalize"]
