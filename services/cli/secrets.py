"""``shoal secret create|ls|rm``: secrets, kept (encrypted) by the controller.

``create`` also gives an existing secret a new value: every app using it rolls to a new
revision. No command ever prints a value; ``ls`` shows names, versions, sizes and users.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path

import click
from pydantic import ValidationError
from rich.markup import escape
from rich.table import Table

from core.bus import Bus
from core.channels import SECRET_KEY, SECRET_LS, SECRET_PUT, SECRET_RM
from core.commands import Reply
from core.sealing import Sealer, SealError
from core.secrets import (
    MAX_SECRET_BYTES,
    SecretDelete,
    SecretKeyInfo,
    SecretKeyQuery,
    SecretList,
    SecretPut,
    SecretPutResult,
    SecretQuery,
    put_label,
)
from core.spec import format_validation_error
from services.cli.client import (
    ClientOptions,
    client_options,
    connect,
    console,
    err_console,
    print_json,
    run_async,
)


def _fail(lines: list[str], head: str) -> None:
    err_console.print(f"[red]error:[/red] {escape(head)}", highlight=False)
    for line in lines or ["the controller refused without a reason"]:
        err_console.print(f"  - {line}", highlight=False, markup=False)
    sys.exit(1)


def _time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@click.group("secret")
def secret() -> None:
    """Secrets apps mount at /run/secrets/<name> (or get as env): create, ls, rm."""


@secret.command("create")
@click.argument("name")
@click.option("-n", "--namespace", default="default", show_default=True)
@click.option(
    "--from-file",
    "from_file",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True, path_type=Path),
    help="the value is this file's bytes ('-': standard input)",
)
@click.option(
    "--from-literal",
    "from_literal",
    metavar="VALUE",
    help="the value as given (ps and the shell's history see it: prefer --from-file, or "
    "'--from-file -' to pipe it in)",
)
@client_options
def create(
    opts: ClientOptions,
    name: str,
    namespace: str,
    from_file: Path | None,
    from_literal: str | None,
) -> None:
    """Create secret NAME, or give it a new value (the apps using it roll)."""
    if (from_file is None) == (from_literal is None):
        raise click.UsageError("give exactly one of --from-file PATH or --from-literal VALUE")
    if from_file is not None:
        try:
            value = sys.stdin.buffer.read() if str(from_file) == "-" else from_file.read_bytes()
        except OSError as err:
            raise click.BadParameter(
                f"{from_file}: {err.strerror}", param_hint="--from-file"
            ) from err
    else:
        value = (from_literal or "").encode()
    if len(value) > MAX_SECRET_BYTES:
        raise click.BadParameter(
            f"the value is {len(value)} bytes; a secret holds at most {MAX_SECRET_BYTES}"
        )
    try:
        SecretDelete(namespace=namespace, name=name)  # the name and namespace, checked
    except ValidationError as err:
        for line in format_validation_error(err, "secret"):
            err_console.print(f"[red]error:[/red] {line}", highlight=False, markup=False)
        sys.exit(2)
    run_async(_create(opts, namespace, name, value))


async def put_secret(
    bus: Bus, namespace: str, name: str, value: bytes, timeout: float, source: str = "cli"
) -> SecretPutResult | Reply:
    """Seal ``value`` to the controller's key and store it: the value crosses the bus as
    ciphertext only."""
    key = await bus.request(SECRET_KEY, SecretKeyQuery(), timeout=timeout)
    if isinstance(key, Reply):
        return key
    assert isinstance(key, SecretKeyInfo)
    try:
        sealer = Sealer(key.public_key)
    except SealError as err:
        return Reply(ok=False, errors=[f"the controller's key is unusable: {err}"])
    body = SecretPut(
        namespace=namespace,
        name=name,
        sender=sealer.public_key,
        sealed=sealer.seal(value, put_label(namespace, name)),
        source=source,
    )
    answer = await bus.request(SECRET_PUT, body, timeout=timeout)
    assert isinstance(answer, SecretPutResult | Reply)
    return answer


async def _create(opts: ClientOptions, namespace: str, name: str, value: bytes) -> None:
    async with connect(opts) as bus:
        answer = await put_secret(bus, namespace, name, value, opts.timeout)
    label = f"{namespace}/{name}"
    if isinstance(answer, Reply):
        _fail(answer.errors, f"secret {label} was not stored")
        return
    assert isinstance(answer, SecretPutResult)
    click.echo(f"secret {label} {answer.change} (version {answer.version})")
    for app in answer.rolled:
        if any(line.startswith("secrets") for line in app.changes):
            click.echo(f"  app {app.namespace}/{app.name}: rolling to revision {app.revision}")
        else:  # only its route's certificate: the balancers reload it, nothing restarts
            click.echo(f"  app {app.namespace}/{app.name}: route certificate updated")


@secret.command("ls")
@click.option("-n", "--namespace", default=None, help="one namespace  [default: all]")
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@client_options
def ls(opts: ClientOptions, namespace: str | None, output: str) -> None:
    """List secrets: names, versions, sizes and the apps using them (never values)."""
    run_async(_ls(opts, namespace, output))


async def _ls(opts: ClientOptions, namespace: str | None, output: str) -> None:
    async with connect(opts) as bus:
        answer = await bus.request(
            SECRET_LS, SecretQuery(namespace=namespace), timeout=opts.timeout
        )
    if isinstance(answer, Reply):
        _fail(answer.errors, "secrets not listed")
        return
    assert isinstance(answer, SecretList)
    if output == "json":
        print_json(answer.model_dump(mode="json"))
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in ("NAMESPACE", "NAME", "VERSION", "SIZE", "UPDATED", "USED BY"):
        table.add_column(column)
    for s in answer.secrets:
        table.add_row(
            s.namespace,
            s.name,
            str(s.version),
            str(s.size),
            _time(s.updated),
            ", ".join(s.used_by) or "-",
        )
    console.print(table)


@secret.command("rm")
@click.argument("name")
@click.option("-n", "--namespace", default="default", show_default=True)
@client_options
def rm(opts: ClientOptions, name: str, namespace: str) -> None:
    """Delete secret NAME (refused while an app uses it)."""
    try:
        body = SecretDelete(namespace=namespace, name=name)
    except ValidationError as err:
        for line in format_validation_error(err, "secret"):
            err_console.print(f"[red]error:[/red] {line}", highlight=False, markup=False)
        sys.exit(2)
    run_async(_rm(opts, body))


async def _rm(opts: ClientOptions, body: SecretDelete) -> None:
    async with connect(opts) as bus:
        answer = await bus.request(SECRET_RM, body, timeout=opts.timeout)
    label = f"{body.namespace}/{body.name}"
    if not answer.ok:
        _fail(answer.errors, f"secret {label} was not deleted")
    click.echo(f"secret {label} deleted")


COMMANDS = [secret]
