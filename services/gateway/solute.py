"""``POST /api/events``: the Solute (Segment-style) family.

Partial success: each event of the batch is checked on its own; valid events are made durable,
invalid ones are reported by index and sent to the dead-letter topic. A batch with no valid
event is a 400 carrying the same per-index report.
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from services.gateway.context import gateway_of
from services.gateway.errors import GatewayError, json_response
from sluice.envelope import DeadLetter, RawBatch, body_digest
from sluice.wire import solute


async def handle(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    key = gateway.authenticate(request.headers.get("X-Api-Key"))
    body = await gateway.read_body(request)
    try:
        envelope = solute.body_decoder.decode(body)
    except msgspec.ValidationError as exc:
        raise GatewayError(400, f"Invalid request body: {exc}") from exc
    except msgspec.DecodeError as exc:
        raise GatewayError(400, "Request body must be a JSON object with a 'batch' array") from exc
    if not 1 <= len(envelope.batch) <= solute.MAX_EVENTS:
        raise GatewayError(400, f"batch must contain between 1 and {solute.MAX_EVENTS} events")

    received_at = gateway.clock()
    accepted: list[msgspec.Raw] = []
    indexes: list[int] = []
    errors: list[dict[str, object]] = []
    dead: list[DeadLetter] = []
    for index, raw in enumerate(envelope.batch):
        try:
            reason = solute.check(solute.event_decoder.decode(raw))
        except msgspec.ValidationError as exc:
            reason = str(exc)
        if reason is None:
            accepted.append(raw)
            indexes.append(index)
        else:
            errors.append({"index": index, "error": reason})
            dead.append(DeadLetter(
                family="solute", route=request.path, org_id=key.org_id, reason=reason,
                received_at=received_at, payload=raw, index=index,
            ))  # fmt: skip

    report: dict[str, object] = {"processed": len(accepted), "failed": len(errors)}
    if errors:
        report["errors"] = errors
    if not accepted:
        await gateway.publish(None, dead)
        return json_response({"success": False, **report}, 400)

    batch = RawBatch(
        family="solute", route=request.path, org_id=key.org_id, project_id=key.project_id,
        env=key.env, received_at=received_at, body_digest=body_digest(body),
        events=accepted, indexes=indexes, sent_at=envelope.sentAt,
    )  # fmt: skip
    await gateway.publish(batch, dead)
    return json_response({"success": True, **report})
