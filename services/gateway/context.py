"""The state every handler shares, and how a handler finds it."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from services.gateway.errors import GatewayError, unavailable
from services.gateway.sink import RecordSink, SinkUnavailable
from sluice.envelope import DeadLetter, RawBatch, encoder
from sluice.registry import ApiKey, Registry
from sluice.settings import Settings

log = logging.getLogger("sluice.gateway")

Clock = Callable[[], float]


@dataclass
class Gateway:
    """What handlers share: settings, the record sink, the key registry and a clock."""

    settings: Settings
    sink: RecordSink
    registry: Registry
    clock: Clock = time.time
    ready: Callable[[], bool] = field(default=lambda: True)

    def authenticate(self, presented: str | None) -> ApiKey:
        if not presented:
            raise GatewayError(401, "Missing API key")
        key = self.registry.authenticate(presented.strip(), self.clock())
        if key is None:
            raise GatewayError(401, "Invalid or expired API key")
        return key

    async def read_body(self, request: web.Request) -> bytes:
        """The whole body, refused with 413 before reading when it is too large."""
        limit = self.settings.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            raise GatewayError(413, f"Request body too large (max {limit} bytes)")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.content.iter_chunked(1 << 16):
            size += len(chunk)
            if size > limit:
                raise GatewayError(413, f"Request body too large (max {limit} bytes)")
            chunks.append(chunk)
        return b"".join(chunks)

    async def publish(self, batch: RawBatch | None, dead: list[DeadLetter]) -> None:
        """Make the accepted events and the dead letters durable; 503 if Kafka will not."""
        sends = [self.sink.send(self.settings.dlq_topic, None, encoder.encode(d)) for d in dead]
        if batch is not None:
            raw = encoder.encode(batch)
            sends.append(self.sink.send(self.settings.raw_topic, batch.org_id.encode(), raw))
        try:
            await asyncio.gather(*sends)
        except SinkUnavailable as exc:
            log.warning("produce failed: %s", exc)
            raise unavailable() from exc


GATEWAY = web.AppKey("gateway", Gateway)


def gateway_of(request: web.Request) -> Gateway:
    return request.app[GATEWAY]
