"""The whole system on a fresh broker, gateway and worker (nothing before it, unlike the phase of
``make bench`` that follows the worker's million-event run): ``sustained`` from ``bench/run.py``
at the given rates — 30 s probes, then ``BENCH_SUSTAIN_SECONDS`` (default 300) at the highest
that held. Usage: ``python bench/sustained.py 10000 15000 20000``; prints the result as JSON.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from harness import bench_key, bench_settings, fresh_broker, start, wait_http  # noqa: E402
from steady import sustained  # noqa: E402


def main(rates: list[float]) -> dict[str, object]:
    with fresh_broker("sluice-sustained-") as (work, broker, processes):
        settings = bench_settings(work, broker.bootstrap, "wk.")
        key = bench_key(settings)
        processes.append(start(settings, "gateway", work / "gateway.log"))
        wait_http(f"http://127.0.0.1:{settings.gateway_port}/readyz")
        worker = start(settings, "worker", work / "worker.log")
        processes.append(worker)
        wait_http(f"{settings.worker_url}/healthz", 120)
        assert broker.process is not None
        return sustained(settings, key, rates, [worker.pid, broker.process.pid])


if __name__ == "__main__":
    print(json.dumps(main([float(rate) for rate in sys.argv[1:]] or [10_000.0, 15_000.0, 20_000.0])))
