"""The state store's RocksDB options hold every time it is opened, not only when it is created:
rocksdict applies the options it is given only to column families it creates, so a store opened
again ran without its bloom filters (each lookup of a new id read a block of every level)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pipeline.statestore import StateStore


def filtered(store: StateStore) -> tuple[int, int]:
    """(entries, entries under a bloom filter) over the store's table files."""
    properties = store.db.property_value("rocksdb.aggregated-table-properties") or ""
    entries = re.search(r"# entries=(\d+)", properties)
    under_filter = re.search(r"# entries for filter=(\d+)", properties)
    assert entries and under_filter, properties
    return int(entries[1]), int(under_filter[1])


@pytest.mark.parametrize("opened", [1, 2, 3])
async def test_every_table_file_has_its_bloom_filter_however_often_the_store_was_opened(
    tmp_path: Path, opened: int
) -> None:
    for time in range(opened):
        store = StateStore(tmp_path / "state", "sluice.state", "127.0.0.1:9")  # Kafka is not used here
        for n in range(1_000):
            store.db[f"seen\x00event\x00acme\x00{time}-{n}".encode()] = b"{}"
        store.db.flush()
        await store.stop()
    store = StateStore(tmp_path / "state", "sluice.state", "127.0.0.1:9")
    try:
        assert filtered(store) == (1_000 * opened, 1_000 * opened)
    finally:
        await store.stop()
