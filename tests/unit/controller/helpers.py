"""Builders shared by the controller's unit tests."""

from __future__ import annotations

from typing import Any

from core.spec import AppSpec
from core.state import AppHealth, AppState, ReplicaHealth
from services.controller.apps import AppRecord, decide_apply


def spec(image: str = "shoal-test/echo:v1", **fields: Any) -> AppSpec:
    data: dict[str, Any] = {
        "name": "web",
        "image": image,
        "replicas": 3,
        "ports": {"http": 8080},
        "route": {"host": "web.test", "port": "http"},
    }
    data.update(fields)
    return AppSpec.model_validate(data)


def created(s: AppSpec | None = None, now: float = 0.0) -> AppRecord:
    decision = decide_apply(None, s or spec(), 1, now, "test")
    assert decision.record is not None
    return decision.record


def health(
    state: AppState,
    ready: dict[int, int] | None = None,
    terminating: dict[int, int] | None = None,
) -> AppHealth:
    """Replicas as the plan asks for them; ``ready[rev]`` of them ready (default: all)."""
    replicas = []
    for version in state.versions:
        n_ready = version.replicas if ready is None else ready.get(version.revision, 0)
        for i in range(version.replicas):
            replicas.append(
                ReplicaHealth(
                    id=f"{state.namespace}.{state.name}.{version.revision}{i:07d}",
                    revision=version.revision,
                    node="n1",
                    endpoint=f"127.0.0.1:{10000 + i}",
                    ready=i < n_ready,
                )
            )
        for i in range((terminating or {}).get(version.revision, 0)):
            replicas.append(
                ReplicaHealth(
                    id=f"{state.namespace}.{state.name}.t{version.revision}{i:06d}",
                    revision=version.revision,
                    node="n1",
                    endpoint="127.0.0.1:1",
                    ready=False,
                    terminating=True,
                )
            )
    return AppHealth(namespace=state.namespace, name=state.name, replicas=replicas)


def counts(record: AppRecord) -> dict[int, int]:
    return {v.revision: v.replicas for v in record.state.versions}
