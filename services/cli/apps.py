"""``shoal apply``, ``shoal get``, ``shoal delete``: desired state in, observed state out."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.bus import Bus
from core.channels import (
    APPLY,
    APPS,
    DELETE,
    HEALTH,
    NODE_INFO,
    NODE_REPLICAS,
    SCALER_STATUS,
    SCHEDULER_STATUS,
)
from core.commands import ApplyCommand, DeleteCommand, Reply
from core.errors import ShoalError, SpecError
from core.keys import AppKey
from core.spec import load_specs, parse_documents
from core.state import (
    AppHealth,
    AppState,
    NodeInfo,
    NodeReplicas,
    ScalerStatus,
    SchedulerStatus,
)
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


def _read(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(path).read_text(), path
    except OSError as err:
        raise click.BadParameter(f"{path}: {err.strerror}", param_hint="-f") from err


def _load_files(files: tuple[str, ...]) -> list[Any]:
    """Raw documents of every file, validated locally first (errors exit 1, nothing sent)."""
    docs: list[Any] = []
    errors: list[str] = []
    for path in files:
        text, source = _read(path)
        try:
            load_specs(text, source)
            docs.extend(parse_documents(text, source))
        except SpecError as err:
            errors.extend(err.errors)
    if errors:
        _fail(errors)
    return docs


def _fail(errors: list[str]) -> NoReturn:
    err_console.print("[red]error:[/red] the spec is invalid; nothing was changed", highlight=False)
    for line in errors:
        err_console.print(f"  - {line}", highlight=False, markup=False)
    sys.exit(1)


def _print_reply(reply: Reply) -> None:
    if not reply.ok:
        _fail(reply.errors)
    for result in reply.results:
        key = AppKey(result.namespace, result.name)
        click.echo(f"app {key} {result.change} (revision {result.revision})")


# -- apply ------------------------------------------------------------------------------


@click.command()
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    required=True,
    help="YAML or JSON file with one or more apps ('-' for stdin)",
)
@click.option("--wait", is_flag=True, help="return once every app's replicas are ready")
@click.option("--wait-timeout", default=300.0, show_default=True, help="seconds, with --wait")
@click.option("--dry-run", is_flag=True, help="validate and show what would change")
@client_options
def apply(
    opts: ClientOptions, files: tuple[str, ...], wait: bool, wait_timeout: float, dry_run: bool
) -> None:
    """Create or update apps from files."""
    docs = _load_files(files)
    run_async(_apply(opts, docs, wait, wait_timeout, dry_run, ",".join(files)))


async def _apply(
    opts: ClientOptions,
    docs: list[Any],
    wait: bool,
    wait_timeout: float,
    dry_run: bool,
    source: str,
) -> None:
    async with connect(opts) as bus:
        reply = await bus.request(
            APPLY,
            ApplyCommand(apps=docs, dry_run=dry_run, source=f"cli:{source}"),
            timeout=opts.timeout,
        )
        _print_reply(reply)
        if wait and not dry_run:
            keys = [AppKey(r.namespace, r.name) for r in reply.results]
            await wait_ready(bus, keys, wait_timeout)


def rollout_progress(app: AppState, health: AppHealth | None) -> tuple[int, int, int]:
    """(ready replicas of the current revision, desired, replicas of other revisions)."""
    replicas = health.replicas if health else []
    ready = sum(1 for r in replicas if r.revision == app.revision and r.ready and not r.terminating)
    others = sum(1 for r in replicas if r.revision != app.revision and not r.terminating)
    return ready, app.replicas, others


async def wait_ready(bus: Bus, keys: list[AppKey], timeout: float) -> None:
    """Show progress until every app has all replicas of its revision ready."""
    apps = await bus.view(APPS)
    healths = await bus.view(HEALTH)
    started = time.monotonic()
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} ready {task.fields[note]}"),
        TimeElapsedColumn(),
        console=err_console,
        transient=False,
    ) as progress:
        tasks = {key: progress.add_task(str(key), total=None, note="") for key in keys}
        pending = set(keys)
        while pending:
            if time.monotonic() - started > timeout:
                raise ShoalError(
                    f"timed out after {timeout:g}s waiting for "
                    + ", ".join(str(key) for key in sorted(pending))
                )
            for key in list(pending):
                app = apps.get(key)
                if app is None:
                    continue
                ready, desired, others = rollout_progress(app, healths.get(key))
                note = f"(+{others} old)" if others else ""
                if app.phase in ("rolled_back", "failed"):
                    note = f"[red]{app.phase}: {app.message}[/red]"
                progress.update(tasks[key], total=desired, completed=ready, note=note)
                if app.phase in ("rolled_back", "failed"):
                    raise ShoalError(f"{key} {app.phase}: {app.message}")
                if ready >= desired and others == 0:
                    pending.discard(key)
            await asyncio.sleep(0.1)
    click.echo(f"ready in {time.monotonic() - started:.1f}s")


# -- get --------------------------------------------------------------------------------


def _age(ts: float | None) -> str:
    if not ts:
        return "-"
    s = max(0, int(time.time() - ts))
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    return f"{s // 3600}h"


@click.command()
@click.argument("what", type=click.Choice(["apps", "nodes", "replicas"]))
@click.option("-n", "--namespace", default=None, help="only this namespace")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@client_options
def get(opts: ClientOptions, what: str, namespace: str | None, output: str) -> None:
    """List apps, nodes or replicas."""
    run_async(_get(opts, what, namespace, output))


async def _get(opts: ClientOptions, what: str, namespace: str | None, output: str) -> None:
    async with connect(opts) as bus:
        app_view = await bus.view(APPS)
        health_view = await bus.view(HEALTH)
        node_view = await bus.view(NODE_INFO)
        observed_view = await bus.view(NODE_REPLICAS)
        placement_view = await bus.view(SCHEDULER_STATUS)
        scaling_view = await bus.view(SCALER_STATUS)
        await bus.sync()
        apps = sorted(app_view.items())
        healths = dict(health_view)
        nodes = list(node_view.values())
        observed = list(observed_view.values())
        placement = dict(placement_view)
        scaling = dict(scaling_view)
    if namespace:
        apps = [(key, a) for key, a in apps if key.namespace == namespace]
    nodes.sort(key=lambda n: n.node)
    replicas = sorted(
        (r for o in observed for r in o.replicas if not namespace or r.namespace == namespace),
        key=lambda r: r.id,
    )
    if what == "apps":
        running = Counter(AppKey(r.namespace, r.app) for r in replicas if r.phase == "running")
        views = [
            AppView(a, healths.get(key), running[key], placement.get(key), scaling.get(key))
            for key, a in apps
        ]
        _show_apps(views, output)
    elif what == "nodes":
        _show_nodes(nodes, observed, output)
    else:
        ready = {r.id: r for h in healths.values() for r in h.replicas}
        # A lost node's last report stays retained: say so instead of showing it as current.
        node_status = {n.node: n.status for n in nodes}
        if output == "json":
            print_json(
                [
                    {
                        **r.model_dump(mode="json"),
                        "ready": bool(ready.get(r.id) and ready[r.id].ready),
                        "node_status": node_status.get(r.node, "unknown"),
                    }
                    for r in replicas
                ]
            )
            return
        table = Table(box=None, header_style="bold")
        for col in ("ID", "APP", "REV", "NODE", "PHASE", "READY", "ENDPOINTS", "RESTARTS", "AGE"):
            table.add_column(col)
        for r in replicas:
            h = ready.get(r.id)
            phase = r.phase + (f" ({r.reason})" if r.reason else "")
            if node_status.get(r.node) != "ready":
                phase = f"unknown (node {node_status.get(r.node, 'unknown')})"
            table.add_row(
                r.id,
                str(AppKey(r.namespace, r.app)),
                str(r.revision),
                r.node,
                phase,
                "yes" if h and h.ready else "no",
                " ".join(f"{k}={v}" for k, v in r.endpoints.items()) or "-",
                str(r.restarts),
                _age(r.started_at),
            )
        console.print(table)


@dataclass(frozen=True)
class AppView:
    """One row of ``get apps``: desired state joined with what the other services report."""

    app: AppState
    health: AppHealth | None
    running: int
    placement: SchedulerStatus | None
    scaler: ScalerStatus | None

    @property
    def ready(self) -> int:
        return rollout_progress(self.app, self.health)[0]

    @property
    def autoscale(self) -> str:
        spec = self.app.spec.autoscale
        if spec is None:
            return "-"
        bounds = f"{spec.min}-{spec.max}"
        return f"{bounds}: {self.scaler.reason}" if self.scaler else bounds

    @property
    def notes(self) -> str:
        parts = [self.app.message] if self.app.message else []
        if self.placement is not None and self.placement.unplaceable:
            parts.append(self.placement.message)
        return "; ".join(parts)

    def as_json(self) -> dict[str, Any]:
        return {
            **self.app.model_dump(mode="json"),
            "ready": self.ready,
            "current": self.running,
            "desired": self.app.replicas,
            "placement": self.placement.model_dump(mode="json") if self.placement else None,
            "autoscaler": self.scaler.model_dump(mode="json") if self.scaler else None,
            "notes": self.notes,
        }


def _show_apps(views: list[AppView], output: str) -> None:
    if output == "json":
        print_json([v.as_json() for v in views])
        return
    table = Table(box=None, header_style="bold")
    for col in (
        "NAMESPACE",
        "NAME",
        "REV",
        "READY",
        "CURRENT",
        "DESIRED",
        "IMAGE",
        "ROUTE",
        "PHASE",
        "AUTOSCALE",
        "AGE",
        "NOTES",
    ):
        table.add_column(col)
    for v in views:
        a = v.app
        route = "-"
        if a.spec.route is not None:
            route = f"{a.spec.route.host or '*'}{a.spec.route.path}"
        table.add_row(
            a.namespace,
            a.name,
            str(a.revision),
            str(v.ready),
            str(v.running),
            str(a.replicas),
            a.spec.image,
            route,
            a.phase,
            v.autoscale,
            _age(a.updated),
            v.notes,
        )
    console.print(table)


def _show_nodes(nodes: list[NodeInfo], observed: list[NodeReplicas], output: str) -> None:
    counts = {o.node: len(o.replicas) for o in observed}
    if output == "json":
        print_json(
            [{**n.model_dump(mode="json"), "replicas": counts.get(n.node, 0)} for n in nodes]
        )
        return
    table = Table(box=None, header_style="bold")
    for col in ("NODE", "ADDRESS", "STATUS", "CPU", "MEMORY", "REPLICAS", "LABELS", "HEARTBEAT"):
        table.add_column(col)
    for n in nodes:
        status = n.status + (f" ({n.reason})" if n.reason else "")
        table.add_row(
            n.node,
            n.address,
            status,
            f"{n.capacity.cpu:g}",
            format_memory(n.capacity.memory),
            str(counts.get(n.node, 0)),
            ",".join(f"{k}={v}" for k, v in sorted(n.labels.items())) or "-",
            _age(n.heartbeat),
        )
    console.print(table)


# -- delete -----------------------------------------------------------------------------


@click.command()
@click.argument("target", nargs=-1)
@click.option("-f", "--file", "files", multiple=True, help="delete every app in these files")
@click.option("-n", "--namespace", default="default", show_default=True)
@client_options
def delete(
    opts: ClientOptions, target: tuple[str, ...], files: tuple[str, ...], namespace: str
) -> None:
    """Delete apps: ``delete app NAME [-n NS]`` or ``delete -f FILE``."""
    commands: list[DeleteCommand] = []
    if files:
        if target:
            raise click.UsageError("give either -f FILE or 'app NAME', not both")
        for path in files:
            text, source = _read(path)
            try:
                specs = load_specs(text, source)
            except SpecError as err:
                _fail(err.errors)
            commands.extend(DeleteCommand(namespace=s.namespace, name=s.name) for s in specs)
    elif len(target) == 2 and target[0] in ("app", "apps"):
        try:
            commands.append(DeleteCommand(namespace=namespace, name=target[1]))
        except ValueError as err:
            raise click.BadParameter(str(err)) from err
    else:
        raise click.UsageError("usage: shoal delete app NAME [-n NS]  |  shoal delete -f FILE")
    run_async(_delete(opts, commands))


async def _delete(opts: ClientOptions, commands: list[DeleteCommand]) -> None:
    failed = False
    async with connect(opts) as bus:
        for cmd in commands:
            reply = await bus.request(DELETE, cmd, timeout=opts.timeout)
            if reply.ok:
                click.echo(f"app {AppKey(cmd.namespace, cmd.name)} deleted")
            else:
                failed = True
                for line in reply.errors:
                    err_console.print(f"[red]error:[/red] {line}", highlight=False)
    if failed:
        sys.exit(1)


COMMANDS = [apply, get, delete]
