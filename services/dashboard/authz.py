"""Who may do what from the dashboard: the role it was started with.

The dashboard acts with one identity given at start (``--read-only``, ``--namespaces a,b``)
and refuses, with a message the page shows, an action that the same CLI command run with
that identity should not do. Namespaced actions (scale, rollout, delete) need the app's
namespace in the allow-list; node actions (cordon, uncordon, drain) touch every namespace's
replicas, so they need cluster scope (no allow-list). With authorisation on, its commands
go on ``cmd/<name>/<its user>`` and the controller and scheduler also check that identity's
grants (``shoal auth grant dashboard NS``, or ``--admin`` for node actions).
"""

from __future__ import annotations

from dataclasses import dataclass

#: Actions on an app (its namespace is checked) and on a node (cluster scope).
APP_ACTIONS = frozenset({"scale", "undo", "promote", "abort", "delete"})
NODE_ACTIONS = frozenset({"cordon", "uncordon", "drain"})


@dataclass(frozen=True, slots=True)
class Role:
    """``namespaces`` None: every namespace and the nodes (cluster scope)."""

    read_only: bool = False
    namespaces: frozenset[str] | None = None

    @classmethod
    def parse(cls, read_only: bool, namespaces: str) -> Role:
        names = frozenset(n.strip() for n in namespaces.split(",") if n.strip())
        return cls(read_only=read_only, namespaces=names or None)

    def describe(self) -> str:
        scope = (
            "every namespace and the nodes"
            if self.namespaces is None
            else "namespaces " + ", ".join(sorted(self.namespaces))
        )
        return ("read-only: " if self.read_only else "may act on ") + scope

    def as_json(self) -> dict[str, object]:
        return {
            "read_only": self.read_only,
            "namespaces": None if self.namespaces is None else sorted(self.namespaces),
            "text": self.describe(),
        }


def refusal(role: Role, action: str, namespace: str | None) -> str | None:
    """Why ``role`` may not do ``action`` (on an app of ``namespace``); None when it may."""
    if action not in APP_ACTIONS | NODE_ACTIONS:
        return f"unknown action {action!r}"
    if role.read_only:
        return f"{action} refused: this dashboard is read-only (started with --read-only)"
    if action in NODE_ACTIONS:
        if role.namespaces is not None:
            return (
                f"{action} refused: node actions need cluster scope; this dashboard may act "
                f"only on namespaces {', '.join(sorted(role.namespaces))}"
            )
        return None
    if role.namespaces is not None and namespace not in role.namespaces:
        return (
            f"{action} refused: namespace {namespace!r} is not in this dashboard's allow-list "
            f"({', '.join(sorted(role.namespaces))})"
        )
    return None
