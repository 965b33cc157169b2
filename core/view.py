"""A retained view: the latest value per key of one retained channel, kept by the bus.

``view = await bus.view(HEALTH, on_change=...)`` subscribes; every message is decoded and
checked against its topic by the bus (``Bus.subscribe``), then lands here: a value
replaces the key's previous one, a deletion removes it, and ``on_change(key, value)``
runs after the view is updated (value None when deleted). A malformed message changes
nothing. Reads are plain mapping reads: ``view.get(key)``, ``key in view``, ``view.items()``.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Generic, TypeVar

from pydantic import BaseModel

from core.channels import Channel

K = TypeVar("K")
M = TypeVar("M", bound=BaseModel)
#: A typed handler: ``(key, value)``; value None when the retained value was deleted.
Handler = Callable[[K, M | None], Awaitable[None] | None]


class View(Mapping[K, M], Generic[K, M]):
    def __init__(self, channel: Channel[M, K], *, on_change: Handler[K, M] | None = None) -> None:
        self.channel = channel
        self._values: dict[K, M] = {}
        self._listeners: list[Handler[K, M]] = [on_change] if on_change is not None else []

    def listen(self, callback: Handler[K, M]) -> None:
        """Also call ``callback(key, value)`` after every change."""
        self._listeners.append(callback)

    async def update(self, key: K, value: M | None) -> None:
        if value is None:
            self._values.pop(key, None)
        else:
            self._values[key] = value
        for listener in self._listeners:
            result = listener(key, value)
            if inspect.isawaitable(result):
                await result

    def __getitem__(self, key: K) -> M:
        return self._values[key]

    def __iter__(self) -> Iterator[K]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)

    def __repr__(self) -> str:
        return f"View({self.channel.path}, {len(self._values)} keys)"
