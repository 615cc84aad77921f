"""API keys and org settings, kept in a compacted Kafka topic (``{prefix}registry``).

Why a topic: every gateway replica already talks to Kafka, so tailing one small compacted topic
gives each replica the full, current set of keys without another datastore, and a new or revoked
key reaches all of them within one fetch wait (well under the 2 s the design asks for).

Keys are stored as sha256 digests only. An API key is 32 random bytes or more, so a fast hash is
enough (no password stretching needed) and the digest is what a lookup compares, with
:func:`hmac.compare_digest`. The plaintext key exists once: on the stdout of ``keys create``.
Org identity secrets (``ha_secret_…``) are HS256 signing keys and cannot be hashed; with
``SLUICE_REGISTRY_KEY`` set they are stored sealed (envelope encryption, :mod:`sluice.sealing`),
so the topic alone does not give them away. A sealed secret that does not open leaves its org
with verification on and no secret: requests that need a token are refused (fail closed). A
secret read in plaintext while a registry key is set (written before the key was, or by a tool
without it) still works, but is logged and counted (``plaintext_secrets``): it has been readable
in the topic, so rotate it (``sluice orgs set ORG --rotate-identity-secret``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Iterable
from typing import Literal

import msgspec

from sluice.configs import KINDS as CONFIG_KINDS
from sluice.configs import ConfigStore
from sluice.sealing import Sealed, Sealer, SealError

KeyKind = Literal["publishable", "secret"]
log = logging.getLogger("sluice.registry")

DEFAULT_PREFIX: dict[KeyKind, str] = {"publishable": "pk_", "secret": "sk_"}
SDK_PREFIX = {"segment": "wk_", "posthog": "phc_"}
"""Prefixes of the keys ``keys create --sdk`` makes: Segment write keys, PostHog project tokens
(``phc_``, as posthog-js expects; PostHog's personal keys, ``phx_``, are refused by the gateway)."""
PREFIX_PATTERN = re.compile(r"^[a-z][a-z0-9_]{0,30}_$")


class ApiKey(msgspec.Struct, kw_only=True, omit_defaults=True):
    digest: str
    """sha256 hex of the whole key; the key itself is never stored."""
    hint: str
    """The prefix and first characters, to tell keys apart in listings."""
    org_id: str
    project_id: str = "default"
    env: str = "production"
    kind: KeyKind = "publishable"
    scopes: list[str] = []
    created_at: float = 0.0
    expires_at: float | None = None
    revoked: bool = False
    allowed_origins: list[str] = []

    def usable(self, now: float) -> bool:
        return not self.revoked and (self.expires_at is None or now < self.expires_at)


class OrgSettings(msgspec.Struct, kw_only=True, omit_defaults=True):
    org_id: str
    identity_verification: bool = False
    identity_secret: str = ""
    """In plaintext only where no registry key is configured (and, in memory, once unsealed)."""
    identity_secret_sealed: Sealed | None = None


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key(
    org_id: str,
    kind: KeyKind,
    *,
    prefix: str | None = None,
    project_id: str = "default",
    env: str = "production",
    scopes: Iterable[str] = (),
    expires_in: float | None = None,
    allowed_origins: Iterable[str] = (),
    now: float | None = None,
) -> tuple[str, ApiKey]:
    """Make a fresh key; returns the plaintext (show it once) and the record to store."""
    prefix = prefix or DEFAULT_PREFIX[kind]
    if not PREFIX_PATTERN.match(prefix):
        raise ValueError(f"key prefix must look like 'pk_' or 'ab_live_', not {prefix!r}")
    key = prefix + secrets.token_urlsafe(32)
    created = time.time() if now is None else now
    record = ApiKey(
        digest=hash_key(key),
        hint=key[: len(prefix) + 4] + "…",
        org_id=org_id,
        project_id=project_id,
        env=env,
        kind=kind,
        scopes=sorted(set(scopes)),
        created_at=created,
        expires_at=None if expires_in is None else created + expires_in,
        allowed_origins=list(allowed_origins),
    )
    return key, record


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``15m``, ``90s`` → seconds."""
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match:
        raise ValueError(f"duration must look like 30d, 12h, 15m or 90s, not {text!r}")
    return int(match[1]) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


_key_decoder = msgspec.json.Decoder(ApiKey)
_org_decoder = msgspec.json.Decoder(OrgSettings)


class Registry:
    """The in-memory view of the registry topic: keys by digest, org settings by id (their
    identity secrets unsealed with ``sealer``)."""

    def __init__(self, sealer: Sealer | None = None) -> None:
        self.keys: dict[str, ApiKey] = {}
        self.orgs: dict[str, OrgSettings] = {}
        self.configs = ConfigStore()
        """SDK configuration (``sluice config put``, ``sluice experiments put``): same topic."""
        self.sealer = sealer
        self.plaintext_secrets = 0
        """Org records read with a plaintext identity secret although a registry key is set."""

    def apply(self, key: bytes, value: bytes | None) -> None:
        kind, _, ident = key.decode().partition(":")
        if kind == "key":
            if value is None:
                self.keys.pop(ident, None)
            else:
                self.keys[ident] = _key_decoder.decode(value)
        elif kind == "org":
            if value is None:
                self.orgs.pop(ident, None)
            else:
                self.orgs[ident] = self._unsealed(_org_decoder.decode(value))
        elif kind in CONFIG_KINDS:
            self.configs.apply(kind, ident, value)

    def _unsealed(self, org: OrgSettings) -> OrgSettings:
        if org.identity_secret_sealed is None:
            if org.identity_secret and self.sealer is not None:
                self.plaintext_secrets += 1
                log.warning(
                    "org %s: its identity secret is stored in plaintext although SLUICE_REGISTRY_KEY is set; "
                    "rotate it: sluice orgs set %s --rotate-identity-secret", org.org_id, org.org_id,
                )  # fmt: skip
            return org
        try:
            if self.sealer is None:
                raise SealError("SLUICE_REGISTRY_KEY is not set")
            org.identity_secret = self.sealer.open(org.identity_secret_sealed, org.org_id)
        except SealError as exc:
            log.error("org %s: its identity secret does not open: %s", org.org_id, exc)
        return org

    def authenticate(self, presented: str, now: float | None = None) -> ApiKey | None:
        """The usable key record for a presented key, else None (unknown, revoked, expired)."""
        digest = hash_key(presented)
        record = self.keys.get(digest)
        if record is None or not hmac.compare_digest(record.digest, digest):
            return None
        return record if record.usable(time.time() if now is None else now) else None

    def org(self, org_id: str) -> OrgSettings:
        return self.orgs.get(org_id) or OrgSettings(org_id=org_id)


def key_record(record: ApiKey) -> tuple[bytes, bytes]:
    return f"key:{record.digest}".encode(), msgspec.json.encode(record)


def new_identity_secret() -> str:
    """A fresh org identity secret (the HS256 key that signs its users' tokens), shown once."""
    return "ha_secret_" + secrets.token_urlsafe(32)


def org_record(org: OrgSettings, sealer: Sealer | None = None) -> tuple[bytes, bytes]:
    """The record of ``org``; with a ``sealer``, its identity secret sealed and not in plaintext."""
    if sealer is not None and org.identity_secret:
        sealed = sealer.seal(org.identity_secret, org.org_id)
        org = msgspec.structs.replace(org, identity_secret="", identity_secret_sealed=sealed)
    return f"org:{org.org_id}".encode(), msgspec.json.encode(org)
