"""Retained values on ``apps/`` that the leader's store does not hold, and which of them it
may clear.

A view (``Bus.view``) keeps only values that decode and name their own topic's key; the
others are logged and dropped. The sole writer of a channel must see those too: a value it
did not write (left over, or written by someone else, with any body) is a stray.

Clearing is the dangerous part: a controller on an empty or stale store (a second controller
started with a new data dir, a store restored from an old copy) must never clear what the
authoritative store wrote. Every app the store writes is stamped with the store's id and
its write sequence number (``AppState.store_id``, ``store_seq``), so ``may_clear`` allows
clearing only:

- a value that is not an app record for its topic's key at all (garbage, misfiled);
- a record this very store wrote (same id) at or before the store's current sequence
  number: the store has since deleted it (a clear that never reached the broker).

A record of another store, of an older controller that did not stamp, or "from the future"
of this store (a copy taken before it was written) is left alone and logged.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.bus import Bus
from core.channels import APPS, Channel
from core.codec import Envelope
from core.errors import CodecError, TopicError
from core.keys import AppKey
from core.state import AppState

K = TypeVar("K")


async def follow_keys(
    bus: Bus,
    channel: Channel[Any, K],
    on_value: Callable[[K, Envelope], Awaitable[None]],
) -> dict[K, Envelope]:
    """Subscribe to ``channel``; the returned dict holds every key with a retained value
    (any envelope counts) and that value; ``on_value(key, env)`` runs for every value that
    arrives. A paged value's head is passed as it is (its pages are noted, so clearing the
    key clears them too)."""
    values: dict[K, Envelope] = {}

    async def update(topic: str, env: Envelope | None) -> None:
        try:
            key = channel.parse(bus.prefix, topic)
        except TopicError:
            return
        if env is None:
            values.pop(key, None)
            return
        values[key] = env
        if channel.paged:
            bus.note_pages(topic, env)
        await on_value(key, env)

    await bus.watch(channel.pattern(bus.prefix), update, qos=channel.qos, allow_json=channel.json)
    return values


def may_clear(key: AppKey, env: Envelope, store_id: str, store_seq: int) -> bool:
    """May the leader on store ``store_id`` (now at ``store_seq``), which does not hold
    ``key``, clear this retained value of ``apps/<key>``?"""
    if env.kind != APPS.kind:
        return True
    try:
        state = env.open(AppState, lenient=True)
    except CodecError:
        return True
    if state.key != key:
        return True
    return bool(store_id) and state.store_id == store_id and state.store_seq <= store_seq
