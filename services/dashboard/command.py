"""``shoal run dashboard`` / ``python -m services.dashboard``."""

from __future__ import annotations

import click

from core.config import ServiceConfig
from core.options import service_options
from core.service import run_service
from services.dashboard.authz import Role
from services.dashboard.service import DashboardService, DashboardSettings


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise click.BadParameter(f"{value!r} is not HOST:PORT", param_hint="--listen")
    return host.strip("[]") or "127.0.0.1", int(port)


@click.command("dashboard")
@service_options
@click.option(
    "--listen",
    envvar="SHOAL_DASHBOARD_LISTEN",
    show_envvar=True,
    default="127.0.0.1:8081",
    show_default=True,
    help="HOST:PORT of the web dashboard (port 0: any free port)",
)
@click.option(
    "--read-only",
    envvar="SHOAL_DASHBOARD_READ_ONLY",
    show_envvar=True,
    is_flag=True,
    help="show everything, refuse every action",
)
@click.option(
    "--namespaces",
    envvar="SHOAL_DASHBOARD_NAMESPACES",
    show_envvar=True,
    default="",
    metavar="NS,NS",
    help="act only on apps of these namespaces (no node actions)  [default: every namespace]",
)
def command(config: ServiceConfig, listen: str, read_only: bool, namespaces: str) -> None:
    """Serve the live web dashboard: nodes, apps, replicas, events; scale, roll, drain."""
    host, port = parse_listen(listen)
    settings = DashboardSettings(host=host, port=port, role=Role.parse(read_only, namespaces))

    def factory(cfg: ServiceConfig) -> DashboardService:
        return DashboardService(cfg, settings)

    factory.name = DashboardService.name  # type: ignore[attr-defined]
    run_service(factory, config)
