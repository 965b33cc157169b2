"""The wire format: every payload is an envelope, msgpack-encoded.

``{"v": 1, "kind": "...", "id": "<uuid>", "ts": <unix float>, "src": "<service/instance>",
"body": {...}, "reply_to": "<topic>"?, "re": "<request id>"?}``

Command topics also accept the same envelope as JSON, told apart by its first byte
(``{``; a msgpack map never starts with it), so ``mosquitto_pub`` can drive Shoal.
An empty payload is the MQTT convention for "retained value deleted" and decodes to None.

Every topic is writable by someone, so ``decode`` refuses (``CodecError``) a payload larger
than ``MAX_PAYLOAD`` or nested deeper than ``MAX_DEPTH`` before it builds anything from it:
JSON is scanned for its depth before ``json.loads`` (which recurses); msgpack is unpacked by
its C unpacker (a bounded stack of its own, lengths capped by the payload's size) and
checked for depth without recursion before validation.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any, TypeVar

import msgpack
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError

from core import wire_memo
from core.errors import CodecError
from core.logs import get_logger

WIRE_VERSION = 1

#: The largest payload decoded: 4 MiB. The shipped broker carries at most 1 MiB
#: (configs/mosquitto.conf); the largest legitimate messages (an assignment of a node with many
#: distinct specs, an apply of many apps) are a few hundred KiB, a 1 MiB spec about 1 MiB.
MAX_PAYLOAD = 4 * 1024 * 1024
#: The deepest nesting decoded: an envelope's body is a model a few levels deep (an app state
#: with its spec, containers, probes, env is under 12), free-form values add a few more.
MAX_DEPTH = 64

_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_NOT_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")
#: what msgpack and JSON decode nested values into
_CONTAINERS = (dict, list, tuple)

log = get_logger("shoal.codec")

M = TypeVar("M", bound=BaseModel)


class Envelope(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")

    v: int = WIRE_VERSION
    kind: str
    id: str = Field(default_factory=lambda: uuid.uuid4().hex)
    ts: float = Field(default_factory=time.time)
    src: str = ""
    body: dict[str, Any] = Field(default_factory=dict)
    reply_to: str | None = None
    re: str | None = None
    _json: bool = PrivateAttr(default=False)
    _user: str = PrivateAttr(default="")

    @property
    def was_json(self) -> bool:
        """True when this envelope arrived as JSON rather than msgpack."""
        return self._json

    @property
    def user(self) -> str:
        """Who sent this command, as the broker vouches for it: the ``<user>`` level of
        its ``cmd/<name>/<user>`` topic ('' for the bare topic, or any other message).
        Never read from the payload (``src`` is what the sender says about itself)."""
        return self._user

    def from_user(self, user: str) -> Envelope:
        """This envelope, received on ``user``'s command topic."""
        self._user = user
        return self

    def open(self, model: type[M], *, lenient: bool = False) -> M:
        """Validate the body as ``model``; raise ``CodecError`` on mismatch.

        ``lenient`` ignores fields ``model`` does not know, at any depth (a newer peer's
        additions), and says so at debug level; otherwise they are errors.
        """
        context = None if self._json else _WIRE_CONTEXTS[lenient]
        try:
            if not lenient:
                return model.model_validate(self.body, context=context)
            value = model.model_validate(self.body, extra="ignore", context=context)
        except ValidationError as err:
            raise CodecError(f"{self.kind} body is invalid: {err}") from err
        if _debug_enabled():
            unknown = _unknown_fields(model, self.body)
            if unknown:
                log.debug("unknown fields ignored", kind=self.kind, src=self.src, fields=unknown)
        return value

    def open_kind(self) -> BaseModel:
        """Validate the body as the model its ``kind`` names in the contract."""
        from core.channels import kinds

        model = kinds().get(self.kind)
        if model is None:
            raise CodecError(f"unknown message kind {self.kind!r}")
        return self.open(model, lenient=True)


#: Validation contexts of msgpack payloads (``core.wire_memo``), strict and lenient:
#: a value read leniently may have dropped fields a strict read refuses.
_WIRE_CONTEXTS = {
    lenient: {wire_memo.MEMO: wire_memo.DecodeMemo(), wire_memo.WIRE: True}
    for lenient in (False, True)
}


def _debug_enabled() -> bool:
    return bool(log.is_enabled_for(logging.DEBUG))


def _unknown_fields(model: type[BaseModel], body: dict[str, Any]) -> list[str]:
    """Dotted paths of the fields of ``body`` that ``model`` would refuse as unknown."""
    try:
        model.model_validate(body)
    except ValidationError as err:
        return [
            ".".join(str(p) for p in e["loc"])
            for e in err.errors()
            if e["type"] == "extra_forbidden"
        ]
    return []


def make(kind: str, body: BaseModel | dict[str, Any], *, src: str = "", **extra: Any) -> Envelope:
    """An envelope of ``body``; a model with a ``wire_dump()`` (its ``model_dump(mode=
    "json")`` with parts shared between messages, ``core.wire_memo``) is dumped by it."""
    if isinstance(body, BaseModel):
        wire_dump = getattr(type(body), "wire_dump", None)
        data = wire_dump(body) if wire_dump is not None else body.model_dump(mode="json")
    else:
        data = body
    return Envelope(kind=kind, body=data, src=src, **extra)


def encode(envelope: Envelope) -> bytes:
    try:
        packed: bytes = msgpack.packb(
            envelope.model_dump(mode="json", exclude_none=True), use_bin_type=True
        )
    except (OverflowError, TypeError, ValueError) as err:
        raise CodecError(f"{envelope.kind} cannot be encoded: {err}") from err
    return packed


def encode_json(envelope: Envelope) -> bytes:
    return envelope.model_dump_json(exclude_none=True).encode()


def decode(payload: bytes, *, allow_json: bool = True, limit: int = MAX_PAYLOAD) -> Envelope | None:
    """Decode one payload; None for an empty (deleted) retained value. ``limit`` is the
    largest payload taken (a value assembled from pages, ``core.paging``, may be larger)."""
    if not payload:
        return None
    if len(payload) > limit:
        raise CodecError(f"payload of {len(payload)} bytes is larger than {limit}")
    try:
        if payload.lstrip()[:1] == b"{":
            if not allow_json:
                raise CodecError("JSON payloads are accepted on command topics only")
            _check_json_depth(payload)
            raw = json.loads(payload)
        else:
            raw = msgpack.unpackb(payload, raw=False, strict_map_key=False)
            _check_depth(raw)
    except (
        ValueError,
        TypeError,
        RecursionError,
        MemoryError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as err:
        # TypeError: a msgpack map whose key is a list or map (unhashable in Python)
        raise CodecError(f"payload is neither msgpack nor JSON: {err}") from err
    if not isinstance(raw, dict):
        raise CodecError(f"payload must be a map, got {type(raw).__name__}")
    if raw.get("v", WIRE_VERSION) != WIRE_VERSION:
        raise CodecError(f"unsupported wire version {raw.get('v')!r}")
    try:
        env = Envelope.model_validate(raw)
    except ValidationError as err:
        raise CodecError(f"not a Shoal envelope: {err}") from err
    env._json = payload.lstrip()[:1] == b"{"
    return env


def _check_json_depth(payload: bytes) -> None:
    """Refuse JSON nested deeper than ``MAX_DEPTH`` without parsing it (strings skipped)."""
    brackets = _JSON_STRING.sub(b"", payload).translate(None, _JSON_NOT_BRACKET)
    if len(brackets) <= 2 * MAX_DEPTH:
        return  # cannot open more than MAX_DEPTH before closing any
    depth = 0
    for char in brackets:
        if char in b"[{":
            depth += 1
            if depth > MAX_DEPTH:
                raise CodecError(f"payload is nested deeper than {MAX_DEPTH}")
        else:
            depth -= 1


def _check_depth(value: object) -> None:
    """Refuse a decoded value nested deeper than ``MAX_DEPTH`` (level by level: no
    recursion; a comprehension per level, several times faster than a stack of items).

    Only containers are visited (a map's keys are never containers: msgpack's arrays are
    lists, unhashable, and a map key that is one fails to decode)."""
    if type(value) not in _CONTAINERS:
        return
    level: list[Any] = [value]
    for _ in range(MAX_DEPTH):
        level = [
            child
            for item in level
            for child in (item.values() if type(item) is dict else item)
            if type(child) in _CONTAINERS
        ]
        if not level:
            return
    raise CodecError(f"payload is nested deeper than {MAX_DEPTH}")
