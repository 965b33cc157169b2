from __future__ import annotations

from pathlib import Path

import click

from core.config import ServiceConfig
from core.options import data_dir_default, service_options
from core.service import run_service
from services.controller.service import ControllerService


@click.command("controller")
@service_options
@click.option(
    "--data-dir",
    envvar="SHOAL_DATA_DIR",
    default=data_dir_default,
    show_default="/var/lib/shoal as root, else $XDG_STATE_HOME/shoal (~/.local/state/shoal)",
    type=click.Path(file_okay=False),
    help="where controller.db (apps and their revision history) lives",
)
@click.option(
    "--store",
    envvar="SHOAL_STORE",
    default=None,
    metavar="URL",
    help="an external store instead of the data dir: postgresql://user:pass@host:port/db "
    "(controllers on several machines share it; one leads)",
)
def command(config: ServiceConfig, data_dir: str, store: str | None) -> None:
    """Validate commands, assign revisions, persist apps, publish desired state, roll out."""

    def factory(cfg: ServiceConfig) -> ControllerService:
        return ControllerService(cfg, Path(data_dir), store=store or None)

    factory.name = ControllerService.name  # type: ignore[attr-defined]
    run_service(factory, config)
