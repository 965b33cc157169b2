from __future__ import annotations

from pathlib import Path

import click

from core.authorizer import Authorizer
from core.config import ServiceConfig
from core.identities import AuthError
from core.options import auth_option, service_options
from core.service import run_service
from services.scheduler.cluster import LOST_GRACE
from services.scheduler.service import SchedulerOptions, SchedulerService


@click.command("scheduler")
@service_options
@click.option(
    "--node-grace",
    type=float,
    default=6.0,
    show_default=True,
    help="seconds without a heartbeat before a node is unreachable (no new replicas; "
    "its replicas that health does not find ready move)",
)
@click.option(
    "--lost-grace",
    type=float,
    default=LOST_GRACE,
    show_default=True,
    help="seconds with no word from a node (last will or silence) before every replica "
    "it runs moves, even those still passing their probes",
)
@click.option(
    "--debounce",
    type=float,
    default=0.05,
    show_default=True,
    help="seconds to batch changes into one assignment message per node",
)
@click.option("--seed", type=int, default=0, show_default=True, help="placement seed")
@click.option(
    "--candidates",
    type=int,
    default=None,
    help="feasible nodes scored per placement [default: max(8, log2 nodes)]",
)
@click.option(
    "--orphan-grace",
    type=float,
    default=5.0,
    show_default=True,
    help="seconds before replicas of apps missing from the broker are removed at start",
)
@auth_option
def command(
    config: ServiceConfig,
    auth_file: Path | None,
    node_grace: float,
    lost_grace: float,
    debounce: float,
    seed: int,
    candidates: int | None,
    orphan_grace: float,
) -> None:
    """Place replicas on nodes and write each node's assignment."""
    try:
        Authorizer(auth_file)
    except AuthError as err:
        raise click.BadParameter(str(err), param_hint="--auth") from err
    options = SchedulerOptions(
        node_grace=node_grace,
        lost_grace=lost_grace,
        debounce=debounce,
        seed=seed,
        candidates=candidates,
        orphan_grace=orphan_grace,
        auth=auth_file,
    )

    class Configured(SchedulerService):
        def __init__(self, cfg: ServiceConfig) -> None:
            super().__init__(cfg, options)

    run_service(Configured, config)
