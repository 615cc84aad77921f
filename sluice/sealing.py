"""Envelope encryption of secrets kept in the registry topic (the orgs' identity secrets).

Each secret is encrypted (AES-256-GCM) under a fresh data key; the data key is encrypted
("wrapped") under a master key that lives outside Kafka — ``SLUICE_REGISTRY_KEY``, from a
Kubernetes Secret — and travels with the ciphertext. Whoever reads the topic without the master
key learns nothing; the org id is bound to both layers as associated data, so a sealed secret
copied into another org's record does not open. Several master keys (comma-separated) allow
rotation: the first seals, any opens; ``kid`` says which one wrapped a record.
"""

from __future__ import annotations

import base64
import hashlib
import os

import msgspec
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE_BYTES = 12


class Sealed(msgspec.Struct, kw_only=True):
    kid: str
    """The master key's id: the first 16 hex digits of its sha256."""
    wrapped_key: str
    """nonce + AES-GCM(master key, data key), base64."""
    ciphertext: str
    """nonce + AES-GCM(data key, secret), base64."""


class SealError(ValueError):
    """The master key is missing, unknown or wrong, or the record was tampered with."""


def new_master_key() -> str:
    """A fresh master key, as ``SLUICE_REGISTRY_KEY`` takes it."""
    return base64.b64encode(AESGCM.generate_key(bit_length=256)).decode()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _encrypt(key: bytes, plaintext: bytes, associated: bytes) -> str:
    nonce = os.urandom(NONCE_BYTES)
    return _b64(nonce + AESGCM(key).encrypt(nonce, plaintext, associated))


def _decrypt(key: bytes, sealed: str, associated: bytes) -> bytes:
    raw = base64.b64decode(sealed)
    return AESGCM(key).decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated)


class Sealer:
    def __init__(self, master_keys: str) -> None:
        """``master_keys``: base64 256-bit keys, comma-separated; the first one seals."""
        self._keys: dict[str, bytes] = {}
        self._current = ""
        for text in filter(None, (k.strip() for k in master_keys.split(","))):
            key = base64.b64decode(text, validate=True)
            if len(key) != 32:
                raise ValueError("SLUICE_REGISTRY_KEY must hold base64 256-bit keys")
            kid = hashlib.sha256(key).hexdigest()[:16]
            self._keys[kid] = key
            self._current = self._current or kid
        if not self._keys:
            raise ValueError("no master key given")

    def seal(self, secret: str, context: str) -> Sealed:
        data_key = AESGCM.generate_key(bit_length=256)
        associated = context.encode()
        return Sealed(
            kid=self._current,
            wrapped_key=_encrypt(self._keys[self._current], data_key, associated),
            ciphertext=_encrypt(data_key, secret.encode(), associated),
        )

    def open(self, sealed: Sealed, context: str) -> str:
        key = self._keys.get(sealed.kid)
        if key is None:
            raise SealError(f"no master key with id {sealed.kid}")
        associated = context.encode()
        try:
            data_key = _decrypt(key, sealed.wrapped_key, associated)
            return _decrypt(data_key, sealed.ciphertext, associated).decode()
        except (InvalidTag, ValueError) as exc:
            raise SealError(f"sealed secret does not open ({type(exc).__name__})") from None


def sealer_from(master_keys: str) -> Sealer | None:
    return Sealer(master_keys) if master_keys else None
