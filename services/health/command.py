from __future__ import annotations

import click

from core.config import ServiceConfig
from core.options import service_options
from core.service import run_service


@click.command("health")
@click.option("--resync", default=10.0, show_default=True, help="seconds between full reconciles")
@service_options
def command(config: ServiceConfig, resync: float) -> None:
    """Probe every replica's readiness and liveness; publish health/<ns>/<app>."""
    from services.health.service import HealthService

    class Configured(HealthService):
        def __init__(self, cfg: ServiceConfig) -> None:
            super().__init__(cfg, resync=resync)

    run_service(Configured, config)
