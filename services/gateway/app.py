"""The gateway: authenticate, check the envelope, make the batch durable in Kafka, answer.

It keeps no per-user state. Every accepted request becomes one record on the raw topic
(:class:`sluice.envelope.RawBatch`); the answer is sent only after Kafka acknowledged it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import msgspec
from aiohttp import web

from services.gateway import solute
from services.gateway.context import GATEWAY, Gateway, gateway_of
from services.gateway.errors import cors_middleware, error_middleware, json_response
from services.gateway.sink import KafkaSink
from sluice.registry import Registry, RegistryFollower
from sluice.settings import Settings
from sluice.topics import ensure_topics

log = logging.getLogger("sluice.gateway")


async def healthz(request: web.Request) -> web.Response:
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    ready = gateway_of(request).ready()
    return json_response({"ready": ready}, 200 if ready else 503)


def build_app(gateway: Gateway) -> web.Application:
    app = web.Application(
        middlewares=[cors_middleware, error_middleware],
        client_max_size=gateway.settings.max_body_bytes,
    )
    app[GATEWAY] = gateway
    app.router.add_post("/api/events", solute.handle)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def run_gateway(settings: Settings) -> None:
    """Serve until SIGINT/SIGTERM; in-flight requests finish before the producer closes."""
    registry = Registry()
    follower = RegistryFollower(settings.kafka_bootstrap, settings.registry_topic, registry)
    sink = KafkaSink(settings.kafka_bootstrap, settings.produce_timeout)
    gateway = Gateway(settings, sink, registry, ready=follower.ready.is_set)
    app = build_app(gateway)

    async def lifecycle(app: web.Application) -> AsyncIterator[None]:
        await ensure_topics(settings)
        await sink.start()
        await follower.start()
        await asyncio.wait_for(follower.ready.wait(), 30)
        yield
        await follower.stop()
        await sink.stop()

    app.cleanup_ctx.append(lifecycle)
    logging.basicConfig(level=settings.log_level.upper(), format="%(message)s")
    logging.getLogger("aiokafka").setLevel(logging.WARNING)
    web.run_app(
        app, host=settings.gateway_host, port=settings.gateway_port,
        shutdown_timeout=10, access_log=None, print=lambda *_: log.info(
            msgspec.json.encode({"msg": "gateway listening", "port": settings.gateway_port}).decode()
        ),
    )  # fmt: skip
