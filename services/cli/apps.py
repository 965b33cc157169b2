"""``shoal apply``, ``shoal get``, ``shoal delete``: desired state in, observed state out."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import click
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from core.bus import Bus
from core.channels import (
    APPLY,
    APPS,
    DELETE,
    HEALTH,
    NODE_REPLICAS,
    SCHEDULER_STATUS,
    SECRET_RM,
)
from core.commands import ApplyCommand, DeleteCommand, Reply
from core.errors import ShoalError, SpecError
from core.keys import AppKey
from core.secrets import SecretDelete
from core.spec import load_specs, parse_documents, validate_apps
from services.cli.client import (
    ClientOptions,
    client_options,
    connect,
    console,
    err_console,
    run_async,
)
from services.cli.completion import complete_object
from services.cli.compose import (
    ComposeOptions,
    ComposeSecret,
    Mode,
    compose_file,
    compose_options,
)
from services.cli.output import FORMATS, age, name_lines, parse_selector, render_document
from services.cli.secrets import put_secret
from services.cli.views import (
    APP_COLUMNS,
    APP_WIDE_COLUMNS,
    NODE_COLUMNS,
    NODE_WIDE_COLUMNS,
    REPLICA_COLUMNS,
    REPLICA_WIDE_COLUMNS,
    Snapshot,
    app_row,
    app_views,
    live_snapshot,
    node_json,
    node_row,
    node_rows,
    not_ready_reasons,
    read_snapshot,
    replica_json,
    replica_row,
    replica_views,
    rollout_progress,
)


def _read(path: str) -> tuple[str, str]:
    if path == "-":
        return sys.stdin.read(), "<stdin>"
    try:
        return Path(path).read_text(), path
    except OSError as err:
        raise click.BadParameter(f"{path}: {err.strerror}", param_hint="-f") from err


def _load_files(
    files: tuple[str, ...],
    compose: ComposeOptions | None = None,
    mode: Mode = "apply",
    secrets: list[ComposeSecret] | None = None,
) -> list[Any]:
    """Raw documents of every file, validated locally first (errors exit 1, nothing sent).

    A compose file (a top-level ``services:``) is translated, its images built
    (``services.cli.compose``); ``secrets`` gets the secrets it creates (``apply``)."""
    docs: list[Any] = []
    errors: list[str] = []
    for path in files:
        text, source = _read(path)
        try:
            found = compose_file(text, source, compose or ComposeOptions(), mode)
            if found is not None:
                translated, file_secrets = found
                validate_apps(translated, source)
                docs.extend(translated)
                if secrets is not None:
                    secrets.extend(file_secrets)
                continue
            if compose is not None and compose.namespace is not None:
                errors.append(f"{source}: -n applies to compose files; a spec names its namespace")
                continue
            load_specs(text, source)
            docs.extend(parse_documents(text, source))
        except SpecError as err:
            errors.extend(err.errors)
        except ShoalError as err:  # a build of a compose file failed
            err_console.print(f"[red]error:[/red] {escape(str(err))}", highlight=False)
            sys.exit(1)
    if errors:
        _fail(errors)
    return docs


def _fail(errors: list[str]) -> NoReturn:
    err_console.print("[red]error:[/red] the spec is invalid; nothing was changed", highlight=False)
    for line in errors:
        err_console.print(f"  - {line}", highlight=False, markup=False)
    sys.exit(1)


def reply_lines(reply: Reply, dry_run: bool) -> list[str]:
    """``app default/web created (revision 1)``, or with ``--dry-run`` what would happen:
    ``app default/web would be created as revision 1 (dry run)``."""
    lines = []
    for result in reply.results:
        key = AppKey(result.namespace, result.name)
        if not dry_run:
            lines.append(f"app {key} {result.change} (revision {result.revision})")
        elif result.change == "unchanged":
            lines.append(f"app {key} unchanged (revision {result.revision}) (dry run)")
        elif result.change == "created":
            lines.append(f"app {key} would be created as revision {result.revision} (dry run)")
        else:
            lines.append(
                f"app {key} would be {result.change} (revision {result.revision}) (dry run)"
            )
    return lines


def _print_reply(reply: Reply, dry_run: bool = False) -> None:
    if not reply.ok:
        _fail(reply.errors)
    for line in reply_lines(reply, dry_run):
        click.echo(line)


# -- apply ------------------------------------------------------------------------------


@click.command()
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    required=True,
    help="YAML or JSON file with one or more apps, or a compose file ('-' for stdin)",
)
@click.option("--wait", is_flag=True, help="return once every app's replicas are ready")
@click.option("--wait-timeout", default=300.0, show_default=True, help="seconds, with --wait")
@click.option("--dry-run", is_flag=True, help="validate and show what would change")
@client_options
@compose_options
def apply(
    opts: ClientOptions,
    files: tuple[str, ...],
    wait: bool,
    wait_timeout: float,
    dry_run: bool,
    compose: ComposeOptions,
) -> None:
    """Create or update apps from files.

    A compose file (top-level services:) becomes one app per service in the namespace of
    -n, COMPOSE_PROJECT_NAME, its name: or its folder; build: images are built on the
    local engine (pushed with --registry); a key Shoal cannot honour is an error naming
    the key and the service (a warning with --allow-unsupported). See the README's
    "Compose files".
    """
    # --dry-run builds nothing: built images are named by the tag a build would give
    secrets: list[ComposeSecret] = []
    docs = _load_files(files, compose, "diff" if dry_run else "apply", secrets)
    run_async(_apply(opts, docs, wait, wait_timeout, dry_run, ",".join(files), secrets))


async def _apply(
    opts: ClientOptions,
    docs: list[Any],
    wait: bool,
    wait_timeout: float,
    dry_run: bool,
    source: str,
    secrets: Sequence[ComposeSecret] = (),
) -> None:
    async with connect(opts) as bus:
        for secret in secrets:
            await _put_compose_secret(bus, secret, opts.timeout)
        reply = await bus.request(
            APPLY,
            ApplyCommand(apps=docs, dry_run=dry_run, source=f"cli:{source}"),
            timeout=opts.timeout,
        )
        _print_reply(reply, dry_run)
        if wait and not dry_run:
            keys = [AppKey(r.namespace, r.name) for r in reply.results]
            await wait_ready(bus, keys, wait_timeout)


async def _put_compose_secret(bus: Bus, secret: ComposeSecret, timeout: float) -> None:
    """A compose file's secret, stored before its apps are applied: a value already held
    is ``unchanged`` (nothing rolls); a new one rolls the apps using it."""
    answer = await put_secret(bus, secret.namespace, secret.name, secret.value, timeout, "compose")
    label = f"{secret.namespace}/{secret.name}"
    if isinstance(answer, Reply):
        _fail([f"secret {label}: {line}" for line in answer.errors])
    if answer.change != "unchanged":
        click.echo(f"secret {label} {answer.change} (version {answer.version})")


async def wait_ready(bus: Bus, keys: list[AppKey], timeout: float) -> None:
    """Show progress until every app has all replicas of its revision ready; on timeout,
    say what each app still waits for."""
    apps = await bus.view(APPS)
    healths = await bus.view(HEALTH)
    placements = await bus.view(SCHEDULER_STATUS)
    observed = await bus.view(NODE_REPLICAS)
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
                replicas = [r for o in observed.values() for r in o.replicas]
                raise ShoalError(
                    f"timed out after {timeout:g}s waiting for every replica to be ready: "
                    + " | ".join(
                        f"{key}: "
                        + not_ready_reasons(
                            apps.get(key), healths.get(key), placements.get(key), replicas
                        )
                        for key in sorted(pending)
                    )
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

KINDS = {
    "app": "apps",
    "apps": "apps",
    "node": "nodes",
    "nodes": "nodes",
    "replica": "replicas",
    "replicas": "replicas",
}


def output_option(func: Any) -> Any:
    return click.option(
        "-o",
        "--output",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="table, wide (more columns), name, json or yaml (times in RFC 3339)",
    )(func)


@click.command()
@click.argument("what", type=click.Choice(sorted(KINDS)))
@click.argument("name", required=False, shell_complete=complete_object)
@click.option("-n", "--namespace", default=None, help="only this namespace")
@click.option("-l", "--selector", default=None, help="key=value[,key=value]: labels to match")
@output_option
@click.option("-w", "--watch", is_flag=True, help="print again on every change, until Ctrl-C")
@click.option(
    "--watch-timeout", default=None, type=float, help="with -w: stop after this many seconds"
)
@client_options
def get(
    opts: ClientOptions,
    what: str,
    name: str | None,
    namespace: str | None,
    selector: str | None,
    output: str,
    watch: bool,
    watch_timeout: float | None,
) -> None:
    """List apps, nodes or replicas, or show one: ``get app NAME [-n NS]``."""
    kind = KINDS[what]
    labels = parse_selector(selector)
    if labels and kind == "replicas":
        raise click.BadParameter("labels select apps and nodes", param_hint="-l")
    if name is not None and kind == "apps" and namespace is None:
        namespace = "default"
    query = Query(kind, name, namespace, labels, output)
    if watch:
        run_async(_watch(opts, query, watch_timeout))
        return
    snap = run_async(fetch_snapshot(opts))
    text = render(query, snap, time.time())
    if text is None:
        raise_not_found(query)
    click.echo(text, nl=False)


@dataclass(frozen=True)
class Query:
    kind: str  # apps, nodes, replicas
    name: str | None
    namespace: str | None
    selector: dict[str, str]
    output: str


def raise_not_found(query: Query) -> NoReturn:
    singular = query.kind[:-1]
    where = f"{query.namespace}/" if query.kind == "apps" else ""
    err_console.print(
        f"[red]error:[/red] {singular} {where}{query.name} not found", highlight=False
    )
    sys.exit(1)


async def fetch_snapshot(opts: ClientOptions) -> Snapshot:
    async with connect(opts) as bus:
        return await read_snapshot(bus)


async def _watch(opts: ClientOptions, query: Query, timeout: float | None) -> None:
    """Print on start and again whenever what is printed changes (ages aside)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    async with connect(opts, persistent=True) as bus:
        last: str | None = None
        current = await live_snapshot(bus)
        while deadline is None or time.monotonic() < deadline:
            snap = current()
            # compare without ages, which change every second
            key = render(query, snap, 0.0)
            if key != last:
                last = key
                text = render(query, snap, time.time())
                click.echo(
                    text if text is not None else f"({query.kind[:-1]} {query.name} not found)\n",
                    nl=False,
                )
                if query.output in ("table", "wide"):
                    click.echo("")
            await asyncio.sleep(0.5)


def render(query: Query, snap: Snapshot, now: float) -> str | None:
    """The text ``get`` prints for ``query`` (None: the one object asked for is missing).

    ``now`` 0 renders ages as ``-`` (watch compares renderings without them).
    """
    wide = query.output == "wide"
    columns: Sequence[str]
    rows: list[list[str]]
    docs: list[dict[str, Any]]
    names: list[str]

    def ago(ts: float | None) -> str:
        return age(ts, now) if now else "-"

    if query.kind == "apps":
        views = app_views(snap, query.namespace, query.name, query.selector)
        columns = APP_WIDE_COLUMNS if wide else APP_COLUMNS
        rows = [app_row(v, ago(v.app.updated), wide) for v in views]
        docs = [v.as_json() for v in views]
        names = [str(v.app.key) for v in views]
    elif query.kind == "nodes":
        nodes = [
            n for n in node_rows(snap, query.selector) if query.name is None or n.node == query.name
        ]
        columns = NODE_WIDE_COLUMNS if wide else NODE_COLUMNS
        rows = [node_row(n, ago(n.heartbeat), wide) for n in nodes]
        docs = [node_json(n, snap.nodes[n.node]) for n in nodes]
        names = [n.node for n in nodes]
    else:
        replicas = replica_views(snap, query.namespace, query.name)
        health = snap.replica_health()
        status = {n.node: n.status for n in snap.nodes.values()}
        columns = REPLICA_WIDE_COLUMNS if wide else REPLICA_COLUMNS
        rows = [
            replica_row(r, health.get(r.id), status.get(r.node), ago(r.started_at), wide)
            for r in replicas
        ]
        docs = [replica_json(r, health.get(r.id), status.get(r.node)) for r in replicas]
        names = [r.id for r in replicas]
    if query.name is not None and not names:
        return None
    if query.output in ("json", "yaml"):
        # one object asked for: that object, not a list of one
        return render_document(docs[0] if query.name is not None else docs, query.output) + (
            "\n" if query.output == "json" else ""
        )
    if query.output == "name":
        return name_lines(query.kind[:-1], names)
    return table_text(columns, rows)


def table_text(columns: Sequence[str], rows: list[list[str]]) -> str:
    table = Table(box=None, header_style="bold")
    for col in columns:
        table.add_column(col, overflow="fold")
    for row in rows:
        table.add_row(*row)
    with console.capture() as capture:
        console.print(table)
    return capture.get()


# -- delete -----------------------------------------------------------------------------


@click.command()
@click.argument("target", nargs=-1)
@click.option(
    "-f",
    "--file",
    "files",
    multiple=True,
    help="delete every app in these files (or compose files)",
)
@click.option(
    "-n",
    "--namespace",
    default=None,
    help="the app's namespace  [default: default; for a compose file, its project's]",
)
@client_options
def delete(
    opts: ClientOptions, target: tuple[str, ...], files: tuple[str, ...], namespace: str | None
) -> None:
    """Delete apps: ``delete app NAME [-n NS]`` or ``delete -f FILE`` (a compose file:
    every app of its services)."""
    commands: list[DeleteCommand] = []
    secrets: list[ComposeSecret] = []
    if files:
        if target:
            raise click.UsageError("give either -f FILE or 'app NAME', not both")
        for path in files:
            text, source = _read(path)
            try:
                found = compose_file(text, source, ComposeOptions(namespace), "delete")
                if found is not None:
                    specs = validate_apps(found[0], source)
                    secrets.extend(found[1])
                else:
                    specs = load_specs(text, source)
            except SpecError as err:
                _fail(err.errors)
            commands.extend(DeleteCommand(namespace=s.namespace, name=s.name) for s in specs)
    elif len(target) == 2 and target[0] in ("app", "apps"):
        try:
            commands.append(DeleteCommand(namespace=namespace or "default", name=target[1]))
        except ValueError as err:
            raise click.BadParameter(str(err)) from err
    else:
        raise click.UsageError("usage: shoal delete app NAME [-n NS]  |  shoal delete -f FILE")
    run_async(_delete(opts, commands, secrets))


async def _delete(
    opts: ClientOptions, commands: list[DeleteCommand], secrets: Sequence[ComposeSecret] = ()
) -> None:
    """The apps, then the secrets a compose file created on apply (a secret another app
    still uses is kept, with a warning)."""
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
        for secret in secrets if not failed else ():
            body = SecretDelete(namespace=secret.namespace, name=secret.name)
            answer = await bus.request(SECRET_RM, body, timeout=opts.timeout)
            label = f"{secret.namespace}/{secret.name}"
            if answer.ok:
                click.echo(f"secret {label} deleted")
            else:
                reason = "; ".join(answer.errors)
                err_console.print(f"warning: secret {label} kept: {reason}", highlight=False)
    if failed:
        sys.exit(1)


COMMANDS = [apply, get, delete]
