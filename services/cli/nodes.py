"""``shoal node cordon|uncordon|drain ID``: node maintenance, answered by the scheduler."""

from __future__ import annotations

import asyncio
import time

import click

from core.bus import Bus
from core.channels import NODE, NODE_ASSIGN
from core.commands import NodeCommand
from core.errors import RequestTimeout, ShoalError
from core.logs import setup_logging
from services.cli.apps import Query, fetch_snapshot, output_option, raise_not_found, render
from services.cli.client import (
    ClientOptions,
    client_options,
    connect,
    err_console,
    run_async,
)
from services.cli.completion import complete_node
from services.cli.output import parse_selector


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
@click.argument("node_id", metavar="ID", shell_complete=complete_node)
@click.option("--reason", default="", help="shown in events and on the node")
@client_options
def cordon(opts: ClientOptions, node_id: str, reason: str) -> None:
    """Place no new replicas on node ID (running ones stay)."""
    _run(opts, NodeCommand(node=node_id, action="cordon", reason=reason))


@node.command()
@click.argument("node_id", metavar="ID", shell_complete=complete_node)
@client_options
def uncordon(opts: ClientOptions, node_id: str) -> None:
    """Make node ID schedulable again (also stops a drain)."""
    _run(opts, NodeCommand(node=node_id, action="uncordon"))


@node.command()
@click.argument("node_id", metavar="ID", shell_complete=complete_node)
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


@node.command("list")
@click.argument("name", required=False, shell_complete=complete_node)
@click.option("-l", "--selector", default=None, help="key=value[,key=value]: labels to match")
@output_option
@client_options
def list_nodes(opts: ClientOptions, name: str | None, selector: str | None, output: str) -> None:
    """Nodes with their status, cordon, labels and allocated requests (= ``get nodes``)."""
    query = Query("nodes", name, None, parse_selector(selector), output)
    text = render(query, run_async(fetch_snapshot(opts)), time.time())
    if text is None:
        raise_not_found(query)
    click.echo(text, nl=False)


COMMANDS: list[click.Command] = [node]
