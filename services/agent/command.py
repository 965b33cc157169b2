"""``shoal run agent --node-id ID --address IP [--labels k=v,...] [--cpus N] [--memory 4Gi]``."""

from __future__ import annotations

from pathlib import Path

import click

from core.config import ServiceConfig
from core.options import service_options
from core.service import run_service
from core.state import check_node_id
from core.units import parse_cpu, parse_memory
from services.agent.containers import DEFAULT_LIMITS, ContainerLimits
from services.agent.plan import RestartPolicy
from services.agent.registry import Credential, parse_auth_flag, parse_auth_lines, parse_config


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{item!r} must look like key=value", param_hint="--labels")
        labels[key] = value
    return labels


def registry_credentials(
    config: Path | None, auth_file: Path | None, entries: tuple[str, ...]
) -> dict[str, Credential]:
    """Registry logins: the config.json-style file, then the entries file, then the
    ``host=user:password`` entries (a later source wins for the same registry)."""
    credentials: dict[str, Credential] = {}
    try:
        if config is not None:
            credentials.update(parse_config(_read(config, "--registry-config")))
        if auth_file is not None:
            text = _read(auth_file, "--registry-auth-file")
            credentials.update(parse_auth_lines(text, str(auth_file)))
        for entry in entries:
            host, credential = parse_auth_flag(entry)
            credentials[host] = credential
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--registry-auth") from err
    return credentials


def _read(path: Path, option: str) -> str:
    try:
        return path.read_text()
    except OSError as err:
        raise click.BadParameter(f"{path}: {err.strerror}", param_hint=option) from err


@click.command("agent")
@service_options
@click.option(
    "--node-id", required=True, envvar="SHOAL_NODE_ID", show_envvar=True, help="this node's id"
)
@click.option(
    "--address",
    required=True,
    envvar="SHOAL_NODE_ADDRESS",
    show_envvar=True,
    help="advertise address: container ports are published on it",
)
@click.option("--labels", default="", help="node labels, k=v,k2=v2 (placement constraints)")
@click.option("--cpus", default=None, help="CPU capacity (default: the engine's CPUs)")
@click.option("--memory", default=None, help="memory capacity, e.g. 4Gi (default: the engine's)")
@click.option(
    "--docker",
    default="unix:///var/run/docker.sock",
    envvar="SHOAL_DOCKER",
    show_envvar=True,
    show_default=True,
    help="Docker engine URL (unix:// or tcp://)",
)
@click.option("--heartbeat", default=2.0, show_default=True, help="seconds between node infos")
@click.option("--resync", default=10.0, show_default=True, help="seconds between full resyncs")
@click.option("--stats-interval", default=5.0, show_default=True, help="seconds between metrics")
@click.option("--restart-initial", default=0.25, show_default=True, help="first restart delay")
@click.option("--restart-cap", default=30.0, show_default=True, help="longest restart delay")
@click.option(
    "--restart-reset",
    default=10.0,
    show_default=True,
    help="a replica that ran this long restarts fast again",
)
@click.option(
    "--registry-auth",
    multiple=True,
    envvar="SHOAL_REGISTRY_AUTH",
    show_envvar=True,
    help="host=user:password for a private registry (repeatable; the variable: entries "
    "separated by spaces). On the command line it is visible in ps: prefer the variable "
    "or --registry-auth-file",
)
@click.option(
    "--registry-auth-file",
    envvar="SHOAL_REGISTRY_AUTH_FILE",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="a file of host=user:password entries, one a line (# comments); mode 0600",
)
@click.option(
    "--registry-config",
    envvar="SHOAL_REGISTRY_CONFIG",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help='Docker config.json-style credentials file ({"auths": {...}})',
)
@click.option(
    "--pids-limit",
    default=DEFAULT_LIMITS.pids,
    show_default=True,
    type=click.IntRange(min=1),
    help="most processes a container may run (every container gets it)",
)
@click.option(
    "--log-max-size",
    default=DEFAULT_LIMITS.log_max_size,
    show_default=True,
    help="largest container log file before rotation (json-file driver), e.g. 10m",
)
@click.option(
    "--log-max-files",
    default=DEFAULT_LIMITS.log_max_files,
    show_default=True,
    type=click.IntRange(min=1),
    help="rotated log files kept per container",
)
@click.option(
    "--secrets-dir",
    envvar="SHOAL_SECRETS_DIR",
    default=None,
    type=click.Path(file_okay=False, path_type=Path),
    help="where replicas' secret files are kept; must be in memory (tmpfs)  "
    "[default: /run/shoal/secrets if /run is a tmpfs, else /dev/shm/shoal/secrets]",
)
@click.option(
    "--mesh/--no-mesh",
    default=False,
    show_default=True,
    help="attach containers to their namespace network of the node's mesh (app names)",
)
def command(
    config: ServiceConfig,
    node_id: str,
    address: str,
    labels: str,
    cpus: str | None,
    memory: str | None,
    docker: str,
    heartbeat: float,
    resync: float,
    stats_interval: float,
    restart_initial: float,
    restart_cap: float,
    restart_reset: float,
    registry_auth: tuple[str, ...],
    registry_auth_file: Path | None,
    registry_config: Path | None,
    pids_limit: int,
    log_max_size: str,
    log_max_files: int,
    secrets_dir: Path | None,
    mesh: bool,
) -> None:
    """Run the node agent: make the Docker engine match this node's assignment."""
    from services.agent.node import AgentOptions
    from services.agent.service import AgentService

    try:
        check_node_id(node_id)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--node-id") from err
    try:
        cpu_value = parse_cpu(cpus) if cpus is not None else None
        memory_value = parse_memory(memory) if memory is not None else None
    except ValueError as err:
        raise click.BadParameter(str(err)) from err
    if registry_auth and (
        click.get_current_context().get_parameter_source("registry_auth")
        == click.core.ParameterSource.COMMANDLINE
    ):
        click.echo(
            "shoal agent: warning: --registry-auth on the command line: every user of this "
            "machine sees the password in ps; use $SHOAL_REGISTRY_AUTH or --registry-auth-file",
            err=True,
        )
    credentials = registry_credentials(registry_config, registry_auth_file, registry_auth)
    try:
        limits = ContainerLimits(
            pids=pids_limit, log_max_size=log_max_size, log_max_files=log_max_files
        )
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--log-max-size") from err
    options = AgentOptions(
        node_id=node_id,
        address=address,
        labels=parse_labels(labels),
        cpus=cpu_value,
        memory=memory_value,
        docker=docker,
        heartbeat=heartbeat,
        resync=resync,
        stats_interval=stats_interval,
        restart=RestartPolicy(initial=restart_initial, cap=restart_cap, reset_after=restart_reset),
        registry_auth=credentials,
        limits=limits,
        secrets_dir=secrets_dir,
        mesh=mesh,
    )

    def factory(cfg: ServiceConfig) -> AgentService:
        return AgentService(cfg, options)

    factory.name = AgentService.name  # type: ignore[attr-defined]
    run_service(factory, config)
