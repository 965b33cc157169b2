from __future__ import annotations

import click

from core.config import ServiceConfig
from core.mesh import DEFAULT_POOL
from core.options import service_options
from core.service import run_service


@click.command("mesh")
@click.option("--node-id", required=True, envvar="SHOAL_NODE_ID", help="the node this mesh serves")
@click.option(
    "--docker",
    default="unix:///var/run/docker.sock",
    show_default=True,
    envvar="DOCKER_HOST",
    help="the node's Docker engine",
)
@click.option(
    "--mesh-pool",
    default=DEFAULT_POOL,
    show_default=True,
    help="where namespace networks take their /24s from",
)
@click.option("--resync", default=10.0, show_default=True, help="seconds between full reconciles")
@service_options
def command(
    config: ServiceConfig, node_id: str, docker: str, mesh_pool: str, resync: float
) -> None:
    """East-west traffic on one node: namespace networks, app names (DNS), VIPs and relays."""
    from services.mesh.service import MeshService

    class Configured(MeshService):
        def __init__(self, cfg: ServiceConfig) -> None:
            super().__init__(cfg, node=node_id, docker=docker, pool=mesh_pool, resync=resync)

    run_service(Configured, config)
