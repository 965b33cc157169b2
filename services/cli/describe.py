"""``shoal describe app|node|replica NAME``: one object in full, with the reasons why.

The text is built by pure functions over a ``Snapshot`` of the retained state (spec,
controller phase, scheduler placement, scaler decision, health verdicts, agent reports).
The object's recent events come from a dashboard, which keeps the last ones for later
readers (``cmd/events``); with none running, describe says so instead of listing them.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import click

from core.channels import EVENTS_QUERY
from core.cluster_state import app_phase
from core.commands import EventList, EventsQuery, RecentEvent
from core.errors import ShoalError
from core.keys import AppKey
from core.state import AppState, ReplicaStatus
from services.cli.apps import fetch_snapshot
from services.cli.client import ClientOptions, client_options, connect, err_console, run_async
from services.cli.completion import complete_object
from services.cli.output import age, format_labels, human_duration, human_memory, rfc3339
from services.cli.views import Snapshot, node_rows, replica_phase, rollout_progress


@dataclass(frozen=True)
class Condition:
    type: str
    status: bool
    reason: str
    message: str = ""


def columns(rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    """Rows aligned in columns (the last one unpadded)."""
    if not rows:
        return []
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    return [
        (
            indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1]
        ).rstrip()
        for r in rows
    ]


def _field(name: str, value: str) -> str:
    return f"{name + ':':<14}{value}"


def app_conditions(app: AppState, snap: Snapshot) -> list[Condition]:
    key = app.key
    placement = snap.placement.get(key)
    health = snap.health.get(key)
    scaler = snap.scaling.get(key)
    ready, desired, others = rollout_progress(app, health)
    conditions = []
    if placement is None:
        conditions.append(Condition("Scheduled", False, "NoSchedulerStatus", "not placed yet"))
    elif placement.unplaceable:
        conditions.append(
            Condition(
                "Scheduled",
                False,
                "Unplaceable",
                f"{placement.unplaceable} of {placement.desired} replicas cannot be placed: "
                f"{placement.message}",
            )
        )
    elif placement.waiting_for:
        conditions.append(
            Condition("Scheduled", False, "WaitingForDependencies", placement.waiting_for)
        )
    else:
        conditions.append(
            Condition("Scheduled", True, "Placed", f"{placement.placed}/{placement.desired} placed")
        )
    verdicts = [r for r in (health.replicas if health else []) if r.revision == app.revision]
    reasons = sorted({r.reason for r in verdicts if not r.ready and r.reason})
    message = f"{ready}/{desired} replicas of revision {app.revision} ready"
    if reasons:
        message += ": " + "; ".join(reasons)
    conditions.append(
        Condition(
            "Ready",
            ready >= desired,
            "AllReplicasReady" if ready >= desired else "ReplicasNotReady",
            message,
        )
    )
    progressing = app.phase in ("progressing", "rolling_back")
    rollout = app.message or (f"{others} replicas of other revisions left" if others else "")
    conditions.append(Condition("Progressing", progressing, app.phase, rollout))
    if app.spec.autoscale is not None:
        if scaler is None:
            conditions.append(Condition("Autoscaled", False, "NoScalerStatus", ""))
        else:
            conditions.append(
                Condition(
                    "Autoscaled",
                    scaler.current == scaler.desired,
                    scaler.code,
                    f"{scaler.reason} (wants {scaler.desired}, has {scaler.current})",
                )
            )
    return conditions


def _conditions_block(conditions: list[Condition]) -> list[str]:
    rows = [("TYPE", "STATUS", "REASON", "MESSAGE")] + [
        (c.type, str(c.status), c.reason, c.message or "-") for c in conditions
    ]
    return ["Conditions:", *columns(rows)]


def _replicas_block(replicas: list[ReplicaStatus], snap: Snapshot, now: float) -> list[str]:
    if not replicas:
        return ["Replicas:     <none>"]
    health = snap.replica_health()
    status = {n.node: n.status for n in snap.nodes.values()}
    rows = [("ID", "REV", "NODE", "PHASE", "READY", "RESTARTS", "AGE", "REASON")]
    for r in replicas:
        verdict = health.get(r.id)
        rows.append(
            (
                r.id,
                str(r.revision),
                r.node,
                replica_phase(r, status.get(r.node)),
                "yes" if verdict and verdict.ready else "no",
                str(r.restarts),
                age(r.started_at, now),
                (verdict.reason if verdict else "") or "-",
            )
        )
    return ["Replicas:", *columns(rows)]


def describe_app(snap: Snapshot, key: AppKey, now: float) -> str | None:
    app = snap.apps.get(key)
    if app is None:
        return None
    spec = app.spec
    placement = snap.placement.get(key)
    lines = [
        _field("Name", app.name),
        _field("Namespace", app.namespace),
        _field("Labels", format_labels(spec.labels)),
        _field("Revision", f"{app.revision} (generation {app.generation})"),
        _field("Phase", app_phase(app, placement)),
        _field("Updated", f"{rfc3339(app.updated)} ({age(app.updated, now)} ago)")
        if app.updated
        else _field("Updated", "-"),
        _field("Image", spec.image),
        _field("Replicas", f"{app.replicas} desired (spec {spec.replicas})"),
        _field(
            "Resources",
            f"cpu {spec.resources.cpu:g}, memory {human_memory(spec.resources.memory)}",
        ),
        _field("Ports", ", ".join(f"{k}={v}" for k, v in sorted(spec.ports.items())) or "-"),
    ]
    if spec.route is not None:
        route = f"{spec.route.host or '*'}{spec.route.path} ({spec.route.algorithm})"
        lines.append(_field("Route", route))
    p = spec.placement
    constraints = "; ".join(f"{k} in {','.join(v)}" for k, v in sorted(p.constraints.items()))
    lines.append(_field("Placement", p.strategy + (f", {constraints}" if constraints else "")))
    u = spec.update
    lines.append(
        _field(
            "Update",
            f"max_surge {u.max_surge}, max_unavailable {u.max_unavailable}, "
            f"deadline {human_duration(u.progress_deadline)}"
            + (f", canary {u.canary}" if u.canary else ""),
        )
    )
    if spec.autoscale is not None:
        lines.append(_field("Autoscale", f"{spec.autoscale.min}-{spec.autoscale.max}"))
    if len(app.versions) > 1:
        lines.append("Versions:")
        lines += columns(
            [("REVISION", "REPLICAS", "WEIGHT", "IMAGE")]
            + [
                (
                    str(v.revision),
                    str(v.replicas),
                    "-" if v.weight is None else f"{v.weight}%",
                    v.spec.image,
                )
                for v in app.versions
            ]
        )
    lines += _conditions_block(app_conditions(app, snap))
    if placement is not None and placement.nodes:
        by_node = ", ".join(f"{n}={c}" for n, c in sorted(placement.nodes.items()))
        lines.append(_field("Placed on", by_node))
    replicas = [r for r in snap.replicas() if r.namespace == key.namespace and r.app == key.name]
    lines += _replicas_block(replicas, snap, now)
    return "\n".join(lines) + "\n"


def describe_node(snap: Snapshot, node: str, now: float) -> str | None:
    info = snap.nodes.get(node)
    if info is None:
        return None
    row = next(r for r in node_rows(snap) if r.node == node)
    cordon = snap.cordons.get(node)
    lines = [
        _field("Name", info.node),
        _field("Address", info.address),
        _field("Labels", format_labels(info.labels)),
        _field("Version", info.version or "-"),
        _field("Status", row.status_text),
        _field(
            "Heartbeat",
            f"{rfc3339(info.heartbeat)} ({age(info.heartbeat, now)} ago, "
            f"every {human_duration(info.heartbeat_interval)})"
            if info.heartbeat
            else "-",
        ),
        _field(
            "Schedulable",
            "yes"
            if cordon is None
            else f"no: {row.schedule}" + (f" ({cordon.reason})" if cordon.reason else ""),
        ),
        "Capacity:",
        *columns(
            [
                ("RESOURCE", "REQUESTED", "CAPACITY"),
                ("cpu", f"{row.cpu:g}", f"{row.cpu_capacity:g}"),
                ("memory", human_memory(row.memory), human_memory(row.memory_capacity)),
            ]
        ),
        _field("Assigned", f"{row.replicas} replicas"),
    ]
    replicas = [r for r in snap.replicas() if r.node == node]
    lines += _replicas_block(replicas, snap, now)
    return "\n".join(lines) + "\n"


def describe_replica(snap: Snapshot, replica_id: str, now: float) -> str | None:
    replica = next((r for r in snap.replicas() if r.id == replica_id), None)
    if replica is None:
        return None
    verdict = snap.replica_health().get(replica_id)
    node = snap.nodes.get(replica.node)
    lines = [
        _field("ID", replica.id),
        _field("App", str(AppKey(replica.namespace, replica.app))),
        _field("Revision", str(replica.revision)),
        _field("Node", replica.node + (f" ({node.status})" if node else " (unknown)")),
        _field("Phase", replica_phase(replica, node.status if node else None)),
        _field("Container", replica.container_id or "-"),
        _field("Endpoints", " ".join(f"{k}={v}" for k, v in replica.endpoints.items()) or "-"),
        _field("Restarts", str(replica.restarts)),
        _field("Exit code", "-" if replica.exit_code is None else str(replica.exit_code)),
        _field(
            "Started",
            f"{rfc3339(replica.started_at)} ({age(replica.started_at, now)} ago)"
            if replica.started_at
            else "-",
        ),
    ]
    if verdict is None:
        health = "no verdict yet"
    else:
        health = ("ready" if verdict.ready else "not ready") + (
            "" if verdict.live else ", liveness failed"
        )
        if verdict.terminating:
            health += ", terminating"
        if verdict.reason:
            health += f": {verdict.reason}"
    lines.append(_field("Health", health))
    return "\n".join(lines) + "\n"


KINDS = ("app", "node", "replica")


#: how many of an object's recent events describe shows (the newest)
SHOWN_EVENTS = 10


def about(event: RecentEvent, kind: str, name: str, namespace: str) -> bool:
    """Whether ``event`` is about the object described."""
    if kind == "app":
        return event.app == name and (event.namespace or "default") == namespace
    if kind == "node":
        return event.node == name
    return event.replica == name


def events_block(events: list[RecentEvent] | None, now: float) -> list[str]:
    """``Events:`` with the newest ``SHOWN_EVENTS`` (None: nobody keeps events)."""
    if events is None:
        return ["Events:       <unknown: no dashboard keeps recent events (shoal run dashboard)>"]
    if not events:
        return ["Events:       <none>"]
    rows = [("AGE", "SEVERITY", "KIND", "MESSAGE")] + [
        (age(e.ts, now), e.severity, e.kind, e.message) for e in events[-SHOWN_EVENTS:]
    ]
    return ["Events:", *columns(rows)]


async def fetch_events(
    opts: ClientOptions, kind: str, name: str, namespace: str
) -> list[RecentEvent] | None:
    """The object's recent events from a dashboard; None when none answers."""
    query = EventsQuery(
        namespace=namespace if kind == "app" else None,
        app=name if kind == "app" else None,
        limit=500,
    )
    try:
        async with connect(opts) as bus:
            answer = await bus.request(EVENTS_QUERY, query, timeout=min(opts.timeout, 1.5))
    except ShoalError:
        return None
    if not isinstance(answer, EventList):
        return None
    return [e for e in answer.events if about(e, kind, name, namespace)]


def describe_text(snap: Snapshot, kind: str, name: str, namespace: str, now: float) -> str | None:
    if kind == "app":
        return describe_app(snap, AppKey(namespace, name), now)
    if kind == "node":
        return describe_node(snap, name, now)
    return describe_replica(snap, name, now)


@click.command()
@click.argument("kind", type=click.Choice([*KINDS, "apps", "nodes", "replicas"]))
@click.argument("name", shell_complete=complete_object)
@click.option("-n", "--namespace", default="default", show_default=True, help="of an app")
@client_options
def describe(opts: ClientOptions, kind: str, name: str, namespace: str) -> None:
    """Show one app, node or replica in full: spec, conditions with reasons, replicas."""
    kind = kind.rstrip("s")
    snap = run_async(fetch_snapshot(opts))
    now = time.time()
    text = describe_text(snap, kind, name, namespace, now)
    if text is None:
        where = f"{namespace}/" if kind == "app" else ""
        err_console.print(f"[red]error:[/red] {kind} {where}{name} not found", highlight=False)
        raise SystemExit(1)
    events = run_async(fetch_events(opts, kind, name, namespace))
    click.echo(text + "\n".join(events_block(events, now)) + "\n", nl=False)


COMMANDS: list[click.Command] = [describe]
