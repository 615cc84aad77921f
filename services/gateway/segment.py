"""Segment's HTTP Tracking API: ``POST /v1/{track,identify,page,screen,group,alias}``, the batch
routes ``/v1/batch`` and ``/v1/import``, and analytics.js's short paths ``/v1/{t,i,p,s,g,a,b}``
(whose bodies come as ``text/plain``).

The write key comes as HTTP Basic's user name (empty password), or as ``writeKey`` in the body;
the official clients send both. A ``writeKey`` is taken out of every event forwarded or
dead-lettered (keys are never stored). As Segment does, the answer is 400 only for a body that is not
JSON or is too large (32 KB a call and a batch's event, 500 KB a batch, 2,500 events), and 200
``{"success": true}`` otherwise: an event Segment would drop (no ``userId`` nor ``anonymousId``,
a track without ``event``) becomes a dead letter with the reason. Bodies may be gzip-encoded
(``Content-Encoding``; read by ``Gateway.read_body``).

Identity verification: where the org has it on, an identify, group or alias naming an identified
user from a publishable write key is refused (Segment's events carry no proof), and dropped rather
than dead-lettered (a replay would skip the check); use a secret write key on servers. A request
of which nothing was kept for that reason alone is a 403.
"""

from __future__ import annotations

import base64
import binascii

import msgspec
from aiohttp import web

from services.gateway.batches import Sorted, decode_body, sort_events
from services.gateway.context import gateway_of
from services.gateway.errors import GatewayError, json_response
from services.gateway.identity import FAILED, needs_proof
from sluice.envelope import Family
from sluice.wire import segment
from sluice.wire.halo import NULL, is_object

FAMILY: Family = "segment"
SUCCESS = msgspec.json.encode({"success": True})


def basic_user(authorization: str | None) -> str | None:
    """The user name of ``Authorization: Basic …`` (the write key), else None."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(credentials.strip(), validate=True).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise GatewayError(401, "Malformed Basic credentials") from None
    return decoded.partition(":")[0] or None


async def handle(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    route = request.path
    batched = route.rstrip("/").rsplit("/", 1)[-1] in segment.BATCHES
    presented = basic_user(request.headers.get("Authorization"))
    key = gateway.authenticate(request, presented) if presented else None
    body = await gateway.read_body(request, FAMILY)
    limit = segment.BATCH_LIMIT if batched else segment.CALL_LIMIT
    if len(body) > limit:
        raise GatewayError(400, f"Request body too large (max {limit} bytes)")
    fields: dict[str, msgspec.Raw] = {}
    if batched:
        envelope = decode_body(segment.batch_decoder, body, "a JSON object with a 'batch' array")
        raws, write_key, sent_at = envelope.batch, envelope.writeKey, envelope.sentAt
        if len(raws) > segment.MAX_EVENTS:
            raise GatewayError(400, f"A batch holds at most {segment.MAX_EVENTS} events")
        if any(len(raw) > segment.CALL_LIMIT for raw in raws):
            raise GatewayError(400, f"An event of a batch is over {segment.CALL_LIMIT} bytes")
        for name, value in (("context", envelope.context), ("integrations", envelope.integrations)):
            if not is_object(value):
                raise GatewayError(400, f"Invalid request body: batch-level {name} must be an object")
            if value != NULL:
                fields[name] = value
    else:
        call = decode_body(segment.call_decoder, body, "a JSON object")
        raws, write_key, sent_at = [msgspec.Raw(body)], call.writeKey, call.sentAt
    if key is None:
        key = gateway.authenticate(request, write_key)
    proving = needs_proof(gateway.registry.org(key.org_id), key)

    def check(event: segment.SegmentEvent) -> str | None:
        kind = segment.kind_of(route, event)
        if proving and kind is not None:
            refused = gateway.identity_refusal(key, segment.named_users(event, kind), None)
            if refused:
                return refused
        return segment.check(event, kind)

    received_at = gateway.clock()
    events = sort_events(raws, segment.event_decoder, check, segment.unit_of, _forwarded)
    invalid = [(i, reason) for i, reason in events.errors if not reason.startswith(FAILED)]
    letters = list(raws)
    for index, _ in invalid:  # dead letters are read by analysts: no keys
        letters[index] = _without_key(letters[index])
    dead = Sorted([], [], invalid).dead_letters(letters, FAMILY, route, key, received_at)
    batch = None
    if events.accepted:
        batch = gateway.raw_batch(
            request, FAMILY, key, body, events.accepted, events.indexes, received_at, sent_at, fields
        )
    await gateway.publish(batch, events.units, dead)
    gateway.metrics.accepted(FAMILY, len(events.accepted))
    gateway.metrics.rejected(FAMILY, "invalid", len(invalid))
    gateway.metrics.rejected(FAMILY, "unverified", len(events.errors) - len(invalid))
    if batch is None and events.errors and not invalid:
        return json_response({"success": False, "error": events.errors[0][1]}, 403)
    return web.Response(body=SUCCESS, content_type="application/json")


def _forwarded(event: segment.SegmentEvent, raw: msgspec.Raw) -> msgspec.Raw:
    """An accepted event as forwarded: as sent, less its ``writeKey`` (analytics.js puts the key in
    each call's body; a key is never stored)."""
    return raw if event.writeKey is None else _without_key(raw)


def _without_key(raw: msgspec.Raw) -> msgspec.Raw:
    try:
        fields = msgspec.json.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return raw
    if isinstance(fields, dict) and fields.pop("writeKey", None) is not None:
        return msgspec.Raw(msgspec.json.encode(fields))
    return raw
