"""``POST /api/events``: the Solute (Segment-style) family.

Partial success: each event of the batch is checked on its own; valid events are made durable,
invalid ones are reported by index and sent to the dead-letter topic. A batch with no valid
event is a 400 carrying the same per-index report.

Identity verification: where the org has it on, an identify, group or alias event from a
publishable key is refused unless its ``userToken`` proves the user it names. A refused event is
reported by index like an invalid one but is not a dead letter (a replay would skip the check);
a batch of which nothing was kept because of refusals alone is a 403.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from services.gateway.batches import Sorted, decode_body, sort_events
from services.gateway.context import gateway_of
from services.gateway.errors import GatewayError, json_response
from services.gateway.identity import FAILED
from sluice.envelope import Family
from sluice.wire import solute

FAMILY: Family = "solute"
TOKEN_FIELD = b'"userToken"'


async def handle(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    key = gateway.authenticate(request, request.headers.get("X-Api-Key"))
    body = await gateway.read_body(request, FAMILY)
    envelope = decode_body(solute.body_decoder, body, "a JSON object with a 'batch' array")
    if not 1 <= len(envelope.batch) <= solute.MAX_EVENTS:
        raise GatewayError(400, f"batch must contain between 1 and {solute.MAX_EVENTS} events")

    def check(event: solute.SoluteEvent) -> str | None:
        return solute.check(event) or gateway.identity_refusal(key, solute.named_users(event), event.userToken)

    received_at = gateway.clock()
    events = sort_events(envelope.batch, solute.event_decoder, check, solute.unit_of)
    invalid = [(i, reason) for i, reason in events.errors if not reason.startswith(FAILED)]
    raws = _without_tokens(envelope.batch, body)  # dead letters are read by analysts: no credentials
    dead = Sorted([], [], invalid).dead_letters(raws, FAMILY, request.path, key, received_at)
    report: dict[str, object] = {"processed": len(events.accepted), "failed": len(events.errors)}
    if events.errors:
        report["errors"] = [{"index": i, "error": reason} for i, reason in events.errors]
    batch = None
    if events.accepted:
        batch = gateway.raw_batch(
            request, FAMILY, key, body, [raws[i] for i in events.indexes], events.indexes, received_at, envelope.sentAt
        )
    await gateway.publish(batch, events.units, dead)
    gateway.metrics.accepted(FAMILY, len(events.accepted))
    gateway.metrics.rejected(FAMILY, "invalid", len(invalid))
    gateway.metrics.rejected(FAMILY, "unverified", len(events.errors) - len(invalid))
    if batch is None:
        if not invalid:
            return json_response({"success": False, "error": events.errors[0][1], **report}, 403)
        return json_response({"success": False, "error": "No valid events in the batch", **report}, 400)
    return json_response({"success": True, **report})


def _without_tokens(events: list[msgspec.Raw], body: bytes) -> list[msgspec.Raw]:
    """The events as sent, less their ``userToken`` (a credential) where they have one."""
    if TOKEN_FIELD not in body:
        return events
    out = []
    for event in events:
        try:
            fields = msgspec.json.decode(event)
        except RecursionError:  # nests too deeply to be an event: it is a dead letter, kept as sent
            fields = None
        if isinstance(fields, dict) and fields.pop("userToken", None) is not None:
            event = msgspec.Raw(msgspec.json.encode(fields))
        out.append(event)
    return out
