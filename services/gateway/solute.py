"""``POST /api/events``: the Solute (Segment-style) family.

Partial success: each event of the batch is checked on its own; valid events are made durable,
invalid ones are reported by index and sent to the dead-letter topic. A batch with no valid
event is a 400 carrying the same per-index report.

Identity verification: where the org has it on, an identify, group or alias event from a
publishable key is refused unless its ``userToken`` proves the user it names. A refused event is
reported by index like an invalid one but is not a dead letter (a replay would skip the check);
a batch of which nothing was kept because of refusals alone is a 403. Identity is checked before
anything else about an event, and an event that does not even decode is read loosely for the
users it names: an identity-changing event is never dead-lettered unproven, whatever else is wrong
with it (``sluice dlq replay`` would otherwise apply it later without any check).

``userToken`` is a credential: it is taken out of every event the gateway forwards or
dead-letters, from the decoded event (any spelling of the name JSON allows, escapes included).
"""

from __future__ import annotations

import msgspec
from aiohttp import web

from services.gateway.batches import Sorted, decode_body, sort_events
from services.gateway.context import Gateway, gateway_of
from services.gateway.errors import GatewayError, json_response
from services.gateway.identity import FAILED, loose_fields, needs_proof, without_token
from sluice.envelope import Family
from sluice.registry import ApiKey
from sluice.wire import solute

FAMILY: Family = "solute"
TOKEN = "userToken"
UNCHANGING = ("track", "page")
"""The event types that change no user (``solute.named_users`` names nobody for them)."""


async def handle(request: web.Request) -> web.Response:
    gateway = gateway_of(request)
    key = gateway.authenticate(request, request.headers.get("X-Api-Key"))
    body = await gateway.read_body(request, FAMILY)
    envelope = decode_body(solute.body_decoder, body, "a JSON object with a 'batch' array")
    if not 1 <= len(envelope.batch) <= solute.MAX_EVENTS:
        raise GatewayError(400, f"batch must contain between 1 and {solute.MAX_EVENTS} events")
    proving = needs_proof(gateway.registry.org(key.org_id), key)

    def check(event: solute.SoluteEvent) -> str | None:
        if proving and (refused := gateway.identity_refusal(key, solute.named_users(event), event.userToken)):
            return refused
        return solute.check(event)

    received_at = gateway.clock()
    events = sort_events(envelope.batch, solute.event_decoder, check, solute.unit_of, _forwarded)
    if proving:  # events that did not decode were not checked: read them loosely for the users they name
        events.errors = [
            (i, why if why.startswith(FAILED) else _loose_refusal(gateway, key, envelope.batch[i]) or why)
            for i, why in events.errors
        ]
    invalid = [(i, reason) for i, reason in events.errors if not reason.startswith(FAILED)]
    raws = list(envelope.batch)
    for index, _ in invalid:  # dead letters are read by analysts: no credentials
        raws[index] = without_token(raws[index], TOKEN)
    dead = Sorted([], [], invalid).dead_letters(raws, FAMILY, request.path, key, received_at)
    report: dict[str, object] = {"processed": len(events.accepted), "failed": len(events.errors)}
    if events.errors:
        report["errors"] = [{"index": i, "error": reason} for i, reason in events.errors]
    batch = None
    if events.accepted:
        batch = gateway.raw_batch(
            request, FAMILY, key, body, events.accepted, events.indexes, received_at, envelope.sentAt
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


def _forwarded(event: solute.SoluteEvent, raw: msgspec.Raw) -> msgspec.Raw:
    """An accepted event as forwarded: as sent, less its token (decoded again only if it has one)."""
    return raw if event.userToken is None else without_token(raw, TOKEN)


def _loose_refusal(gateway: Gateway, key: ApiKey, raw: msgspec.Raw) -> str | None:
    """Why an event that failed its checks may not change the users it names, read from its JSON
    whatever its types: one that is not plainly a track or page names its ``userId`` (and, unless
    it is an identify or group, its ``previousId``), and must prove them like a valid one."""
    fields = loose_fields(raw)
    if not isinstance(fields, dict) or fields.get("type") in UNCHANGING:
        return None
    names = ("userId",) if fields.get("type") in ("identify", "group") else ("userId", "previousId")
    users = [None if fields.get(n) is None else str(fields[n]) for n in names]
    token = fields.get(TOKEN)
    return gateway.identity_refusal(key, users, token if isinstance(token, str) else None)
