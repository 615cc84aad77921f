"""The state every handler shares — settings, sink, keys, limits, metrics, clock — and the steps
every route takes: authenticate, read the body, publish."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from services.gateway import identity
from services.gateway.budget import ByteBudget, OverBudget, Reservation
from services.gateway.encoding import decode_content
from services.gateway.errors import GatewayError, unavailable
from services.gateway.limits import RateLimiter
from services.gateway.metrics import GatewayMetrics
from services.gateway.sink import Record, RecordSink, SinkUnavailable
from sluice.envelope import DeadLetter, Family, RawBatch, body_digest, encoder
from sluice.registry import ApiKey, KeyKind, Registry
from sluice.routing import split
from sluice.settings import Settings

log = logging.getLogger("sluice.gateway")

Clock = Callable[[], float]
PUBLISHABLE: tuple[KeyKind, ...] = ("publishable",)


def bearer(request: web.Request) -> str | None:
    """The token of ``Authorization: Bearer …`` (scheme case-insensitive), else None."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


@dataclass
class Gateway:
    settings: Settings
    sink: RecordSink
    registry: Registry
    clock: Clock = time.time
    ready: Callable[[], bool] = field(default=lambda: True)
    metrics: GatewayMetrics = field(default_factory=GatewayMetrics)
    limiter: RateLimiter = field(init=False)
    budget: ByteBudget = field(init=False)

    def __post_init__(self) -> None:
        self.limiter = RateLimiter(self.settings.rate_limit, self.settings.rate_burst, self.clock)
        self.budget = ByteBudget(self.settings.max_inflight_bytes, self.settings.max_body_bytes // 8)
        self.metrics.state.budget = self.budget

    def authenticate(
        self,
        request: web.Request,
        presented: str | None,
        *,
        kinds: Collection[KeyKind] = ("publishable", "secret"),
        scope: str | None = None,
    ) -> ApiKey:
        """The key's record, or a 401 (missing, unknown, revoked, expired, wrong kind, scope or
        origin); then the key's rate limit (429 with Retry-After)."""
        if not presented:
            raise GatewayError(401, "Missing API key")
        key = self.registry.authenticate(presented, self.clock())
        if key is None:
            raise GatewayError(401, "Invalid or expired API key")
        if key.kind not in kinds:
            raise GatewayError(401, f"This endpoint needs a {' or '.join(kinds)} key")
        if scope is not None and scope not in key.scopes:
            raise GatewayError(401, f"API key lacks the {scope} scope")
        origin = request.headers.get("Origin")
        if key.allowed_origins and origin is not None and origin not in key.allowed_origins:
            raise GatewayError(401, "Origin not allowed for this API key")
        wait = self.limiter.retry_after(key.digest)
        if wait is not None:
            raise GatewayError(429, "Rate limit exceeded", retry_after=wait)
        return key

    async def read_body(self, request: web.Request, family: str, limit: int | None = None, why: str = "") -> bytes:
        """The whole body (:meth:`read_bytes`), valid UTF-8: JSON is UTF-8, and a field that is not
        cannot reach a decoder or Kafka (400)."""
        body = await self.read_bytes(request, family, limit, why)
        try:
            body.decode()
        except UnicodeDecodeError:
            raise GatewayError(400, "Request body must be UTF-8 encoded JSON") from None
        return body

    async def read_bytes(self, request: web.Request, family: str, limit: int | None = None, why: str = "") -> bytes:
        """The whole body, less its ``Content-Encoding``; 413 (before reading, when the length
        says so) if over ``limit`` (default: the body limit; ``why`` explains a lower one), 408 if
        too slow, 503 if the process holds too many request bytes already, 400 if it cannot be
        decoded. Bytes are reserved in the in-flight budget as they arrive, never as declared
        (:mod:`services.gateway.budget`), and what they decode to as well."""
        limit = self.settings.max_body_bytes if limit is None else limit
        too_large = f"Request body too large (max {limit} bytes{why})"
        declared = request.content_length
        if declared is not None and declared > limit:
            raise GatewayError(413, too_large)
        chunks: list[bytes] = []
        size = 0
        try:
            async with asyncio.timeout(self.settings.client_timeout):
                async for chunk in request.content.iter_chunked(1 << 16):
                    size += len(chunk)
                    if size > limit:
                        raise GatewayError(413, too_large)
                    reserve(request, size)
                    chunks.append(chunk)
        except TimeoutError:
            raise GatewayError(408, f"Request body not received within {self.settings.client_timeout:g}s") from None
        except web.RequestPayloadError:  # a malformed chunked body
            request.content.feed_eof()  # nothing more to read from this stream: no lingering
            raise GatewayError(400, "Request body could not be read", close=True) from None
        self.metrics.body_bytes.labels(family).observe(size)
        body = b"".join(chunks)
        if encoding := request.headers.get("Content-Encoding"):
            body = decode_content(body, encoding, limit)
            reserve(request, size + len(body))
        return body

    def verify_identity(self, key: ApiKey, user_id: str | None, token: str | None) -> None:
        """403 unless this request may speak for ``user_id`` (see :mod:`identity`)."""
        org = self.registry.org(key.org_id)
        identity.verify_identity(org, key, user_id, token, self.settings.max_user_token_seconds)

    def identity_refusal(self, key: ApiKey, user_ids: list[str | None], token: str | None) -> str | None:
        """Why an event naming ``user_ids`` may not change them, or None."""
        org = self.registry.org(key.org_id)
        return identity.refusal(org, key, user_ids, token, self.settings.max_user_token_seconds)

    def raw_batch(
        self, request: web.Request, family: Family, key: ApiKey, body: bytes, events: list[msgspec.Raw],
        indexes: list[int] | None = None, received_at: float | None = None, sent_at: str | None = None,
        fields: dict[str, msgspec.Raw] | None = None,
    ) -> RawBatch:  # fmt: skip
        """A request's record for the raw topic: its accepted ``events`` (``indexes``: their places
        in the body, which derived message ids are made from; every event by default), the key's
        org, project and env, and the request's batch-level ``fields``."""
        return RawBatch(
            family=family, route=request.path, org_id=key.org_id, project_id=key.project_id, env=key.env,
            received_at=self.clock() if received_at is None else received_at, body_digest=body_digest(body),
            events=events, indexes=list(range(len(events))) if indexes is None else indexes, sent_at=sent_at,
            batch=fields or {},
        )  # fmt: skip

    async def publish(self, batch: RawBatch | None, units: list[str], dead: Sequence[DeadLetter] = ()) -> None:
        """Make the accepted events and the dead letters durable; 503 if Kafka will not.
        ``units`` names each event's unit: the batch goes to its units' partitions."""
        records: list[Record] = [(self.settings.dlq_topic, None, encoder.encode(d)) for d in dead]
        if batch is not None:
            for key, part in split(batch, units, self.settings.raw_partitions):
                records.append((self.settings.raw_topic, key, encoder.encode(part)))
        started = time.perf_counter()
        try:
            await self.sink.send_all(records)
        except SinkUnavailable as exc:
            log.warning("produce failed: %s", exc)
            raise unavailable() from exc
        self.metrics.produce_seconds.observe(time.perf_counter() - started)


GATEWAY = web.AppKey("gateway", Gateway)
RESERVATION = web.RequestKey("reservation", Reservation)


def reserve(request: web.Request, total: int) -> None:
    """Hold ``total`` bytes of this request (as read, and what they decoded to) in the in-flight
    budget; 503 over it."""
    try:
        request[RESERVATION].grow(total)
    except OverBudget:  # counted (sluice_gateway_inflight_refusals_total), not logged: an attack would flood the log
        raise unavailable("Too many requests in flight; retry later") from None


@web.middleware
async def budget_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Each request's share of the in-flight byte budget, given back once it is answered."""
    reservation = request[RESERVATION] = gateway_of(request).budget.reservation()
    try:
        return await handler(request)
    finally:
        reservation.release()


def gateway_of(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def json_text(value: str | None) -> msgspec.Raw:
    """A string as a JSON value (for batch-level fields of a raw record)."""
    return msgspec.Raw(msgspec.json.encode(value))
