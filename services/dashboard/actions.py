"""The page's actions, turned into the very bus commands the CLI sends.

``parse`` reads the JSON the page posts (``{"action": "scale", "namespace": "default",
"name": "web", "replicas": 3}``, ``{"action": "drain", "node": "node-1"}``) into one
``Action``: the command, its body, and what to say when it is done. A body that does not
fit is refused here, before anything is sent.

| page action | CLI command | bus command |
|---|---|---|
| scale | `shoal scale NAME N` | `SCALE` (`ScaleCommand`, source manual) |
| undo | `shoal rollout undo NAME` | `ROLLBACK` (`RollbackCommand`) |
| promote / abort | `shoal rollout promote/abort NAME` | `ROLLOUT` (`RolloutCommand`) |
| delete | `shoal delete app NAME` | `DELETE` (`DeleteCommand`) |
| cordon / uncordon / drain | `shoal node cordon/uncordon/drain ID` | `NODE` (`NodeCommand`) |
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from core.channels import DELETE, NODE, ROLLBACK, ROLLOUT, SCALE, Command
from core.commands import (
    DeleteCommand,
    NodeCommand,
    Reply,
    RollbackCommand,
    RolloutCommand,
    ScaleCommand,
)
from core.spec import format_validation_error


class ActionError(ValueError):
    """The posted action cannot be sent (a clear message for the page)."""


@dataclass(frozen=True)
class Action:
    name: str
    command: Command[Any, Reply]
    body: BaseModel
    namespace: str | None  # None: a node action (cluster scope)
    target: str  # what the page names: "default/web", "node node-1"
    done: str  # said when the command succeeded

    def result(self, reply: Reply) -> dict[str, Any]:
        if reply.ok:
            revision = f" (revision {reply.revision})" if reply.revision is not None else ""
            return {"ok": True, "message": self.done + revision, "errors": []}
        errors = reply.errors or ["refused without a reason"]
        return {"ok": False, "message": f"{self.name} of {self.target} refused", "errors": errors}


def parse(data: Any) -> Action:
    if not isinstance(data, dict):
        raise ActionError("an action is a JSON object")
    name = data.get("action")
    try:
        if name in ("cordon", "uncordon", "drain"):
            node = NodeCommand(node=_text(data, "node"), action=name, reason=_reason(data))
            verb = {"cordon": "cordoned", "uncordon": "uncordoned", "drain": "draining"}[name]
            return Action(name, NODE, node, None, f"node {node.node}", f"node {node.node} {verb}")
        namespace = _text(data, "namespace", "default")
        app = _text(data, "name")
        target = f"{namespace}/{app}"
        if name == "scale":
            replicas = data.get("replicas")
            if not isinstance(replicas, int) or isinstance(replicas, bool):
                raise ActionError("scale needs a whole number of replicas")
            body: BaseModel = ScaleCommand(
                namespace=namespace, name=app, replicas=replicas, source="manual"
            )
            return Action(name, SCALE, body, namespace, target, f"{target} scaled to {replicas}")
        if name == "undo":
            body = RollbackCommand(namespace=namespace, name=app)
            return Action(name, ROLLBACK, body, namespace, target, f"{target} rolled back")
        if name in ("promote", "abort"):
            body = RolloutCommand(namespace=namespace, name=app, action=name)
            verb = "promoted" if name == "promote" else "rollout aborted"
            return Action(name, ROLLOUT, body, namespace, target, f"{target} {verb}")
        if name == "delete":
            body = DeleteCommand(namespace=namespace, name=app)
            return Action(name, DELETE, body, namespace, target, f"{target} deleted")
    except ValidationError as err:
        raise ActionError("; ".join(format_validation_error(err, str(name)))) from err
    raise ActionError(f"unknown action {name!r}")


def _text(data: dict[str, Any], field: str, default: str | None = None) -> str:
    value = data.get(field, default)
    if not isinstance(value, str) or not value:
        raise ActionError(f"{data.get('action')} needs {field!r}")
    return value


def _reason(data: dict[str, Any]) -> str:
    reason = data.get("reason", "")
    return reason if isinstance(reason, str) else ""
