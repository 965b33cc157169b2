"""One error family for all of Shoal.

::

    ShoalError
     ├── SpecError            an app spec (or any user input) is invalid; terminal
     ├── CodecError           a payload could not be decoded into an envelope; terminal
     ├── TopicError           a topic or a name used in a topic is malformed; terminal
     ├── BusError             the broker is unreachable or the connection dropped; retryable
     │    └── RequestTimeout  no reply to a request within its timeout; retryable
     └── RuntimeFailure       the container engine failed an operation; retryable
          └── EngineUnavailable  the engine cannot be reached at all

Foreign errors (aiomqtt, aiodocker, pydantic) are translated at the edge with
``raise ... from``, so callers handle one tree and can ask ``err.retryable``.
"""

from __future__ import annotations


class ShoalError(Exception):
    """Base class of every error Shoal raises on purpose."""

    retryable: bool = False


class SpecError(ShoalError):
    """Invalid user input. ``errors`` holds one human-readable line per problem."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        super().__init__("; ".join(self.errors) or "invalid spec")


class CodecError(ShoalError):
    """A payload that is neither a valid msgpack nor (where allowed) JSON envelope."""


class TopicError(ShoalError):
    """A topic, or a name that must fit in one topic level, is malformed."""


class BusError(ShoalError):
    """The broker cannot be reached or the connection dropped mid-operation."""

    retryable = True


class MessageTooLarge(BusError):
    """A message larger than the broker carries (``max_message``); nothing was sent."""

    retryable = False


class RequestTimeout(BusError):
    """A request got no reply in time."""


class RuntimeFailure(ShoalError):
    """The container engine refused or failed an operation."""

    retryable = True


class EngineUnavailable(RuntimeFailure):
    """The container engine cannot be reached."""
