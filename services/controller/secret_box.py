"""Secret values at rest: AES-256-GCM under a key file only the controller reads.

Why AES-GCM (``cryptography``'s ``AESGCM``) rather than Fernet: both authenticate, but
GCM takes associated data, so each stored value is bound to its row
(``namespace/name/version``): a ciphertext copied into another secret's row, or another
version's, does not open. Fernet (AES-128-CBC + HMAC) has no associated data and a
timestamp nobody here needs. Each value gets a random 96-bit nonce (at most one value per
``secret create``: far from GCM's 2^32 messages per key).

The key is 32 random bytes, base64 on one line, in ``<data-dir>/secrets.key`` (made with
mode 0600 on first use) or a file the operator gives (``--secrets-key``): controllers on
several machines sharing a PostgreSQL store must be given the same file. The store keeps
a check value sealed under the key (``meta.secrets_key_check``), so a controller holding
another key refuses to touch secrets instead of writing values the others cannot read.
"""

from __future__ import annotations

import base64
import hmac
import os
import stat
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from core.errors import ShoalError
from core.logs import get_logger

NONCE = 12
KEY_BYTES = 32
CHECK = b"shoal secrets key check"
CHECK_LABEL = b"key-check"

log = get_logger("shoal.controller.secrets")


class SecretKeyError(ShoalError):
    """The secrets key is missing, unreadable, malformed or not the store's."""


def row_label(namespace: str, name: str, version: int) -> bytes:
    return f"{namespace}/{name}/{version}".encode()


class SecretBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise SecretKeyError(f"a secrets key is {KEY_BYTES} bytes, got {len(key)}")
        self._key = key
        self._aead = AESGCM(key)

    def seal(self, value: bytes, label: bytes) -> str:
        nonce = os.urandom(NONCE)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, value, label)).decode()

    def open(self, token: str, label: bytes) -> bytes:
        try:
            blob = base64.b64decode(token.encode(), validate=True)
            return self._aead.decrypt(blob[:NONCE], blob[NONCE:], label)
        except (InvalidTag, ValueError) as err:
            raise SecretKeyError(
                "a stored secret does not open with this controller's secrets key: every "
                "controller of a store needs the same key file (--secrets-key)"
            ) from err

    def seed(self) -> bytes:
        """Key material for the controller's sealing key pair (``core/sealing.Opener``):
        derived from this key, so controllers sharing the key share the pair."""
        return hmac.digest(self._key, b"shoal sealing seed", "sha256")

    def check_value(self) -> str:
        return self.seal(CHECK, CHECK_LABEL)

    def opens(self, check: str) -> bool:
        try:
            return self.open(check, CHECK_LABEL) == CHECK
        except SecretKeyError:
            return False


def load_key(path: Path, *, create: bool) -> bytes:
    """The key in ``path``; made (0600, 32 random bytes) if absent and ``create``."""
    if create and not path.exists():
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = os.urandom(KEY_BYTES)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return load_key(path, create=False)  # another controller made it first
        with os.fdopen(fd, "w") as f:
            f.write(base64.b64encode(key).decode() + "\n")
        log.info("made a new secrets key", path=str(path))
        return key
    try:
        mode = path.stat().st_mode
        text = path.read_text().strip()
    except OSError as err:
        raise SecretKeyError(f"cannot read the secrets key {path}: {err.strerror}") from err
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning(
            "the secrets key is readable by others: chmod 600 it", path=str(path), mode=oct(mode)
        )
    try:
        key = base64.b64decode(text.encode(), validate=True)
    except ValueError as err:
        raise SecretKeyError(f"the secrets key {path} is not base64") from err
    if len(key) != KEY_BYTES:
        raise SecretKeyError(f"the secrets key {path} holds {len(key)} bytes, not {KEY_BYTES}")
    return key
