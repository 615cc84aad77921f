"""Part of ``make bench``, and on its own: one worker process's rate from the raw topic into
warehouse rows, everything on (dedupe, users, attribution, rollups, fenced transactions).

A fresh broker and a gateway; ``BENCH_WORKER_EVENTS`` events of the four families' mix with 5 %
duplicates are loaded into the raw topic through the gateway; the gateway stops; then one worker
starts and works through them. Prints one JSON line: events, seconds from start to the last row,
the rate with start-up, the steady rate (first row to last) and, with ``--profile``, the top of
a py-spy profile of the worker. ``--identified N``: identified users' traffic instead of the mix
(Solute tracks of N users with ``userId``, ``anonymousId``, properties and context; 5 % of the
batches retried whole). Usage: ``python bench/worker_rate.py [--profile] [--identified 20000]``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "bench"))
from harness import bench_settings, drain, fresh_broker, start, wait_http  # noqa: E402
from loads import preload  # noqa: E402

EVENTS = int(os.environ.get("BENCH_WORKER_EVENTS", "1000000"))


def profile_top(path: Path, limit: int = 25) -> list[tuple[str, float]]:
    """py-spy's raw (collapsed) stacks → the share of samples in each of the top frames (self)."""
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        n = int(samples)
        total += n
        own[frames[-1].split(" (")[0] + " " + frames[-1].rsplit("/", 1)[-1].rstrip(")")] += n
    return [(frame, round(100 * n / max(total, 1), 1)) for frame, n in own.most_common(limit)]


def main(profile: bool, identified_users: int = 0) -> dict[str, object]:
    with fresh_broker("sluice-worker-bench-") as (work, broker, processes):
        settings = bench_settings(work, broker.bootstrap, "wk.")
        filled = preload(settings, work, EVENTS, identified_users)
        started = time.monotonic()
        worker = start(settings, "worker", work / "worker.log")
        processes.append(worker)
        wait_http(f"{settings.worker_url}/healthz", 120)
        spy = None
        if profile:
            spy = subprocess.Popen(
                [str(REPO / ".venv/bin/py-spy"), "record", "-p", str(worker.pid), "-d", "20", "-f", "raw",
                 "-o", str(work / "worker.prof"), "--nonblocking"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
        seconds, rows, steady = drain(settings, started)
        result: dict[str, object] = {
            "events_accepted": filled, "rows": rows, "seconds": round(seconds, 1),
            "events_per_s": round(filled / seconds), "steady_rows_per_s": round(steady),
        }  # fmt: skip
        if spy is not None:
            spy.wait(timeout=60)
            result["profile"] = profile_top(work / "worker.prof")
        return result


if __name__ == "__main__":
    users = int(sys.argv[sys.argv.index("--identified") + 1]) if "--identified" in sys.argv else 0
    print(json.dumps(main("--profile" in sys.argv, users)))
