"""The reconcile runner: one place for dirty keys, retries, backoff and resync.

Messages are hints. A handler only ``mark``s a key dirty; the runner calls
``reconcile(key)``, which re-reads current state and converges. Marks of a key that is
already queued collapse into one; a key is never reconciled twice at once. A failing
key is retried with its own backoff; ``reconcile`` may also return a delay to be called
again (requeue-after). Every ``resync`` seconds all keys from ``keys()`` are marked, so
a lost message is repaired in bounded time.

Errors are told apart by ``ShoalError.retryable``: a terminal one (invalid input: a
``SpecError``, ``CodecError`` or ``TopicError``) is logged and the key dropped until it is
marked again, since retrying cannot fix it; anything else (the broker or the engine gone,
or a bug) is retried with the key's backoff.
"""

from __future__ import annotations

import asyncio
import time
import weakref
from collections.abc import Awaitable, Callable, Hashable, Iterable
from typing import Any, Generic, TypeVar

from core.backoff import Backoff
from core.durations import Durations
from core.errors import ShoalError
from core.logs import get_logger

K = TypeVar("K", bound=Hashable)

log = get_logger("shoal.runner")

#: every live runner of this process (read by ``core.metrics`` at scrape time)
RUNNERS: weakref.WeakSet[Reconciler[Any]] = weakref.WeakSet()


class Reconciler(Generic[K]):
    def __init__(
        self,
        name: str,
        reconcile: Callable[[K], Awaitable[float | None]],
        *,
        keys: Callable[[], Iterable[K]] | None = None,
        resync: float | None = None,
        backoff_initial: float = 0.05,
        backoff_cap: float = 10.0,
    ) -> None:
        self.name = name
        self._reconcile = reconcile
        self._keys = keys
        self._resync = resync
        self._queue: dict[K, None] = {}  # insertion-ordered set
        self._wake = asyncio.Event()
        self._timers: dict[K, asyncio.TimerHandle] = {}
        self._backoffs: dict[K, Backoff] = {}
        self._initial = backoff_initial
        self._cap = backoff_cap
        self.runs = 0
        self.failures = 0  # reconciles that raised (retried or dropped)
        self.durations = Durations()
        RUNNERS.add(self)

    @property
    def queued(self) -> int:
        """Keys waiting for a reconcile now (not those waiting for a timer)."""
        return len(self._queue)

    def mark(self, key: K) -> None:
        """Queue ``key`` for reconciliation (a no-op if it is queued already)."""
        timer = self._timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        self._queue[key] = None
        self._wake.set()

    def mark_all(self) -> None:
        if self._keys is not None:
            for key in self._keys():
                self.mark(key)

    def mark_later(self, key: K, delay: float) -> None:
        if key in self._queue:
            return
        old = self._timers.get(key)
        loop = asyncio.get_running_loop()
        when = loop.time() + delay
        if old is not None:
            if old.when() <= when:
                return
            old.cancel()
        self._timers[key] = loop.call_at(when, self._fire, key)

    def _fire(self, key: K) -> None:
        self._timers.pop(key, None)
        self._queue[key] = None
        self._wake.set()

    async def run(self) -> None:
        resync_task = asyncio.create_task(self._resync_loop(), name=f"{self.name}-resync")
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                while self._queue:
                    key = next(iter(self._queue))
                    del self._queue[key]
                    await self._run_one(key)
        finally:
            resync_task.cancel()
            for timer in self._timers.values():
                timer.cancel()

    async def _timed(self, key: K) -> float | None:
        started = time.perf_counter()
        self.runs += 1
        try:
            return await self._reconcile(key)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.failures += 1
            raise
        finally:
            seconds = time.perf_counter() - started
            self.durations.observe(seconds)
            log.debug("reconciled", runner=self.name, key=str(key), ms=round(seconds * 1000, 2))

    async def _run_one(self, key: K) -> None:
        try:
            again = await self._timed(key)
        except asyncio.CancelledError:
            raise
        except ShoalError as err:
            if err.retryable:
                self._retry(key, err)
                return
            self._backoffs.pop(key, None)
            log.error(
                "reconcile failed on invalid input; not retried",
                runner=self.name,
                key=str(key),
                error=f"{type(err).__name__}: {err}",
            )
            return
        except Exception as err:
            self._retry(key, err)
            return
        self._backoffs.pop(key, None)
        if again is not None:
            self.mark_later(key, again)

    def _retry(self, key: K, err: Exception) -> None:
        backoff = self._backoffs.setdefault(key, Backoff(self._initial, self._cap))
        delay = backoff.next()
        log.warning(
            "reconcile failed; will retry",
            runner=self.name,
            key=str(key),
            error=f"{type(err).__name__}: {err}",
            retry_in=round(delay, 2),
            exc_info=not getattr(err, "retryable", False),
        )
        self.mark_later(key, delay)

    async def _resync_loop(self) -> None:
        if not self._resync or self._keys is None:
            return
        while True:
            await asyncio.sleep(self._resync)
            self.mark_all()
