"""``shoal logs APP [-n NS] [-f] [--replica ID] [--tail N]``: container logs over the bus.

The CLI finds the app's replicas in the retained ``nodes/+/replicas`` reports, publishes a
``LogsRequest`` on ``logs/request`` and prints the ``LogChunk``s that the agents running
those replicas stream to ``logs/stream/<request id>``. Without ``-f`` it ends once every
replica's stream has ended; with ``-f`` it re-sends the request (a lease) until interrupted.
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterable

import click

from core.channels import LOGS_REQUEST, LOGS_STREAM, NODE_REPLICAS
from core.errors import ShoalError
from core.keys import AppKey
from core.logs import setup_logging
from core.state import LogChunk, LogsRequest, NodeReplicas
from services.cli.client import ClientOptions, client_options, connect, err_console, run_async
from services.cli.completion import complete_app

LEASE = 10.0


def expected_streams(
    reports: Iterable[NodeReplicas], app: AppKey, replica: str | None
) -> set[tuple[str, str]]:
    """(node, replica) of every container the agents report for the app."""
    return {
        (r.node, r.id)
        for report in reports
        for r in report.replicas
        if AppKey(r.namespace, r.app) == app
        and r.container_id
        and (replica is None or r.id == replica or r.id.endswith(replica))
    }


async def _logs(
    opts: ClientOptions,
    app: str,
    namespace: str,
    follow: bool,
    replica: str | None,
    tail: int | None,
) -> None:
    async with connect(opts) as bus:
        request_id = uuid.uuid4().hex
        chunks: asyncio.Queue[LogChunk] = asyncio.Queue()

        def on_chunk(request: str, chunk: LogChunk | None) -> None:
            if chunk is not None:
                chunks.put_nowait(chunk)

        reports = await bus.view(NODE_REPLICAS)
        await bus.subscribe(LOGS_STREAM, on_chunk, key=request_id)
        await bus.sync(timeout=opts.timeout)
        key = AppKey(namespace, app)
        expected = expected_streams(reports.values(), key, replica)
        if not expected:
            what = f"replica {replica} of " if replica else ""
            raise ShoalError(f"no running {what}app {key} found on any node")
        # A --replica suffix resolves to the full id.
        replica_id = next(iter(expected))[1] if replica and len(expected) == 1 else replica
        request = LogsRequest(
            id=request_id,
            namespace=namespace,
            app=app,
            replica=replica_id,
            tail=tail,
            follow=follow,
            lease=LEASE,
        )
        await bus.publish(LOGS_REQUEST, request)
        prefix_lines = len(expected) > 1
        pending = set(expected)
        renewed = time.monotonic()
        last_chunk = time.monotonic()
        while follow or pending:
            if follow and time.monotonic() - renewed > LEASE / 3:
                await bus.publish(LOGS_REQUEST, request)
                renewed = time.monotonic()
            try:
                async with asyncio.timeout(1.0):
                    chunk = await chunks.get()
            except TimeoutError:
                if not follow and time.monotonic() - last_chunk > opts.timeout:
                    missing = ", ".join(sorted(r for _, r in pending))
                    err_console.print(f"[yellow]warning:[/yellow] no logs from {missing}")
                    if pending == expected:
                        sys.exit(1)
                    return
                continue
            last_chunk = time.monotonic()
            for line in chunk.lines:
                click.echo(f"{chunk.replica} | {line}" if prefix_lines else line)
            if chunk.error:
                err_console.print(f"[yellow]warning:[/yellow] {chunk.replica}: {chunk.error}")
            if chunk.eof:
                pending.discard((chunk.node, chunk.replica))


@click.command("logs")
@client_options
@click.argument("app", shell_complete=complete_app)
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option("-f", "--follow", is_flag=True, help="keep streaming new lines")
@click.option("--replica", default=None, help="only this replica (id or its last characters)")
@click.option("--tail", type=click.IntRange(min=0), default=None, help="last N lines only")
def logs(
    opts: ClientOptions,
    app: str,
    namespace: str,
    follow: bool,
    replica: str | None,
    tail: int | None,
) -> None:
    """Print (and with -f follow) the container logs of an app's replicas."""
    setup_logging("warning")  # stdout carries the logs only; bus chatter stays quiet
    run_async(_logs(opts, app, namespace, follow, replica, tail))


COMMANDS: list[click.Command] = [logs]
