"""Results with a ClickHouse server as the warehouse (``sluice warehouse``: ClickHouse's HTTP
interface in front of the engine), through the same HTTP API: the statements bind their values
as server-side parameters, and the answer equals the embedded warehouse's."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import msgspec
import pytest
from aiohttp import web

from pipeline.results.metric import Metric
from pipeline.results.web import ResultsWeb
from pipeline.scorecard import Request, scorecard
from pipeline.warehouse import ServerWarehouse, Warehouse, migrate
from tests.processes import warehouse_server
from tests.test_results import fill

pytestmark = pytest.mark.clickhouse


async def test_a_server_warehouse_answers_as_the_embedded_one(warehouse: Warehouse, tmp_path: Path) -> None:
    fill(warehouse)
    with warehouse_server(tmp_path / "served") as url:
        server = ServerWarehouse(f"{url}/results_test")
        migrate(server)
        fill(server)
        app = web.Application()
        ResultsWeb(server, "t0ken").install(app)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        try:
            for kind in ("conversion", "mean", "count", "ratio"):
                query = {"org": "acme", "metric": "purchase", "kind": kind}
                async with aiohttp.ClientSession() as http, http.get(
                    f"http://127.0.0.1:{port}/api/v1/experiments/exp/results", params=query,
                    headers={"Authorization": "Bearer t0ken"},
                ) as answer:  # fmt: skip
                    assert answer.status == 200, await answer.text()
                    served = await answer.json()
                embedded = scorecard(warehouse, "acme", "exp", Request(Metric("purchase", kind)))
                assert served["variants"] == msgspec.json.decode(msgspec.json.encode(embedded))["variants"]
        finally:
            await runner.cleanup()
            server.close()
