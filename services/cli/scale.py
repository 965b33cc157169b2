"""``shoal scale NAME REPLICAS [-n NS]``: a manual scale, through the controller.

With ``autoscale`` set, the controller accepts a count within ``[min, max]`` and the
autoscaler takes it as its new starting point (see ``services/scaler/README.md``).
"""

from __future__ import annotations

import sys

import click
from pydantic import ValidationError

from core.channels import SCALE
from core.commands import ScaleCommand
from core.keys import AppKey
from core.spec import format_validation_error
from services.cli.client import ClientOptions, client_options, connect, err_console, run_async
from services.cli.completion import complete_app


@click.command()
@click.argument("name", shell_complete=complete_app)
@click.argument("replicas", type=int)
@click.option("-n", "--namespace", default="default", show_default=True)
@client_options
def scale(opts: ClientOptions, name: str, replicas: int, namespace: str) -> None:
    """Set an app's replica count."""
    try:
        command = ScaleCommand(namespace=namespace, name=name, replicas=replicas, source="manual")
    except ValidationError as err:
        for line in format_validation_error(err, "scale"):
            err_console.print(f"[red]error:[/red] {line}", highlight=False, markup=False)
        sys.exit(2)
    run_async(_scale(opts, command))


async def _scale(opts: ClientOptions, command: ScaleCommand) -> None:
    async with connect(opts) as bus:
        reply = await bus.request(SCALE, command, timeout=opts.timeout)
    key = AppKey(command.namespace, command.name)
    if not reply.ok:
        err_console.print(f"[red]error:[/red] {key} was not scaled", highlight=False)
        for line in reply.errors or ["the controller refused without a reason"]:
            err_console.print(f"  - {line}", highlight=False, markup=False)
        sys.exit(1)
    changes = {r.change for r in reply.results}
    what = "unchanged at" if changes == {"unchanged"} else "scaled to"
    revision = f" (revision {reply.revision})" if reply.revision is not None else ""
    click.echo(f"app {key} {what} {command.replicas} replicas{revision}")


COMMANDS = [scale]
