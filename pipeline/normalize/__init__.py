"""Raw batches (one per accepted request) → canonical events, one mapper per family.

A mapper never raises for bad input: each event becomes a :class:`CanonicalEvent` or an
:class:`Invalid` with its reason, which goes to the dead-letter topic. The field mapping of every
family is written down in ``docs/field-mapping.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta

from pipeline.canonical import CanonicalEvent
from pipeline.normalize import halo, solute, traffical, xaiku
from pipeline.normalize.common import Invalid
from sluice.envelope import RawBatch

Mapper = Callable[[RawBatch], Iterator[CanonicalEvent | Invalid]]

MAPPERS: dict[str, Mapper] = {
    "solute": solute.normalize,
    "halo": halo.normalize,
    "xaiku": xaiku.normalize,
    "traffical": traffical.normalize,
}


FUTURE_TOLERANCE = timedelta(days=1)
"""An event time this far past its receipt is flagged ``future_timestamp`` (kept as sent, after
clock-skew correction): a client clock that is wrong by more than skew correction can fix."""


def normalize(batch: RawBatch) -> Iterator[CanonicalEvent | Invalid]:
    for item in MAPPERS[batch.family](batch):
        if isinstance(item, CanonicalEvent) and item.timestamp - item.received_at > FUTURE_TOLERANCE:
            item.flags.append("future_timestamp")
        yield item


__all__ = ["Invalid", "normalize"]
