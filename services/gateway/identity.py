"""Identity verification (Halo): an HS256 ``user_token`` vouches for a ``user_id``.

With verification on for the org, a non-anonymous ``user_id`` must come with a token signed by
the org's ``ha_secret_…`` whose ``user_id`` claim (or ``sub``, as a fallback) matches, and which
carries an unexpired ``exp`` — Sluice requires ``exp`` so that a leaked token does not vouch
forever. Absent or empty user ids, and ids starting ``anon_``, count as anonymous.
"""

from __future__ import annotations

import jwt

from services.gateway.errors import GatewayError
from sluice.registry import OrgSettings


def is_anonymous(user_id: str | None) -> bool:
    return not user_id or user_id.startswith("anon_")


def verify_identity(org: OrgSettings, user_id: str | None, token: str | None) -> None:
    """Raise a 403 :class:`GatewayError` unless the request may speak for ``user_id``."""
    if not org.identity_verification or is_anonymous(user_id):
        return
    if not token:
        raise GatewayError(403, "Identity verification failed: user_token is required")
    try:
        claims = jwt.decode(token, org.identity_secret, algorithms=["HS256"], options={"require": ["exp"]})
    except jwt.ExpiredSignatureError as exc:
        raise GatewayError(403, "Identity verification failed: user_token has expired") from exc
    except jwt.InvalidTokenError as exc:
        raise GatewayError(403, "Identity verification failed: invalid user_token") from exc
    if str(claims.get("user_id") or claims.get("sub") or "") != user_id:
        raise GatewayError(403, "Identity verification failed: user_token does not match user_id")
