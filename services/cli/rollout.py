"""``shoal rollout history|undo|status|promote|abort`` and ``shoal diff``: versions of apps."""

from __future__ import annotations

import asyncio
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click
from pydantic import BaseModel
from rich.markup import escape
from rich.table import Table

from core.bus import Bus
from core.channels import APPLY, APPS, HEALTH, HISTORY, ROLLBACK, ROLLOUT, Command
from core.commands import (
    ApplyCommand,
    HistoryQuery,
    Reply,
    RollbackCommand,
    RolloutCommand,
)
from core.errors import ShoalError, SpecError
from core.keys import AppKey
from core.spec import load_specs, parse_documents, validate_apps
from core.state import AppHealth, AppState
from core.view import View
from services.cli.client import (
    ClientOptions,
    client_options,
    connect,
    console,
    err_console,
    print_json,
    run_async,
)
from services.cli.completion import complete_app
from services.cli.compose import ComposeOptions, compose_documents, compose_options

#: Phases in which a rollout has stopped moving by itself.
SETTLED = ("stable", "rolled_back", "failed", "paused")

M = TypeVar("M", bound=BaseModel)


def _refused(errors: list[str]) -> NoReturn:
    for line in errors:
        err_console.print(f"[red]error:[/red] {escape(line)}", highlight=False)
    sys.exit(1)


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


async def _command(bus: Bus, command: Command[M, Reply], body: M, timeout: float) -> Reply:
    reply = await bus.request(command, body, timeout=timeout)
    if not reply.ok:
        _refused(reply.errors)
    return reply


async def _follow(bus: Bus, key: AppKey) -> tuple[View[AppKey, AppState], View[AppKey, AppHealth]]:
    """Views of one app's desired state and health, loaded."""
    apps = await bus.view(APPS, key=key)
    healths = await bus.view(HEALTH, key=key)
    await bus.sync()
    return apps, healths


@click.group()
def rollout() -> None:
    """Revisions of an app: history, undo, status, canary promote/abort."""


namespace_option = click.option("-n", "--namespace", default="default", show_default=True)


# -- history ------------------------------------------------------------------------------


@rollout.command()
@click.argument("name", shell_complete=complete_app)
@namespace_option
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@client_options
def history(opts: ClientOptions, name: str, namespace: str, output: str) -> None:
    """Every revision of NAME: when, from where, and what changed."""
    run_async(_history(opts, namespace, name, output))


async def _history(opts: ClientOptions, namespace: str, name: str, output: str) -> None:
    async with connect(opts) as bus:
        hist = await bus.request(
            HISTORY, HistoryQuery(namespace=namespace, name=name), timeout=opts.timeout
        )
    if isinstance(hist, Reply):
        _refused(hist.errors)
    if output == "json":
        print_json(hist)
        return
    table = Table(box=None, header_style="bold")
    for col in ("REVISION", "CREATED (UTC)", "SOURCE", "IMAGE", "CHANGES", "STATUS"):
        table.add_column(col, overflow="fold")
    for r in hist.revisions:
        table.add_row(
            f"{r.revision}{' *' if r.current else ''}",
            _time(r.created),
            r.source or "-",
            r.image,
            "; ".join(r.changes) or "-",
            r.status or "-",
        )
    console.print(table)
    console.print(
        f"{AppKey(namespace, name)}: revision {hist.revision}, {hist.phase}"
        + (f" ({hist.message})" if hist.message else ""),
        highlight=False,
        markup=False,
    )


# -- undo ---------------------------------------------------------------------------------


@rollout.command()
@click.argument("name", shell_complete=complete_app)
@namespace_option
@click.option("--to-revision", type=int, default=None, help="default: the previous revision")
@client_options
def undo(opts: ClientOptions, name: str, namespace: str, to_revision: int | None) -> None:
    """Go back to an earlier revision's template (as a new revision)."""
    run_async(_undo(opts, namespace, name, to_revision))


async def _undo(opts: ClientOptions, namespace: str, name: str, to_revision: int | None) -> None:
    if to_revision is not None and to_revision < 1:
        raise click.BadParameter("revisions start at 1", param_hint="--to-revision")
    async with connect(opts) as bus:
        reply = await _command(
            bus,
            ROLLBACK,
            RollbackCommand(namespace=namespace, name=name, to_revision=to_revision),
            opts.timeout,
        )
    for r in reply.results:
        key = AppKey(r.namespace, r.name)
        if r.change == "unchanged":
            click.echo(f"app {key} unchanged: already on that template")
        else:
            click.echo(f"app {key} rolling back as revision {r.revision}")
            for line in r.changes:
                click.echo(f"  {line}")


# -- promote / abort ------------------------------------------------------------------------


def _action_command(action: str, doc: str) -> click.Command:
    @click.argument("name", shell_complete=complete_app)
    @namespace_option
    @client_options
    def command(opts: ClientOptions, name: str, namespace: str) -> None:
        run_async(_action(opts, namespace, name, action))

    command.__doc__ = doc
    return rollout.command(action)(command)


async def _action(opts: ClientOptions, namespace: str, name: str, action: str) -> None:
    async with connect(opts) as bus:
        body = RolloutCommand(namespace=namespace, name=name, action=action)
        reply = await _command(bus, ROLLOUT, body, opts.timeout)
    done = "promoted: rolling out" if action == "promote" else "aborted: back to"
    click.echo(f"app {AppKey(namespace, name)} {done} revision {reply.revision}")


promote = _action_command("promote", "Complete a paused canary: roll the new revision out.")
abort = _action_command("abort", "Stop a canary or rollout and return to the last good revision.")


# -- status -------------------------------------------------------------------------------


def describe(app: AppState, health: AppHealth | None) -> list[str]:
    """Lines describing where a rollout stands."""
    ready: dict[int, int] = {}
    for r in health.replicas if health else []:
        if r.ready and not r.terminating:
            ready[r.revision] = ready.get(r.revision, 0) + 1
    lines = [
        f"{AppKey(app.namespace, app.name)}: revision {app.revision}, {app.phase}"
        + (f": {app.message}" if app.message else "")
    ]
    for v in app.versions:
        weight = f", {v.weight}% of traffic" if v.weight is not None else ""
        target = " (target)" if v.revision == app.revision and len(app.versions) > 1 else ""
        lines.append(
            f"  revision {v.revision}{target}: {ready.get(v.revision, 0)}/{v.replicas} ready, "
            f"{v.spec.image}{weight}"
        )
    return lines


@rollout.command()
@click.argument("name", shell_complete=complete_app)
@namespace_option
@click.option("-w", "--watch", is_flag=True, help="follow until the rollout settles")
@click.option("--watch-timeout", default=600.0, show_default=True, help="seconds, with --watch")
@client_options
def status(
    opts: ClientOptions, name: str, namespace: str, watch: bool, watch_timeout: float
) -> None:
    """Where the rollout of NAME stands (exit 1 if it failed or was rolled back)."""
    run_async(_status(opts, namespace, name, watch, watch_timeout))


async def _status(
    opts: ClientOptions, namespace: str, name: str, watch: bool, watch_timeout: float
) -> None:
    key = AppKey(namespace, name)
    async with connect(opts) as bus:
        apps, healths = await _follow(bus, key)
        app, health = apps.get(key), healths.get(key)
        if app is None:
            raise ShoalError(f"app {key} not found")
        shown: list[str] = []
        started = time.monotonic()
        while True:
            lines = describe(app, health)
            if lines != shown:
                for line in lines:
                    console.print(line, highlight=False, markup=False)
                shown = lines
            if not watch or app.phase in SETTLED:
                break
            if time.monotonic() - started > watch_timeout:
                raise ShoalError(f"rollout of {key} still {app.phase}")
            await asyncio.sleep(0.2)
            app, health = apps.get(key), healths.get(key)
            if app is None:
                raise ShoalError(f"app {key} was deleted")
    if app.phase in ("failed", "rolled_back"):
        sys.exit(1)


# -- diff ---------------------------------------------------------------------------------


@click.command()
@click.option("-f", "--file", "files", multiple=True, required=True, help="'-' for stdin")
@click.option(
    "--exit-code/--no-exit-code",
    default=True,
    show_default=True,
    help="exit 1 when an apply would change something (as kubectl diff); errors exit 2",
)
@client_options
@compose_options
def diff(
    opts: ClientOptions, files: tuple[str, ...], exit_code: bool, compose: ComposeOptions
) -> None:
    """What `shoal apply -f FILE` would change, field by field (nothing is changed).

    A compose file is read as apply reads it; images of build: are not built, only named
    by the tag a build would give (their content's digest).

    Exit status as kubectl diff's: 0 nothing would change, 1 something would, 2 an error
    (an invalid spec, a refused connection, no answer).
    """
    try:
        changed = _diff_files(opts, files, compose)
    except SystemExit as err:
        if err.code == 1:  # every error path of the shared helpers exits 1
            sys.exit(2)
        raise
    if exit_code and changed:
        sys.exit(1)


def _diff_files(
    opts: ClientOptions, files: tuple[str, ...], compose: ComposeOptions | None = None
) -> bool:
    docs: list[Any] = []
    errors: list[str] = []
    for path in files:
        try:
            text = sys.stdin.read() if path == "-" else Path(path).read_text()
        except OSError as err:
            raise click.BadParameter(f"{path}: {err.strerror}", param_hint="-f") from err
        try:
            # a compose file: its apps, built images named by the tags a build would give
            translated = compose_documents(
                text, "<stdin>" if path == "-" else path, compose or ComposeOptions(), "diff"
            )
            if translated is not None:
                validate_apps(translated, path)
                docs.extend(translated)
                continue
            if compose is not None and compose.namespace is not None:
                errors.append(f"{path}: -n applies to compose files; a spec names its namespace")
                continue
            load_specs(text, path)
            docs.extend(parse_documents(text, path))
        except SpecError as err:
            errors.extend(err.errors)
    if errors:
        _refused(errors)
    return run_async(_diff(opts, docs, ",".join(files)))


async def _diff(opts: ClientOptions, docs: list[Any], source: str) -> bool:
    async with connect(opts) as bus:
        apps = await bus.view(APPS)
        await bus.sync()
        current = dict(apps)
        reply = await _command(
            bus,
            APPLY,
            ApplyCommand(apps=docs, dry_run=True, source=f"cli:{source}"),
            opts.timeout,
        )
    changed = False
    for r in reply.results:
        label = AppKey(r.namespace, r.name)
        now = current.get(label)
        if r.change == "unchanged":
            click.echo(f"  {label}: unchanged (revision {r.revision})")
            continue
        changed = True
        if r.change == "created":
            click.echo(f"+ {label}: would be created as revision {r.revision}")
        elif now is not None and r.revision != now.revision:
            click.echo(f"~ {label}: new revision {r.revision} (now {now.revision}), rolled out")
        else:
            click.echo(f"~ {label}: {r.change} in place (revision {r.revision})")
        for line in r.changes if r.change != "created" else []:
            click.echo(f"    {line}")
    return changed


COMMANDS: list[click.Command] = [rollout, diff]
