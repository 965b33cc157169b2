"""Log streaming: ``logs/request`` in, ``logs/stream/<id>`` out.

Every agent running a replica that matches a request streams its logs: one task per
container, lines in batches (at most 500, flushed every 0.1 s), ``eof`` at the end (with
the engine's error, if any). With ``follow`` the stream lasts while the requester
re-sends the same request within its ``lease``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time

from core.bus import Bus
from core.channels import LOGS_STREAM
from core.errors import BusError, RuntimeFailure, TopicError
from core.state import LogChunk, LogsRequest
from core.topics import level
from services.agent.containers import Container
from services.agent.engine import Engine
from services.agent.node import Node

BATCH = 500  # lines per chunk at most
FLUSH = 0.1  # seconds between chunks


class Logs:
    def __init__(self, node: Node, engine: Engine, bus: Bus) -> None:
        self.node = node
        self.engine = engine
        self.bus = bus
        self._leases: dict[str, float] = {}  # request id -> monotonic deadline
        self._streams: dict[str, asyncio.Task[None]] = {}  # "<request>/<container>" -> task

    def tasks(self) -> list[asyncio.Task[None]]:
        return list(self._streams.values())

    def on_request(self, _: None, request: LogsRequest | None) -> None:
        if request is None:
            return
        try:
            level(request.id)  # it names the stream's topic
        except TopicError as err:
            self.node.log.warning("invalid logs request dropped", error=str(err))
            return
        now = time.monotonic()
        if request.id in self._leases:
            self._leases[request.id] = now + request.lease
            return
        matches = [
            c
            for c in self.node.containers.values()
            if c.namespace == request.namespace
            and c.app == request.app
            and (request.replica is None or c.replica == request.replica)
        ]
        if not matches:
            return
        self._leases[request.id] = now + request.lease
        for c in matches:
            key = f"{request.id}/{c.id}"
            task = asyncio.create_task(self._stream(request, c), name=f"agent-logs-{key}")
            self._streams[key] = task
            task.add_done_callback(functools.partial(self._ended, key))

    def _ended(self, key: str, _: asyncio.Task[None]) -> None:
        self._streams.pop(key, None)

    async def _stream(self, request: LogsRequest, c: Container) -> None:
        buffer: list[str] = []
        error = ""

        async def flush(eof: bool = False) -> None:
            if not buffer and not eof:
                return
            chunk = LogChunk(
                request=request.id,
                node=self.node.id,
                replica=c.replica,
                lines=buffer[:],
                eof=eof,
                error=error,
            )
            buffer.clear()
            with contextlib.suppress(BusError):
                await self.bus.publish(LOGS_STREAM, chunk, timeout=5)

        async def read() -> None:
            async for line in self.engine.logs(c.id, follow=request.follow, tail=request.tail):
                buffer.append(line)
                if len(buffer) >= BATCH:
                    await flush()

        reader = asyncio.create_task(read(), name="agent-logs-read")
        try:
            while not reader.done():
                await asyncio.wait({reader}, timeout=FLUSH)
                await flush()
                if time.monotonic() > self._leases.get(request.id, 0.0):
                    reader.cancel()
                    break
            if reader.done() and not reader.cancelled() and reader.exception() is not None:
                error = str(reader.exception())
        finally:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeFailure):
                await reader
            await flush(eof=True)
            mine = f"{request.id}/{c.id}"
            if not any(k.startswith(f"{request.id}/") for k in self._streams if k != mine):
                self._leases.pop(request.id, None)
