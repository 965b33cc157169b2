"""The one small interface every node provider implements, and what crosses it.

A provider makes nodes (a machine, a VM, a process) that run a Shoal agent with the node
id, size and labels asked for; the agent then joins the cluster over the bus like any
other. The provisioner owns exactly the nodes its provider lists.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from core.errors import ShoalError


class ProviderError(ShoalError):
    """The provider could not do what was asked (the message says why)."""


class NodeRequest(BaseModel):
    """A node to make: its id, size (capacity) and labels, for the cluster of ``prefix``."""

    model_config = ConfigDict(extra="forbid")

    node: str
    size: str
    cpu: float
    memory: int = Field(description="bytes")
    labels: dict[str, str] = Field(default_factory=dict)
    prefix: str = "shoal"


class ProviderNode(BaseModel):
    """A node the provider made (as ``create`` and ``list`` answer)."""

    model_config = ConfigDict(extra="ignore")

    node: str
    size: str = ""
    address: str = ""
    created: float = Field(0.0, description="when it was made (Unix time)")


class NodeProvider(Protocol):
    """``create`` a node, ``delete`` one, ``list`` those it made; ``close`` on exit."""

    name: str

    async def create(self, request: NodeRequest) -> ProviderNode: ...

    async def delete(self, node: str) -> None: ...

    async def list(self) -> list[ProviderNode]: ...

    async def close(self) -> None: ...
