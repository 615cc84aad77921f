"""The gateway: authenticate, check the envelope, make the batch durable in Kafka, answer.

It keeps no per-user state. An accepted request becomes one record on the raw topic per
partition its events go to (:class:`sluice.envelope.RawBatch`; each event goes to its unit's
partition, ``sluice/routing.py``); the answer is sent only after Kafka acknowledged them all.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from services.gateway.context import GATEWAY, Gateway, budget_middleware, gateway_of
from services.gateway.errors import FAMILY_OF, cors_middleware, error_middleware, json_response
from services.gateway.openapi import openapi_document
from services.gateway.routes import CONFIG_ROUTES, ROUTE_FAMILY, ROUTES, family_of
from services.gateway.sink import KafkaSink
from sluice.children import supervise
from sluice.kafkaconf import kafka_security
from sluice.logs import configure_logging
from sluice.registry import Registry
from sluice.registry_topic import RegistryFollower
from sluice.sealing import sealer_from
from sluice.settings import Settings
from sluice.topics import ensure_topics

log = logging.getLogger("sluice.gateway")


def route_label(request: web.Request) -> str:
    """The route for metrics: an ingest path, a config route's pattern, else ``other``."""
    if request.path in ROUTE_FAMILY:
        return request.path
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None and resource.canonical in CONFIG_ROUTES else "other"


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    response = await handler(request)
    gateway_of(request).metrics.requests.labels(route_label(request), str(response.status)).inc()
    return response


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready = gateway_of(request).ready()
    return json_response({"ready": ready}, 200 if ready else 503)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(gateway_of(request).metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def openapi(request: web.Request) -> web.Response:
    return json_response(openapi_document())


def build_app(gateway: Gateway) -> web.Application:
    """The SDK-facing app; ``/metrics`` and ``/openapi.json`` too unless a metrics port is set."""
    app = web.Application(
        middlewares=[cors_middleware, metrics_middleware, error_middleware, budget_middleware],
        client_max_size=gateway.settings.max_body_bytes,
        handler_args={"auto_decompress": False},  # bodies are decoded, bounded, by read_body
    )
    app[GATEWAY] = gateway
    app[FAMILY_OF] = family_of
    for route in ROUTES:
        app.router.add_route(route.method, route.path, route.handler)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    if not gateway.settings.metrics_port:
        _add_ops_routes(app)
    return app


def build_ops_app(gateway: Gateway) -> web.Application:
    """``/metrics`` and ``/openapi.json`` on ``settings.metrics_port``, for the cluster only."""
    app = web.Application()
    app[GATEWAY] = gateway
    app.router.add_get("/healthz", healthz)
    _add_ops_routes(app)
    return app


def _add_ops_routes(app: web.Application) -> None:
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/openapi.json", openapi)


def run_gateway(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM: one process, or ``settings.gateway_processes`` of them."""
    if settings.gateway_processes > 1:
        run_processes(settings)
    else:
        serve(settings)


def serve(settings: Settings, reuse_port: bool = False) -> None:
    """One gateway process; in-flight requests finish before the producer closes."""
    import uvloop

    configure_logging(settings.log_level)
    registry = Registry(sealer_from(settings.registry_key))
    security = kafka_security(settings)
    follower = RegistryFollower(settings.kafka_bootstrap, settings.registry_topic, registry, security=security)
    sink = KafkaSink(settings.kafka_bootstrap, settings.produce_timeout, settings.kafka_compression, security)
    gateway = Gateway(settings, sink, registry, ready=follower.healthy)
    gateway.metrics.state.follower = follower
    app = build_app(gateway)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await ensure_topics(settings)
        await sink.start()
        await follower.start()
        await asyncio.wait_for(follower.ready.wait(), 30)
        ops = await _serve_ops(gateway) if settings.metrics_port else None
        log.info("gateway listening", extra={"port": settings.gateway_port})
        yield
        if ops is not None:
            await ops.cleanup()
        await follower.stop()
        await sink.stop()

    app.cleanup_ctx.append(lifecycle)
    web.run_app(
        app, host=settings.gateway_host, port=settings.gateway_port, shutdown_timeout=10,
        access_log=None, print=None, handle_signals=True, reuse_port=reuse_port,
        # A burst of new connections (SDKs reconnecting after a deploy) must not overflow the
        # listen queue: a dropped SYN costs its client a second before it tries again.
        backlog=4096,
        # A connection that has not sent a whole request by then is closed: slow-loris senders of
        # headers hold nothing for long. (Slow bodies: Gateway.read_body answers 408.)
        keepalive_timeout=settings.client_timeout,
        loop=uvloop.new_event_loop(),
    )  # fmt: skip


async def _serve_ops(gateway: Gateway) -> web.AppRunner:
    runner = web.AppRunner(build_ops_app(gateway), access_log=None)
    await runner.setup()
    settings = gateway.settings
    await web.TCPSite(runner, settings.gateway_host, settings.metrics_port, reuse_port=True).start()
    return runner


def run_processes(settings: Settings) -> None:
    """``gateway_processes`` gateways on one port (SO_REUSEPORT: the kernel spreads connections);
    SIGTERM/SIGINT go to all of them, and this returns once every one has drained and stopped.
    Each takes its share of the per-key rate limit."""
    count = settings.gateway_processes
    share = msgspec.structs.replace(
        settings, gateway_processes=1, rate_limit=settings.rate_limit / count, rate_burst=settings.rate_burst / count
    )
    supervise(serve, [(share, True)] * count, "gateway")
