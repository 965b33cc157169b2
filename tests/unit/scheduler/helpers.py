"""Builders of wire models for scheduler unit tests."""

from __future__ import annotations

from typing import Any

from core.keys import AppKey
from core.spec import AppSpec
from core.state import AppState, AppVersion, NodeInfo
from services.scheduler.model import Demand, NodeView

MI = 1024**2
GI = 1024**3


def node_info(
    node: str, cpu: float = 4, memory: int = 8 * GI, status: str = "ready", **labels: str
) -> NodeInfo:
    return NodeInfo(
        node=node,
        address="127.0.0.1",
        labels=labels,
        capacity={"cpu": cpu, "memory": memory},
        status=status,  # type: ignore[arg-type]
    )


def app_state(
    name: str,
    replicas: int,
    *,
    cpu: float = 0.5,
    memory: int = 256 * MI,
    namespace: str = "default",
    revision: int = 1,
    versions: list[tuple[int, int]] | None = None,
    **placement: Any,
) -> AppState:
    spec = AppSpec(
        name=name,
        namespace=namespace,
        image="example/app:1",
        replicas=replicas,
        resources={"cpu": cpu, "memory": memory},
        placement=placement,
    )
    pairs = versions or [(revision, replicas)]
    return AppState(
        namespace=namespace,
        name=name,
        revision=max(r for r, _ in pairs),
        generation=1,
        spec=spec,
        replicas=replicas,
        versions=[AppVersion(revision=r, spec=spec, replicas=n) for r, n in pairs],
    )


def view(
    node: str = "n1",
    cpu: float = 4,
    memory: int = 8 * GI,
    status: str = "ready",
    cpu_used: float = 0.0,
    mem_used: int = 0,
    apps: dict[AppKey, int] | None = None,
    **labels: str,
) -> NodeView:
    return NodeView(
        id=node,
        labels=labels,
        cpu=cpu,
        memory=memory,
        status=status,
        cpu_used=cpu_used,
        mem_used=mem_used,
        apps=dict(apps or {}),
    )


def demand(
    cpu: float = 0.5,
    memory: int = 256 * MI,
    app: AppKey = AppKey("default", "web"),
    constraints: dict[str, list[str]] | None = None,
    **kw: Any,
) -> Demand:
    cons = tuple(sorted((k, frozenset(v)) for k, v in (constraints or {}).items()))
    return Demand(app=app, revision=1, cpu=cpu, memory=memory, constraints=cons, **kw)
