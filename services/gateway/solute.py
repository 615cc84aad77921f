"""``POST /api/events``: the Solute (Segment-style) family.

Partial success: each event of the batch is checked on its own; valid events are made durable,
invalid ones are reported by index and sent to the dead-letter topic. A batch with no valid
event is a 400 carrying the same per-index report.
"""

from __future__ import annotations

from aiohttp import web

from services.gateway.batches import decode_body, sort_events
from services.gateway.context import gateway_of
from services.gateway.errors import GatewayError, json_response
from sluice.envelope import Family, RawBatch, body_digest
from sluice.wire import solute

FAMILY: Family = "solute"


async def handle(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    key = gateway.authenticate(request, request.headers.get("X-Api-Key"))
    body = await gateway.read_body(request, FAMILY)
    envelope = decode_body(solute.body_decoder, body, "a JSON object with a 'batch' array")
    if not 1 <= len(envelope.batch) <= solute.MAX_EVENTS:
        raise GatewayError(400, f"batch must contain between 1 and {solute.MAX_EVENTS} events")

    received_at = gateway.clock()
    events = sort_events(envelope.batch, solute.event_decoder, solute.check)
    dead = events.dead_letters(envelope.batch, FAMILY, request.path, key, received_at)
    report: dict[str, object] = {"processed": len(events.accepted), "failed": len(events.errors)}
    if events.errors:
        report["errors"] = [{"index": i, "error": reason} for i, reason in events.errors]
    batch = None
    if events.accepted:
        batch = RawBatch(
            family=FAMILY, route=request.path, org_id=key.org_id, project_id=key.project_id,
            env=key.env, received_at=received_at, body_digest=body_digest(body),
            events=events.accepted, indexes=events.indexes, sent_at=envelope.sentAt,
        )  # fmt: skip
    await gateway.publish(batch, dead)
    gateway.metrics.accepted(FAMILY, len(events.accepted))
    gateway.metrics.rejected(FAMILY, "invalid", len(events.errors))
    if batch is None:
        return json_response({"success": False, "error": "No valid events in the batch", **report}, 400)
    return json_response({"success": True, **report})
