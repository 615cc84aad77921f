"""``/api/sdk/events``, ``/api/sdk/users/identify``, ``/api/sdk/companies/identify`` (Halo).

All-or-nothing: an invalid event fails the request with 400 and nothing of it is kept. Only
publishable keys (``Authorization: Bearer ab_live_…``). ``user_token`` is verified here when the
org has identity verification on, and is never forwarded.
"""

from __future__ import annotations

from typing import Any

import msgspec
from aiohttp import web

from services.gateway.batches import decode_body, sort_events
from services.gateway.context import PUBLISHABLE, Gateway, bearer, gateway_of, json_text
from services.gateway.errors import GatewayError, json_response
from services.gateway.identity import without_token
from sluice.envelope import Family
from sluice.registry import ApiKey
from sluice.wire import halo

FAMILY: Family = "halo"
SUCCESS = {"success": True}


async def _start(request: web.Request) -> tuple[Gateway, ApiKey, bytes]:
    gateway = gateway_of(request)
    key = gateway.authenticate(request, bearer(request), kinds=PUBLISHABLE)
    return gateway, key, await gateway.read_body(request, FAMILY)


async def events(request: web.Request) -> web.Response:
    gateway, key, body = await _start(request)
    envelope = decode_body(halo.events_decoder, body, "a JSON object with an 'events' array")
    gateway.verify_identity(key, envelope.user_id, envelope.user_token)  # first: a refusal is a 403, whatever else
    if not 1 <= len(envelope.events) <= halo.MAX_EVENTS:
        raise GatewayError(400, f"events must contain between 1 and {halo.MAX_EVENTS} events")
    checked = sort_events(envelope.events, halo.event_decoder, halo.check_event)
    if checked.errors:
        index, reason = checked.errors[0]
        gateway.metrics.rejected(FAMILY, "invalid", len(envelope.events))
        raise GatewayError(400, f"events[{index}]: {reason}")
    fields = {"user_id": json_text(envelope.user_id), "session_id": json_text(envelope.session_id)}
    units = [halo.unit_of(envelope.user_id, envelope.session_id)] * len(envelope.events)
    await gateway.publish(gateway.raw_batch(request, FAMILY, key, body, envelope.events, fields=fields), units)
    gateway.metrics.accepted(FAMILY, len(envelope.events))
    return json_response(SUCCESS)


async def identify_user(request: web.Request) -> web.Response:
    return await _identify(request, halo.user_decoder, "user_id", halo.MAX_USER_PAYLOAD_BYTES)


async def identify_company(request: web.Request) -> web.Response:
    return await _identify(request, halo.company_decoder, "company_id", halo.MAX_COMPANY_PAYLOAD_BYTES)


async def _identify(
    request: web.Request,
    decoder: msgspec.json.Decoder[Any],
    id_field: str,
    limit: int,
) -> web.Response:
    """One record holding the payload as sent (less the token); a company identify that names a
    user is held to identity verification like a user identify."""
    gateway, key, body = await _start(request)
    payload: halo.UserIdentifyBody | halo.CompanyIdentifyBody = decode_body(
        decoder, body, f"a JSON object with a '{id_field}'"
    )
    gateway.verify_identity(key, payload.user_id, payload.user_token)  # first: a refusal is a 403, whatever else
    if not getattr(payload, id_field):
        raise GatewayError(400, f"{id_field} must not be empty")
    _check_traits(payload.traits, payload.context, limit)
    await gateway.publish(
        gateway.raw_batch(request, FAMILY, key, body, [without_token(body, "user_token")]), [payload.user_id or ""]
    )
    gateway.metrics.accepted(FAMILY, 1)
    return json_response(SUCCESS)


def _check_traits(traits: msgspec.Raw, context: msgspec.Raw, limit: int) -> None:
    if not (halo.is_object(traits) and halo.is_object(context)):
        raise GatewayError(400, "traits and context must be objects")
    if halo.payload_size(traits, context) > limit:
        raise GatewayError(400, f"traits and context exceed {limit} bytes")
