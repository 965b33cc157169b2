"""The reconcile runner: collapsing marks, retry with backoff, requeue."""

from __future__ import annotations

import asyncio

from core.errors import BusError, SpecError
from core.runner import Reconciler


async def test_marks_collapse_and_failures_retry() -> None:
    calls: list[str] = []
    fail = {"b": 2}
    done = asyncio.Event()

    async def reconcile(key: str) -> float | None:
        calls.append(key)
        if fail.get(key, 0) > 0:
            fail[key] -= 1
            raise RuntimeError("not yet")
        if key == "b":
            done.set()
        return None

    runner: Reconciler[str] = Reconciler("t", reconcile, backoff_initial=0.001)
    for _ in range(5):
        runner.mark("a")
    runner.mark("b")
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    assert calls.count("a") == 1
    assert calls.count("b") == 3


async def test_requeue_after_and_resync() -> None:
    seen: list[str] = []

    async def reconcile(key: str) -> float | None:
        seen.append(key)
        return 0.001 if len(seen) < 3 else None

    runner: Reconciler[str] = Reconciler("t", reconcile, keys=lambda: ["z"], resync=0.01)
    runner.mark("k")
    task = asyncio.create_task(runner.run())
    for _ in range(200):
        if "z" in seen and seen.count("k") >= 3:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    assert seen.count("k") >= 3
    assert "z" in seen


async def test_invalid_input_is_dropped_not_retried() -> None:
    calls: list[str] = []
    done = asyncio.Event()

    async def reconcile(key: str) -> float | None:
        calls.append(key)
        if key == "bad":
            raise SpecError(["replicas: must be >= 0"])
        if key == "flaky" and calls.count("flaky") < 3:
            raise BusError("broker gone")
        if key == "flaky":
            done.set()
        return None

    runner: Reconciler[str] = Reconciler("t", reconcile, backoff_initial=0.001)
    runner.mark("bad")
    runner.mark("flaky")
    task = asyncio.create_task(runner.run())
    await asyncio.wait_for(done.wait(), 5)
    task.cancel()
    assert calls.count("bad") == 1  # terminal: logged and dropped
    assert calls.count("flaky") == 3  # retryable: retried until it worked
