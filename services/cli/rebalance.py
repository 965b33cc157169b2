"""``shoal rebalance [--dry-run]``: even out the nodes, answered by the scheduler's leader.

The scheduler plans which replicas move where (``services/scheduler/rebalance.py``) and
moves each as a drain does: the replacement on the target first, the old one stopped once
the app is ready without it.
"""

from __future__ import annotations

import json

import click

from core.channels import REBALANCE
from core.commands import RebalanceCommand, RebalancePlan
from core.errors import RequestTimeout
from core.logs import setup_logging
from services.cli.client import ClientOptions, client_options, connect, err_console, run_async


def render_plan(plan: RebalancePlan) -> str:
    lines = [
        f"{m.replica}  {m.namespace}/{m.app}  {m.source} -> {m.target}  ({m.reason})"
        for m in plan.moves
    ]
    tail = plan.message + (" (dry run: nothing moved)" if plan.dry_run and plan.moves else "")
    return "\n".join([*lines, tail]) + "\n"


@click.command("rebalance")
@click.option("--dry-run", is_flag=True, help="only show the moves")
@click.option(
    "--max-moves",
    type=click.IntRange(1, 1000),
    default=10,
    show_default=True,
    help="most replicas moved",
)
@click.option(
    "--tolerance",
    type=click.FloatRange(0, 1),
    default=0.1,
    show_default=True,
    help="stop once the most and least allocated nodes differ by this fraction or less",
)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
@client_options
def rebalance(
    opts: ClientOptions, dry_run: bool, max_moves: int, tolerance: float, output: str
) -> None:
    """Move replicas to even out the nodes (after nodes joined), each readiness-gated."""
    setup_logging("warning")
    command = RebalanceCommand(
        dry_run=dry_run, max_moves=max_moves, tolerance=tolerance, reason="shoal rebalance"
    )

    async def go() -> RebalancePlan:
        async with connect(opts) as bus:
            try:
                answer = await bus.request(REBALANCE, command, timeout=opts.timeout)
            except RequestTimeout as err:
                raise RequestTimeout(f"{err} (rebalance is answered by the scheduler)") from err
        if not isinstance(answer, RebalancePlan):
            for line in answer.errors or ["refused without a reason"]:
                err_console.print(f"[red]error:[/red] {line}", highlight=False)
            raise SystemExit(1)
        return answer

    plan = run_async(go())
    if output == "json":
        click.echo(json.dumps(plan.model_dump(mode="json"), indent=2))
    else:
        click.echo(render_plan(plan), nl=False)


COMMANDS: list[click.Command] = [rebalance]
