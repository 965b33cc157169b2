"""``--provider local``: a node is a new agent process on this machine.

Each node gets its own node id, an advertise address ``127.0.0.N`` (the next one free from
``first_address``: every address of 127.0.0.0/8 is this machine's loopback on Linux) and
the capacity asked for (``--cpus``/``--memory``), and shares this machine's Docker engine
(containers carry their node's label, so agents never touch each other's). For a single
host and for the tests.

Agents start through ``core.lifeline``, so they die with the provisioner even when it is
killed with SIGKILL. ``delete`` stops the agent (SIGTERM, SIGKILL after ``grace``): the
provisioner deletes only nodes it has drained and whose agent reports no container left,
so there is nothing left to remove; whatever is (a container still being stopped) is
removed by its labels, as a machine that goes away takes its containers along. ``close``
(the provisioner exiting) stops every agent it started and removes
the containers left on those nodes (by the ``shoal.prefix`` and ``shoal.node`` labels),
as a machine that goes away takes its containers with it; the scheduler replaces them.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import os
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from core.units import format_memory
from services.provisioner.providers.base import NodeRequest, ProviderError, ProviderNode

log = structlog.get_logger("provisioner.local")


@dataclass
class _Agent:
    node: ProviderNode
    proc: asyncio.subprocess.Process


class LocalProvider:
    name = "local"

    def __init__(
        self,
        env: Mapping[str, str],
        prefix: str,
        *,
        first_address: str = "127.0.0.10",
        agent_args: Sequence[str] = (),
        grace: float = 20.0,
        docker: str | None = None,
    ) -> None:
        """``env``: the agents' environment over ours (``SHOAL_BROKER``: never on a command
        line, where ``ps`` shows a password); ``prefix``: the cluster's topic prefix."""
        first = ipaddress.IPv4Address(first_address)
        if not first.is_loopback:
            raise ValueError(f"local addresses must be loopback (127.x), not {first_address}")
        self.first = first
        self.env = dict(env)
        self.prefix = prefix
        self.agent_args = list(agent_args)
        self.grace = grace
        self.docker = docker
        self.agents: dict[str, _Agent] = {}

    def _next_address(self) -> str:
        used = {a.node.address for a in self.agents.values()}
        address = self.first
        while str(address) in used:
            address += 1
            if not address.is_loopback or int(address) & 0xFF == 0xFF:
                raise ProviderError("no free loopback address left for a local node")
        return str(address)

    async def create(self, request: NodeRequest) -> ProviderNode:
        if request.node in self.agents:
            raise ProviderError(f"local node {request.node} exists already")
        address = self._next_address()
        labels = ",".join(f"{k}={v}" for k, v in sorted(request.labels.items()))
        argv = [
            sys.executable,
            "-m",
            "core.lifeline",
            str(os.getpid()),
            "services.agent",
            "--node-id",
            request.node,
            "--address",
            address,
            "--cpus",
            f"{request.cpu:g}",
            "--memory",
            str(request.memory),
            *(["--labels", labels] if labels else []),
            *(["--docker", self.docker] if self.docker else []),
            *self.agent_args,
        ]
        env = {**os.environ, **self.env, "SHOAL_PREFIX": self.prefix}
        try:
            # stdin is the agent's lifeline: we hold its write end and never write to it
            proc = await asyncio.create_subprocess_exec(
                *argv, stdin=asyncio.subprocess.PIPE, env=env
            )
        except OSError as err:
            raise ProviderError(f"cannot start an agent: {err}") from err
        node = ProviderNode(
            node=request.node, size=request.size, address=address, created=time.time()
        )
        self.agents[request.node] = _Agent(node, proc)
        log.info(
            "local node started",
            node=request.node,
            address=address,
            cpus=request.cpu,
            memory=format_memory(request.memory),
            pid=proc.pid,
        )
        return node

    async def _stop(self, agent: _Agent) -> None:
        proc = agent.proc
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
            try:
                async with asyncio.timeout(self.grace):
                    await proc.wait()
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                await proc.wait()
        if proc.stdin is not None:
            proc.stdin.close()
        log.info("local node stopped", node=agent.node.node, pid=proc.pid, code=proc.returncode)

    async def delete(self, node: str) -> None:
        agent = self.agents.get(node)
        if agent is None:
            return  # gone already: deleting is idempotent
        await self._stop(agent)
        self.agents.pop(node, None)
        # a drained node has no containers left; anything there now (a container its agent
        # was still stopping) goes with the machine
        await remove_containers(self.prefix, [node], self.docker)

    async def list(self) -> list[ProviderNode]:
        return [a.node for a in self.agents.values()]

    async def close(self) -> None:
        agents = list(self.agents.values())
        await asyncio.gather(*(self._stop(a) for a in agents), return_exceptions=True)
        if agents:
            await remove_containers(self.prefix, [a.node.node for a in agents], self.docker)
        self.agents.clear()


async def remove_containers(prefix: str, nodes: list[str], url: str | None) -> None:
    """Remove what the stopped agents left on the engine, by prefix and node label."""
    import aiodocker

    try:
        docker = aiodocker.Docker(url=url) if url else aiodocker.Docker()
    except Exception as err:  # no engine here: nothing to clean
        log.warning("containers of local nodes not removed", error=str(err))
        return
    try:
        for node in nodes:
            filters = json.dumps({"label": [f"shoal.prefix={prefix}", f"shoal.node={node}"]})
            for container in await docker.containers.list(all="true", filters=filters):
                with contextlib.suppress(aiodocker.DockerError):
                    await container.delete(force=True)
    except (aiodocker.DockerError, OSError) as err:
        log.warning("containers of local nodes not removed", error=str(err))
    finally:
        await docker.close()
