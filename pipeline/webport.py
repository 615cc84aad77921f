"""The worker's web port: ``/healthz`` and ``/metrics`` for operators and, for the embedded
warehouse only this process may open, the analysts' ``POST /query`` (read-only SQL behind the
query token) beside the experiment results (``pipeline.results.web``)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from typing import TYPE_CHECKING

from aiohttp import web
from aiokafka.errors import KafkaError
from prometheus_client import generate_latest

from pipeline.results import web as results_web
from pipeline.warehouse import WarehouseError
from pipeline.warehouse.formats import output_format
from pipeline.warehouse.readonly import authorized, read_only
from sluice.sql import ParameterText

if TYPE_CHECKING:
    from pipeline.worker import Worker


def web_app(worker: Worker) -> web.Application:
    app = web.Application(client_max_size=16 << 20)
    app.router.add_get("/healthz", _health)
    app.router.add_get("/metrics", functools.partial(_metrics, worker))
    app.router.add_post("/query", functools.partial(_query, worker))
    results_web.install(app, worker.warehouse, worker.query_token, worker.settings)  # GET /results, /api/v1/experiments
    return app


async def _health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def _metrics(worker: Worker, request: web.Request) -> web.Response:
    fetched = {}
    for tp in worker.consumer.assignment():
        with contextlib.suppress(KafkaError, TimeoutError):  # moving, or being reset: no figure now
            fetched[tp] = await asyncio.wait_for(worker.consumer.position(tp), 1.0)
    worker.metrics.update_lag(worker.consumer, fetched, transactional={worker.settings.keyed_topic})
    return web.Response(body=generate_latest(worker.metrics.registry), content_type="text/plain")


async def _query(worker: Worker, request: web.Request) -> web.Response:
    """Read-only SQL on the embedded warehouse (``pipeline.warehouse.readonly``), for the
    holder of the query token, never from a browser, and not at all with a server."""
    if worker.settings.clickhouse_url:
        return web.Response(text="no SQL here: query the ClickHouse server with your own user\n", status=404)
    if "Origin" in request.headers:
        return web.Response(text="browsers may not query the warehouse\n", status=403)
    if not authorized(request.headers.get("Authorization", ""), worker.query_token):
        return web.Response(text="a valid query token is required (Authorization: Bearer …)\n", status=401)
    fmt = output_format(request.query.get("format", "tsv"))
    if fmt is None:
        return web.Response(text="unsupported format\n", status=400)
    try:
        sql = await request.text()
        parameters = {
            k.removeprefix("param_"): ParameterText(v) for k, v in request.query.items() if k.startswith("param_")
        }
        out = await asyncio.to_thread(
            read_only, worker.warehouse, sql, fmt, worker.settings.query_time_limit, parameters
        )
    except (WarehouseError, UnicodeDecodeError) as exc:
        return web.Response(text=str(exc) + "\n", status=400)
    return web.Response(body=out, content_type="text/plain")
