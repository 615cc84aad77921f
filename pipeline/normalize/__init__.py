"""Raw batches (one per accepted request) → canonical events, one mapper per family.

A mapper never raises for bad input: each event becomes a :class:`CanonicalEvent` or an
:class:`Invalid` with its reason, which goes to the dead-letter topic. The field mapping of every
family is written down in ``docs/field-mapping.md``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

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


def normalize(batch: RawBatch) -> Iterator[CanonicalEvent | Invalid]:
    return MAPPERS[batch.family](batch)


__all__ = ["Invalid", "normalize"]
