"""``--provider command``: an operator's executable, one call per operation, JSON both ways.

As the Kubernetes cluster autoscaler's external gRPC provider and Nomad autoscaler's target
plugins separate the decision from the cloud API, the provisioner decides and the
executable talks to the cloud. Each call runs the executable once with one JSON object on
stdin and reads one JSON object from its stdout (the protocol is in the README):

- ``{"version": 1, "action": "create", "node": {"node", "size", "cpu", "memory", "labels",
  "prefix"}}`` → ``{"node": {"node", "size", "address", "created"}}``
- ``{"version": 1, "action": "delete", "node": "<id>"}`` → ``{}``
- ``{"version": 1, "action": "list", "prefix": "<prefix>"}`` → ``{"nodes": [...]}``

A non-zero exit, a reply that is not such an object, ``{"error": "..."}`` or a call that
takes longer than the timeout is a ``ProviderError`` (the executable is killed).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Sequence
from typing import Any

from pydantic import ValidationError

from services.provisioner.providers.base import NodeRequest, ProviderError, ProviderNode

PROTOCOL_VERSION = 1


class CommandProvider:
    name = "command"

    def __init__(self, argv: Sequence[str], prefix: str, timeout: float = 600.0) -> None:
        if not argv:
            raise ValueError("the provider command is empty")
        self.argv = list(argv)
        self.prefix = prefix
        self.timeout = timeout

    async def call(self, request: dict[str, Any]) -> dict[str, Any]:
        payload = json.dumps({"version": PROTOCOL_VERSION, **request}).encode()
        action = request["action"]
        try:
            proc = await asyncio.create_subprocess_exec(
                *self.argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
        except OSError as err:
            raise ProviderError(f"provider command {self.argv[0]!r}: {err}") from err
        try:
            async with asyncio.timeout(self.timeout):
                out, stderr = await proc.communicate(payload)
        except TimeoutError as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
            raise ProviderError(
                f"provider command {action}: no answer within {self.timeout:g}s"
            ) from exc
        detail = stderr.decode(errors="replace").strip()[-500:]
        if proc.returncode != 0:
            raise ProviderError(
                f"provider command {action} exited {proc.returncode}"
                + (f": {detail}" if detail else "")
            )
        try:
            reply = json.loads(out)
        except ValueError as exc:
            raise ProviderError(f"provider command {action}: the answer is not JSON") from exc
        if not isinstance(reply, dict):
            raise ProviderError(f"provider command {action}: the answer is not a JSON object")
        if reply.get("error"):
            raise ProviderError(f"provider command {action}: {reply['error']}")
        return reply

    async def create(self, request: NodeRequest) -> ProviderNode:
        reply = await self.call({"action": "create", "node": request.model_dump()})
        try:
            return ProviderNode.model_validate(reply.get("node"))
        except ValidationError as err:
            raise ProviderError(f"provider command create: bad node in the answer: {err}") from err

    async def delete(self, node: str) -> None:
        await self.call({"action": "delete", "node": node})

    async def list(self) -> list[ProviderNode]:
        reply = await self.call({"action": "list", "prefix": self.prefix})
        nodes = reply.get("nodes")
        if not isinstance(nodes, list):
            raise ProviderError('provider command list: the answer has no "nodes" list')
        try:
            return [ProviderNode.model_validate(n) for n in nodes]
        except ValidationError as err:
            raise ProviderError(f"provider command list: bad node in the answer: {err}") from err

    async def close(self) -> None:
        return None
