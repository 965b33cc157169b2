"""``shoal node cordon|uncordon|drain ID``: node maintenance, answered by the scheduler."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass

import click
from rich.table import Table

from core.bus import Bus
from core.channels import NODE, NODE_ASSIGN, NODE_CORDON, NODE_INFO
from core.commands import NodeCommand
from core.errors import RequestTimeout, ShoalError
from core.logs import setup_logging
from core.state import NodeAssignment, NodeCordon, NodeInfo
from core.units import format_memory
from services.cli.client import (
    ClientOptions,
    client_options,
    connect,
    console,
    err_console,
    print_json,
    run_async,
)


@click.group("node")
def node() -> None:
    """Node maintenance: stop placing on a node, or move everything off it."""


async def _request(bus: Bus, command: NodeCommand, timeout: float) -> None:
    try:
        reply = await bus.request(NODE, command, timeout=timeout)
    except RequestTimeout as err:
        raise RequestTimeout(f"{err} (node commands are answered by the scheduler)") from err
    if not reply.ok:
        for line in reply.errors:
            err_console.print(f"[red]error:[/red] {line}", highlight=False)
        raise SystemExit(1)


async def _wait_empty(bus: Bus, node_id: str, timeout: float) -> None:
    assignments = await bus.view(NODE_ASSIGN, key=node_id)
    await bus.sync()
    deadline = time.monotonic() + timeout
    last = -1
    while True:
        assignment = assignments.get(node_id)
        left = len(assignment.replicas) if assignment is not None else 0
        if left == 0:
            click.echo(f"node {node_id} drained")
            return
        if left != last:
            err_console.print(f"waiting: {left} replica(s) still on {node_id}", highlight=False)
            last = left
        if time.monotonic() > deadline:
            raise ShoalError(
                f"node {node_id} still runs {left} replica(s) after {timeout:g}s; "
                "the drain goes on (see `shoal get apps` for unplaceable replicas)"
            )
        await asyncio.sleep(0.2)


def _run(opts: ClientOptions, command: NodeCommand, wait: float | None = None) -> None:
    setup_logging("warning")  # stdout carries the answer only

    async def go() -> None:
        async with connect(opts) as bus:
            await _request(bus, command, opts.timeout)
            verb = {"cordon": "cordoned", "uncordon": "uncordoned", "drain": "draining"}
            click.echo(f"node {command.node} {verb[command.action]}")
            if wait is not None:
                await _wait_empty(bus, command.node, wait)

    run_async(go())


@node.command()
@click.argument("node_id", metavar="ID")
@click.option("--reason", default="", help="shown in events and on the node")
@client_options
def cordon(opts: ClientOptions, node_id: str, reason: str) -> None:
    """Place no new replicas on node ID (running ones stay)."""
    _run(opts, NodeCommand(node=node_id, action="cordon", reason=reason))


@node.command()
@click.argument("node_id", metavar="ID")
@client_options
def uncordon(opts: ClientOptions, node_id: str) -> None:
    """Make node ID schedulable again (also stops a drain)."""
    _run(opts, NodeCommand(node=node_id, action="uncordon"))


@node.command()
@click.argument("node_id", metavar="ID")
@click.option("--reason", default="", help="shown in events and on the node")
@click.option("--wait/--no-wait", default=True, show_default=True, help="until the node is empty")
@click.option("--drain-timeout", default=300.0, show_default=True, help="seconds, with --wait")
@client_options
def drain(opts: ClientOptions, node_id: str, reason: str, wait: bool, drain_timeout: float) -> None:
    """Cordon node ID and move its replicas away, each replacement ready first."""
    _run(
        opts,
        NodeCommand(node=node_id, action="drain", reason=reason),
        wait=drain_timeout if wait else None,
    )


@dataclass(frozen=True, slots=True)
class NodeRow:
    node: str
    status: str
    schedule: str
    labels: dict[str, str]
    replicas: int
    cpu: float
    cpu_capacity: float
    memory: int
    memory_capacity: int


def node_rows(
    infos: Iterable[NodeInfo],
    assigns: Mapping[str, NodeAssignment],
    cordons: Mapping[str, NodeCordon],
) -> list[NodeRow]:
    """One row per node: status, cordon, labels, replicas and what they request."""
    rows = []
    for info in sorted(infos, key=lambda i: i.node):
        assignment = assigns.get(info.node) or NodeAssignment(node=info.node)
        specs = [assignment.specs.get(r.spec_key) for r in assignment.replicas]
        cordon = cordons.get(info.node)
        schedule = ("draining" if cordon.drain else "cordoned") if cordon is not None else ""
        rows.append(
            NodeRow(
                node=info.node,
                status=info.status,
                schedule=schedule,
                labels=dict(info.labels),
                replicas=len(assignment.replicas),
                cpu=round(sum(sp.resources.cpu for sp in specs if sp is not None), 3),
                cpu_capacity=info.capacity.cpu,
                memory=sum(sp.resources.memory for sp in specs if sp is not None),
                memory_capacity=info.capacity.memory,
            )
        )
    return rows


@node.command("list")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@client_options
def list_nodes(opts: ClientOptions, output: str) -> None:
    """Nodes with their status, cordon, labels and allocated requests."""
    setup_logging("warning")  # stdout carries the answer only

    async def go() -> list[NodeRow]:
        async with connect(opts) as bus:
            infos = await bus.view(NODE_INFO)
            assigns = await bus.view(NODE_ASSIGN)
            cordons = await bus.view(NODE_CORDON)
            await bus.sync()
            return node_rows(infos.values(), assigns, cordons)

    rows = run_async(go())
    if output == "json":
        print_json([asdict(row) for row in rows])
        return
    table = Table(box=None, header_style="bold")
    for column in ("NODE", "STATUS", "SCHEDULE", "REPLICAS", "CPU", "MEMORY", "LABELS"):
        table.add_column(column)
    for row in rows:
        table.add_row(
            row.node,
            row.status,
            row.schedule,
            str(row.replicas),
            f"{row.cpu:g}/{row.cpu_capacity:g}",
            f"{format_memory(row.memory)}/{format_memory(row.memory_capacity)}",
            ",".join(f"{k}={v}" for k, v in sorted(row.labels.items())),
        )
    console.print(table)


COMMANDS: list[click.Command] = [node]
