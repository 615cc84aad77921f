"""Part of ``make bench``, and on its own: one gateway process under wrk, beside a fresh Kafka
broker — the peak events/s, p50/p99 and CPU-µs per event of the gateway and of Kafka at each
connection count (``wrk_points`` in ``bench/run.py``). ``--processes 2`` runs two gateway
processes on one port instead. Needs ``wrk`` (``make bench`` installs it from Debian). Prints
one JSON line. Usage: ``python bench/gateway_wrk.py [--processes 2]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

sys.path.insert(0, str(REPO / "bench"))
from harness import bench_key, bench_settings, fresh_broker, start, wait_http  # noqa: E402
from loads import wrk_points  # noqa: E402

from sluice.settings import Settings  # noqa: E402


def main(processes: int) -> list[dict[str, float]]:
    with fresh_broker("sluice-gateway-bench-") as (work, broker, running):
        settings = bench_settings(work, broker.bootstrap, "gw.")
        key = bench_key(settings)
        settings = Settings.from_env(settings.to_env(), gateway_processes=processes)
        gateway = start(settings, "gateway", work / "gateway.log")
        running.append(gateway)
        wait_http(f"http://127.0.0.1:{settings.gateway_port}/readyz")
        assert broker.process is not None
        return wrk_points(settings, key, gateway.pid, broker.process.pid, work)


if __name__ == "__main__":
    count = int(sys.argv[sys.argv.index("--processes") + 1]) if "--processes" in sys.argv else 1
    print(json.dumps(main(count)))
