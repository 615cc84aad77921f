"""The whole system on a fresh broker, gateway and worker (nothing before it, unlike the phase of
``make bench`` that follows the worker's million-event run): ``sustained`` from ``bench/run.py``
at the given rates — 30 s probes, then ``BENCH_SUSTAIN_SECONDS`` (default 300) at the highest
that held. Usage: ``python bench/sustained.py 10000 15000 20000``; prints the result as JSON.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from run import bench_key, bench_settings, start, stop, sustained, wait_http  # noqa: E402

from sluice.localkafka import LocalKafka, ensure_jars, free_port  # noqa: E402


def main(rates: list[float]) -> dict[str, object]:
    work = Path(tempfile.mkdtemp(prefix="sluice-sustained-"))
    broker = LocalKafka(work / "kafka", ensure_jars(), port=free_port())
    broker.start(heap="1g")
    broker.wait_ready()
    processes = []
    try:
        settings = bench_settings(work, broker.bootstrap, "wk.")
        key = bench_key(settings)
        processes.append(start(settings, "gateway", work / "gateway.log"))
        wait_http(f"http://127.0.0.1:{settings.gateway_port}/readyz")
        worker = start(settings, "worker", work / "worker.log")
        processes.append(worker)
        wait_http(f"{settings.worker_url}/healthz", 120)
        assert broker.process is not None
        return sustained(settings, key, rates, [worker.pid, broker.process.pid])
    finally:
        for process in processes:
            stop(process)
        broker.stop()


if __name__ == "__main__":
    print(json.dumps(main([float(rate) for rate in sys.argv[1:]] or [10_000.0, 15_000.0, 20_000.0])))
