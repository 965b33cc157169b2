"""Sealing secret values to one key for their trip over the bus.

Both ways: ``shoal secret create`` seals a value to the controller's public key
(``cmd/secret_key``; derived from the controller's secrets key, so every controller of
a store has the same), and the controller seals values to the agent that asks for them.

An agent holds an X25519 key pair, made at start and kept in memory only; it sends the
public half with ``cmd/secret_values``. The controller answers with a one-time X25519
key: both sides derive the same AES-256-GCM key (HKDF-SHA256 over the shared secret and
both public keys), and each value is sealed with a random 96-bit nonce and its
``namespace/name/version`` as associated data. A subscriber to ``#`` (or the broker) sees
only ciphertext; only the agent that asked can open it.
"""

from __future__ import annotations

import base64
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from core.errors import ShoalError

INFO = b"shoal secret delivery v1"
SEED_INFO = b"shoal controller sealing key v1"
NONCE = 12


class SealError(ShoalError):
    """A sealed value that does not open (wrong key, or tampered with)."""


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _unb64(text: str, what: str) -> bytes:
    try:
        return base64.b64decode(text.encode(), validate=True)
    except ValueError as err:
        raise SealError(f"{what} is not base64") from err


def public_text(key: X25519PrivateKey) -> str:
    return _b64(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))


def _public(text: str) -> X25519PublicKey:
    raw = _unb64(text, "the public key")
    try:
        return X25519PublicKey.from_public_bytes(raw)
    except ValueError as err:
        raise SealError("the public key is not an X25519 key") from err


def _derive(mine: X25519PrivateKey, theirs: str, first: str, second: str) -> AESGCM:
    shared = mine.exchange(_public(theirs))
    salt = (first + "|" + second).encode()
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=INFO).derive(shared)
    return AESGCM(key)


def label(namespace: str, name: str, version: int) -> bytes:
    return f"{namespace}/{name}/{version}".encode()


class Sealer:
    """The controller's side of one answer: seals values to ``recipient`` (base64)."""

    def __init__(self, recipient: str) -> None:
        self._key = X25519PrivateKey.generate()
        self.public_key = public_text(self._key)
        self._aead = _derive(self._key, recipient, recipient, self.public_key)

    def seal(self, value: bytes, associated: bytes) -> str:
        nonce = os.urandom(NONCE)
        return _b64(nonce + self._aead.encrypt(nonce, value, associated))


class Opener:
    """A key pair (an agent's, made at start; or the controller's, derived from its
    secrets key): opens what a ``Sealer`` sealed to its public key."""

    def __init__(self, seed: bytes | None = None) -> None:
        if seed is None:
            self._key = X25519PrivateKey.generate()
        else:
            derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=SEED_INFO)
            self._key = X25519PrivateKey.from_private_bytes(derived.derive(seed))
        self.public_key = public_text(self._key)

    def open(self, sender: str, sealed: str, associated: bytes) -> bytes:
        aead = _derive(self._key, sender, self.public_key, sender)
        blob = _unb64(sealed, "a sealed value")
        if len(blob) <= NONCE:
            raise SealError("a sealed value is too short")
        try:
            return aead.decrypt(blob[:NONCE], blob[NONCE:], associated)
        except InvalidTag as err:
            raise SealError("a sealed value does not open with this key") from err
