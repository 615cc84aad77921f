"""Part of ``make bench``: the worker's state store holding N dedupe ids, in a process of its own.

Writes N message ids as the keyed stage does (``Seen`` values under ``seen`` keys, spread over the
topic's partitions, committed 100k at a time through the real changelog), then looks up 1 M of
them, and prints one JSON line: ids, write and lookup rates, peak RSS, and the local database's
size on disk. Usage: ``python bench/dedupe_ids.py BOOTSTRAP TOPIC PARTITIONS N DIR``.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aiokafka import TopicPartition  # noqa: E402

from pipeline.keyed import Fencing, commit_partition  # noqa: E402
from pipeline.state import Seen  # noqa: E402
from pipeline.statestore import StateStore  # noqa: E402
from sluice.envelope import encoder  # noqa: E402

COMMIT_EVERY = 100_000


def peak_rss_mb() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+)", status)[1]) / 1024  # type: ignore[index]


def key(n: int) -> bytes:
    return f"seen\x00event\x00bench\x00{n:016x}-5b0c-4f0e-9d41-msg".encode()


async def main(bootstrap: str, topic: str, partitions: int, count: int, path: Path) -> dict[str, float]:
    store = StateStore(path, topic, bootstrap)
    fencing = Fencing(bootstrap, "bench-dedupe")
    for partition in range(partitions):
        await fencing.acquire(partition)
    await store.recover(set(range(partitions)))

    async def commit() -> None:  # as the keyed stage does: a transaction per partition
        for partition in sorted(store.pending):
            await commit_partition(store, fencing, partition, {TopicPartition(topic, partition): 1})

    now = time.time()
    started = time.perf_counter()
    for n in range(count):
        store.put(key(n), encoder.encode(Seen((n % partitions, n, 0), now)), n % partitions)
        if (n + 1) % COMMIT_EVERY == 0:
            await commit()
    await commit()
    wrote = time.perf_counter() - started
    rng = random.Random(1)
    lookups = 1_000_000
    started = time.perf_counter()
    found = sum(store.get(key(rng.randrange(count))) is not None for _ in range(lookups))
    looked = time.perf_counter() - started
    assert found == lookups
    await store.stop()
    await fencing.close()
    return {"ids": count, "writes_per_s": count / wrote, "lookups_per_s": lookups / looked}


if __name__ == "__main__":
    bootstrap, topic, partitions, count, path = sys.argv[1:6]
    result = asyncio.run(main(bootstrap, topic, int(partitions), int(count), Path(path)))
    result["peak_rss_mb"] = peak_rss_mb()
    result["disk_mb"] = sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20
    print(json.dumps(result))
