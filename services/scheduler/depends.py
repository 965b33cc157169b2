"""The ``depends_on`` gate: whether an app's first replicas may be placed yet. Pure.

An app that declares ``depends_on`` gets no replica until every dependency (an app of the
same namespace) meets its condition:

- ``started``: every desired replica of the dependency's current revision is placed on a
  node (its agent starts it at once; Shoal does not wait for the process itself);
- ``healthy``: every desired replica of the dependency's current revision is ready (its
  readiness probe passes, as the health monitor reports), and there is at least one.

The gate holds only an app with no replica placed at all, which is what compose does: it
orders the start of an application. Once some replicas of an app are placed, the app is
scaled, healed and rolled out whatever its dependencies do (a dependency restarting does
not stop its dependants). An app whose every replica is lost (a lost node) is held again
until its dependencies meet their conditions.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from core.spec import AppSpec


@dataclass(frozen=True, slots=True)
class DependencyState:
    """What the scheduler knows of a dependency: its current revision's replicas."""

    desired: int
    placed: int
    ready: int


def waiting_for(
    spec: AppSpec, started: bool, dependencies: Mapping[str, DependencyState]
) -> list[str]:
    """Why the app's replicas are held, one phrase per unmet dependency (empty: place
    them). ``started``: some replica of the app is placed already. ``dependencies`` holds
    the apps of the namespace that exist, by name."""
    if started:
        return []
    reasons = []
    for dependency in spec.depends_on:
        state = dependencies.get(dependency.app)
        if state is None:
            reasons.append(f"{dependency.app} (no such app in namespace {spec.namespace})")
        elif dependency.condition == "started":
            if state.desired == 0 or state.placed < state.desired:
                reasons.append(
                    f"{dependency.app} to be started ({state.placed}/{state.desired} placed)"
                )
        elif state.desired == 0 or state.ready < state.desired:
            reasons.append(f"{dependency.app} to be healthy ({state.ready}/{state.desired} ready)")
    return reasons


def held_message(reasons: list[str]) -> str:
    """The scheduler status message of a held app."""
    return "waiting for " + ", ".join(reasons) if reasons else ""
