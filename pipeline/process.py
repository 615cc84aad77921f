"""The worker's processes: one (``run_worker``), or several members of the group from one command
(``run_worker_processes``), each serving its web port until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal

import msgspec
from aiohttp import web

from pipeline.warehouse import Warehouse, open_warehouse
from pipeline.webport import web_app
from pipeline.worker import Worker
from sluice.settings import Settings

GC_THRESHOLD = (1_000_000, 20, 1000)
"""The cyclic collector's thresholds in a worker process (Python's are 700, 10, 10). A step
allocates millions of objects that die young and form no cycles; at the default the collector
ran every few hundred events and took a fifth of the worker's CPU (bench/worker_cpu.py: 20.6 →
17.0 µs an event), and at (200,000, 50, 1000) still 7.4 % of the main thread in a worker's
profile: every collection fell in the middle of a batch and scanned the batch's live objects.
Cycles are still collected, every 1,000,000 allocations instead of 700."""


async def serve(settings: Settings, warehouse: Warehouse | None = None) -> None:
    """Run one worker until SIGINT/SIGTERM; the batch in hand commits before it leaves the group."""
    from sluice.topics import ensure_topics

    await ensure_topics(settings)
    if warehouse is None:
        warehouse = await asyncio.to_thread(open_warehouse, settings)
    worker = Worker(settings, warehouse)
    runner = web.AppRunner(web_app(worker), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, settings.worker_host, settings.worker_port).start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, worker.stopping.set)
    try:
        await worker.run()
    finally:
        await runner.cleanup()


def run_worker_processes(settings: Settings, count: int) -> None:
    """``count`` workers, each a member of the group with its own state directory
    (``{home}/worker-N``) and web port (``worker_port + N``); SIGTERM/SIGINT go to all of them,
    and this returns once every one has committed and left the group."""
    from sluice.children import supervise

    shares = [
        msgspec.structs.replace(
            settings,
            home=f"{settings.home}/worker-{n}",
            worker_port=settings.worker_port + n,
            query_token=settings.query_token or "unused: a server is configured",
        )
        for n in range(count)
    ]
    supervise(run_worker, [(share,) for share in shares], "worker")


def run_worker(settings: Settings) -> None:
    from sluice.logs import configure_logging

    configure_logging(settings.log_level)
    gc.set_threshold(*GC_THRESHOLD)
    gc.freeze()  # what start-up made lives as long as the process: never scan it again
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(settings))
