"""Identity verification: an HS256 ``user_token`` (Halo's) vouches for a ``user_id``.

With verification on for the org, a publishable key may speak for a non-anonymous user only with
a token signed by the org's ``ha_secret_…`` whose ``user_id`` claim (or ``sub``, as a fallback)
matches, and which carries an unexpired ``exp`` no further out than the configured maximum
lifetime — Sluice requires ``exp`` so that a leaked token does not vouch forever. Absent or empty
user ids, and ids starting ``anon_``, count as anonymous. Secret keys live on servers and are
trusted to speak for any user of their org. Which events need a token on each route:
``docs/security.md``.

PyJWT checks ``exp`` against the wall clock, so the lifetime check does too.

Tokens are credentials: :func:`without_token` takes them out of what the gateway forwards or
dead-letters, from the decoded JSON (so any spelling JSON allows, ``"user\\u0054oken"`` too).
"""

from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

import jwt
import msgspec

from services.gateway.errors import GatewayError
from sluice.registry import ApiKey, OrgSettings

log = logging.getLogger("sluice.gateway")
FAILED = "Identity verification failed: "


def is_anonymous(user_id: str | None) -> bool:
    return not user_id or user_id.startswith("anon_")


def needs_proof(org: OrgSettings, key: ApiKey) -> bool:
    """Whether requests of this key must prove the users they name."""
    return org.identity_verification and key.kind != "secret"


def verify_identity(org: OrgSettings, key: ApiKey, user_id: str | None, token: str | None, max_lifetime: float) -> None:
    """Raise a 403 :class:`GatewayError` unless the request may speak for ``user_id``."""
    if not needs_proof(org, key) or is_anonymous(user_id):
        return
    if not token:
        raise GatewayError(403, FAILED + "user_token is required")
    if not org.identity_secret:  # verification on without a secret: an operator's mistake
        log.error("identity verification is on for org %s but it has no identity secret", org.org_id)
        raise GatewayError(403, FAILED + "identity verification is not configured for this org")
    try:
        claims = jwt.decode(token, org.identity_secret, algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError as exc:
        raise GatewayError(403, FAILED + "user_token has expired") from exc
    except jwt.PyJWTError as exc:
        raise GatewayError(403, FAILED + "invalid user_token") from exc
    if not isinstance(claims["exp"], int | float) or claims["exp"] - time.time() > max_lifetime:
        raise GatewayError(403, FAILED + f"user_token must expire within {max_lifetime:g}s")
    if str(claims.get("user_id") or claims.get("sub") or "") != user_id:
        raise GatewayError(403, FAILED + "user_token does not match user_id")


def refusal(
    org: OrgSettings, key: ApiKey, user_ids: list[str | None], token: str | None, max_lifetime: float
) -> str | None:
    """Why an event naming ``user_ids`` is refused, or None. One token proves one user, so an event
    that names two identified users (an alias between them) is refused to publishable keys."""
    named = {u for u in user_ids if not is_anonymous(u)}
    if not needs_proof(org, key) or not named:
        return None
    if len(named) > 1:
        return FAILED + "a publishable key cannot link two identified users"
    try:
        verify_identity(org, key, named.pop(), token, max_lifetime)
    except GatewayError as exc:
        return exc.message
    return None


# Any JSON the gateway accepted decodes, numbers as sent (1e400 too, which a float cannot hold),
# and encodes back the same but for the field taken out.
_loose_decoder = msgspec.json.Decoder(float_hook=Decimal)
_loose_encoder = msgspec.json.Encoder(decimal_format="number")


def loose_fields(raw: bytes) -> Any:
    """``raw`` as plain JSON values (None if it does not decode: not in practice, as the envelope
    holding it did)."""
    try:
        return _loose_decoder.decode(raw)
    except (msgspec.DecodeError, RecursionError):
        return None


def without_token(raw: bytes, field: str) -> msgspec.Raw:
    """The object ``raw`` less its ``field`` (a credential); unchanged if it has none."""
    fields = loose_fields(raw)
    if isinstance(fields, dict) and field in fields:
        del fields[field]
        return msgspec.Raw(_loose_encoder.encode(fields))
    return msgspec.Raw(raw)
