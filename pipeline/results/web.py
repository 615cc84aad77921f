"""Results over HTTP on the worker's analyst port (beside ``/query`` and ``/metrics``):

- ``GET /api/v1/experiments/{id}/results?org=…&metric=…&kind=…&denominator=…&fixed=…&cuped=…&alpha=…``
  → the scorecard as JSON (``pipeline.scorecard.Scorecard``, the CLI's ``--format json``);
- ``GET /results`` (the orgs; ``?org=`` its experiments) and ``GET /results/{org}/{id}`` (per metric:
  the lifts with their intervals as bars, the interval over time, the SRM warning), as HTML drawn
  here, with no script and nothing loaded from elsewhere.

All behind the analysts' query token (``pipeline.warehouse.readonly.query_token``): as a bearer
token, or as the password of HTTP Basic (any user name) — which a browser asks for itself. Unlike
``/query`` these run only Sluice's own statements, so they are served with a ClickHouse server too.
The experiment's declared split and saved metrics come from the registry topic, followed in the
background (``RegistryFollower``); until it has caught up, the split is taken as equal.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import logging
from collections.abc import AsyncIterator, Callable, Mapping

import msgspec
from aiohttp import web

from pipeline.results.declared import Declared, declared
from pipeline.results.metric import Metric, MetricError, chosen
from pipeline.results.page import experiments_page, results_page
from pipeline.results.sql import EXPERIMENTS, ORGS
from pipeline.scorecard import Request, Scorecard, scorecard
from pipeline.stats.sums import checked_alpha
from pipeline.warehouse import Warehouse, WarehouseError
from sluice.configs import ConfigStore
from sluice.kafkaconf import kafka_security
from sluice.retry import Backoff, retrying
from sluice.settings import Settings

log = logging.getLogger("sluice.results")

REALM = 'Basic realm="Sluice results", charset="UTF-8"'
HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-store",
}
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def token_of(header: str) -> str:
    """The token an ``Authorization`` header carries: ``Bearer <token>`` or Basic with it as password."""
    if header.startswith("Bearer "):
        return header.removeprefix("Bearer ").strip()
    if header.startswith("Basic "):
        try:
            decoded = base64.b64decode(header.removeprefix("Basic ").strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[2]
    return ""


class ResultsWeb:
    def __init__(
        self, warehouse: Warehouse, token: str, configs: Callable[[], ConfigStore | None] = lambda: None,
        value_property: str = "order_total",
    ) -> None:  # fmt: skip
        self.warehouse = warehouse
        self.token = token
        self.configs = configs
        self.value_property = value_property

    def install(self, app: web.Application) -> None:
        app.router.add_get("/api/v1/experiments/{experiment}/results", self._json)
        app.router.add_get("/results", self._experiments)
        app.router.add_get("/results/{org}/{experiment}", self._page)

    # --- handlers -----------------------------------------------------------------------------

    def _refused(self, request: web.Request) -> web.Response | None:
        given = token_of(request.headers.get("Authorization", ""))
        if self.token and given and hmac.compare_digest(given.encode(), self.token.encode()):
            return None
        return web.Response(
            text="the analysts' query token is required (Bearer, or as the Basic password)\n", status=401,
            headers={"WWW-Authenticate": REALM, **HEADERS},
        )  # fmt: skip

    async def _json(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        org = request.query.get("org", "")
        if not org:
            return _error("org is required", 400)
        try:
            query = request.query
            known = self._declared(org, request.match_info["experiment"])
            # one object: the first of the saved metrics when none is asked (the page shows them all)
            first = chosen(query.get("metric"), query.get("kind"), query.get("denominator"), known.metrics)[0]
            ask = _request(request, first)
            card = await self._scorecard(org, request.match_info["experiment"], ask)
        except (MetricError, ValueError) as exc:
            return _error(str(exc), 400)
        except WarehouseError as exc:
            return _error(str(exc), 503)
        if card is None:
            return _error("no exposed units for this experiment", 404)
        return web.Response(body=msgspec.json.encode(card), content_type="application/json", headers=HEADERS)

    async def _experiments(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        org = request.query.get("org")
        try:
            if org:
                experiments = await self._rows(EXPERIMENTS, {"org": org})
                return _html(experiments_page(org, [], experiments))
            orgs = [str(r["org_id"]) for r in await self._rows(ORGS, {})]
        except WarehouseError as exc:
            return _error(str(exc), 503)
        return _html(experiments_page(None, orgs, []))

    async def _page(self, request: web.Request) -> web.Response:
        if (refused := self._refused(request)) is not None:
            return refused
        org, experiment = request.match_info["org"], request.match_info["experiment"]
        try:
            known = self._declared(org, experiment)
            query = request.query
            metrics = chosen(query.get("metric"), query.get("kind"), query.get("denominator"), known.metrics)
            cards = [c for m in metrics if (c := await self._scorecard(org, experiment, _request(request, m)))]
        except (MetricError, ValueError) as exc:
            return _error(str(exc), 400)
        except WarehouseError as exc:
            return _error(str(exc), 503)
        return _html(results_page(org, experiment, cards, dict(request.query)))

    # --- reading ------------------------------------------------------------------------------

    def _declared(self, org: str, experiment: str) -> Declared:
        return declared(self.configs(), org, experiment)

    async def _scorecard(self, org: str, experiment: str, ask: Request) -> Scorecard | None:
        known = self._declared(org, experiment)
        return await asyncio.to_thread(scorecard, self.warehouse, org, experiment, ask, known, self.value_property)

    async def _rows(self, sql: str, parameters: dict[str, str]) -> list[dict[str, object]]:
        out = await asyncio.to_thread(
            self.warehouse.execute, sql, "JSONEachRow", parameters=parameters, behind_writes=True
        )
        return [msgspec.json.decode(line) for line in out.splitlines() if line]


def _request(request: web.Request, measured: Metric) -> Request:
    query = request.query
    alpha = checked_alpha(float(query.get("alpha", "0.05")))
    return Request(
        measured, sequential=not _flag(query, "fixed", False), cuped=_flag(query, "cuped", None), alpha=alpha,
        control=query.get("control"),
    )  # fmt: skip


def _flag(query: Mapping[str, str], name: str, default: bool | None) -> bool | None:
    """A yes/no parameter; absent, the default. Anything else is refused: a typo in ``cuped=`` or
    ``fixed=`` would otherwise change the analysis without a word."""
    value = query.get(name)
    if value is None:
        return default
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise ValueError(f"{name} must be one of {', '.join(sorted(_TRUE | _FALSE))}, not {value!r}")


def _error(message: str, status: int) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=HEADERS)


def _html(text: str) -> web.Response:
    return web.Response(text=text, content_type="text/html", headers=HEADERS)


@contextlib.asynccontextmanager
async def followed_registry(bootstrap: str, topic: str, security: dict[str, object]) -> AsyncIterator[
    Callable[[], ConfigStore | None]
]:  # fmt: skip
    """The registry's configs as a follower keeps them (None until it has started: Kafka may be
    down; it is tried again in the background)."""
    from sluice.registry_topic import RegistryFollower

    holder: list[RegistryFollower] = []

    async def started() -> RegistryFollower:
        follower = RegistryFollower(bootstrap, topic, security=security)
        await follower.start()
        return follower

    async def start() -> None:
        # no broker yet, or no topic: results use equal weights meanwhile
        holder.append(await retrying("results: following the registry", started, (Exception,), Backoff(1.0, 30.0)))

    task = asyncio.create_task(start())
    try:
        yield lambda: holder[0].registry.configs if holder else None
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        for follower in holder:
            await follower.stop()


def install(app: web.Application, warehouse: Warehouse, token: str, settings: Settings) -> None:
    """Results on ``app`` (the worker's analyst port), following the registry while it runs."""
    configs: list[Callable[[], ConfigStore | None]] = []

    async def follow(app: web.Application) -> AsyncIterator[None]:
        security = dict(kafka_security(settings))
        async with followed_registry(settings.kafka_bootstrap, settings.registry_topic, security) as current:
            configs.append(current)
            yield

    app.cleanup_ctx.append(follow)
    web_ = ResultsWeb(warehouse, token, lambda: configs[0]() if configs else None, settings.value_property)
    web_.install(app)
