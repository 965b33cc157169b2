"""Every key that holds a retained value on a channel, whatever that value is.

A view (``Bus.view``) keeps only values that decode and name their own topic's key; the
others are logged and dropped. The sole writer of a channel must see those too: a value it
did not write (left over, or written by someone else, with any body) is a stray to clear.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.bus import Bus
from core.channels import Channel
from core.codec import Envelope
from core.errors import TopicError

K = TypeVar("K")


async def follow_keys(
    bus: Bus, channel: Channel[Any, K], on_value: Callable[[K], Awaitable[None]]
) -> set[K]:
    """Subscribe to ``channel``; the returned set holds every key with a retained value
    (any envelope counts), and ``on_value(key)`` runs for every value that arrives."""
    keys: set[K] = set()

    async def update(topic: str, env: Envelope | None) -> None:
        try:
            key = channel.parse(bus.prefix, topic)
        except TopicError:
            return
        if env is None:
            keys.discard(key)
            return
        keys.add(key)
        await on_value(key)

    await bus.watch(channel.pattern(bus.prefix), update, qos=channel.qos, allow_json=channel.json)
    return keys
