"""Waiting on a condition with a deadline (never a bare sleep that hopes)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


async def eventually(
    predicate: Callable[[], Any], timeout: float = 5.0, message: str = "condition"
) -> Any:
    """Poll ``predicate`` until it is truthy; TimeoutError after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if loop.time() > deadline:
            raise TimeoutError(f"{message} not met within {timeout}s")
        await asyncio.sleep(0.005)
