"""The state stores as the processor sees them: a small protocol (``Store``: get, and write a
batch's values), the stores of each kind of state (``Stores``), an in-memory one for tests
(``DictStore``), and the write-back layer in front of each (``WriteBack``): a batch's changes
stay readable until the batch commits, and are written at its end."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from pipeline.state import CompanyState, Seen, UnitState, UserState

T = TypeVar("T")


class Store(Protocol, Generic[T]):
    """A keyed state store (``pipeline.statestore`` in the worker, a dict in tests)."""

    def get(self, key: str) -> T | None: ...

    def set_all(self, values: dict[str, tuple[T, int]]) -> list[str]:
        """Write a batch's values, each with its key's partition (where its changelog record goes);
        the keys of those refused (``pipeline.batch.MAX_STATE_VALUE``), which keep their old value."""


class DictStore(Generic[T]):
    def __init__(self) -> None:
        self.data: dict[str, T] = {}

    def get(self, key: str) -> T | None:
        return self.data.get(key)

    def set_all(self, values: dict[str, tuple[T, int]]) -> list[str]:
        self.data.update((key, value) for key, (value, _) in values.items())
        return []


@dataclass
class Stores:
    seen: Store[Seen]
    units: Store[UnitState]
    users: Store[UserState]
    companies: Store[CompanyState]

    @classmethod
    def in_memory(cls) -> Stores:
        return cls(DictStore(), DictStore(), DictStore(), DictStore())


class WriteBack(Generic[T]):
    """A batch's view of a store: reads go through, writes stay here until ``flush``, which
    stages each touched key once (one changelog record per key per batch, not per event).

    What a batch flushed stays readable as a layer until its commit has ended (``release``):
    the next batch is processed while this one commits (``pipeline.worker``), and must see its
    state, which the store has not applied yet."""

    def __init__(self, store: Store[T]) -> None:
        self.store = store
        self.dirty: dict[str, tuple[T, int]] = {}
        self.layers: list[dict[str, tuple[T, int]]] = []
        """What batches flushed and have not finished committing, oldest first."""

    def get(self, key: str) -> T | None:
        held = self.dirty.get(key)
        if held is None:
            for layer in reversed(self.layers):
                held = layer.get(key)
                if held is not None:
                    break
            else:
                return self.store.get(key)
        return held[0]

    def put(self, key: str, value: T, partition: int) -> None:
        self.dirty[key] = (value, partition)

    def flush(self) -> dict[str, tuple[T, int]]:
        layer, self.dirty = self.dirty, {}
        for refused in self.store.set_all(layer):
            del layer[refused]  # not written: what the store holds stays the value
        self.layers.append(layer)
        return layer

    def release(self, layer: dict[str, tuple[T, int]]) -> None:
        self.layers = [held for held in self.layers if held is not layer]

    def forget(self, partition: int) -> None:
        """Drop what is staged for ``partition`` (let go: its state is read anew from the store)."""
        self.dirty = {key: held for key, held in self.dirty.items() if held[1] != partition}
        for layer in self.layers:
            for key in [key for key, held in layer.items() if held[1] == partition]:
                del layer[key]
