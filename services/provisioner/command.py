"""``shoal run provisioner`` / ``python -m services.provisioner``."""

from __future__ import annotations

import shlex
from typing import Any
from urllib.parse import quote, urlencode

import click

from core.config import BrokerURL, ServiceConfig
from core.options import service_options
from core.service import run_service
from core.units import parse_cpu, parse_duration, parse_memory
from services.provisioner.decide import Limits, Size
from services.provisioner.providers.base import NodeProvider
from services.provisioner.providers.command import CommandProvider
from services.provisioner.providers.local import LocalProvider
from services.provisioner.service import ProvisionerService, ProvisionerSettings


class Duration(click.ParamType):  # type: ignore[type-arg]
    name = "duration"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, float):
            return value
        try:
            return parse_duration(value)
        except ValueError as err:
            self.fail(str(err), param, ctx)


DURATION = Duration()


def parse_size(text: str) -> Size:
    """``NAME=CPU,MEMORY[,PRICE]``: ``small=1,1Gi,0.05`` (price per hour, default 0)."""
    name, sep, rest = text.partition("=")
    parts = [p.strip() for p in rest.split(",")]
    if not sep or not name or len(parts) not in (2, 3):
        raise ValueError(
            f"size {text!r} must look like NAME=CPU,MEMORY[,PRICE], e.g. small=1,1Gi,0.05"
        )
    price = float(parts[2]) if len(parts) == 3 else 0.0
    if not price >= 0 or price == float("inf"):
        raise ValueError(f"size {text!r}: the price must be a number >= 0")
    return Size(
        name=name.strip(), cpu=parse_cpu(parts[0]), memory=parse_memory(parts[1]), price=price
    )


def parse_labels(text: str) -> tuple[tuple[str, str], ...]:
    labels: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"label {item!r} must look like key=value")
        labels[key] = value
    return tuple(sorted(labels.items()))


def broker_url(broker: BrokerURL) -> str:
    """The whole URL again (with its password and files), for the agents' environment."""
    auth = ""
    if broker.username:
        auth = quote(broker.username, safe="")
        if broker.password:
            auth += ":" + quote(broker.password, safe="")
        auth += "@"
    query = {
        k: v
        for k, v in (
            ("ca", broker.ca_file),
            ("cert", broker.cert_file),
            ("key", broker.key_file),
            ("insecure", "1" if broker.insecure else None),
        )
        if v
    }
    scheme = "mqtts" if broker.tls else "mqtt"
    tail = f"?{urlencode(query)}" if query else ""
    return f"{scheme}://{auth}{broker.host}:{broker.port}{tail}"


class _Factory:
    name = ProvisionerService.name

    def __init__(
        self, settings: ProvisionerSettings, provider: str, options: dict[str, Any]
    ) -> None:
        self.settings = settings
        self.provider = provider
        self.options = options

    def __call__(self, config: ServiceConfig) -> ProvisionerService:
        provider: NodeProvider
        if self.provider == "command":
            provider = CommandProvider(
                self.options["argv"], config.prefix, timeout=self.options["timeout"]
            )
        else:
            if not isinstance(config.broker, BrokerURL):
                raise click.UsageError("--provider local needs a broker URL")
            provider = LocalProvider(
                {"SHOAL_BROKER": broker_url(config.broker)},
                config.prefix,
                first_address=self.options["first_address"],
                agent_args=self.options["agent_args"],
            )
        return ProvisionerService(config, self.settings, provider)


@click.command("provisioner")
@service_options
@click.option(
    "--provider",
    type=click.Choice(["local", "command"]),
    default="local",
    show_default=True,
    help="where nodes come from: agents on this machine, or an operator's executable",
)
@click.option(
    "--provider-command",
    envvar="SHOAL_PROVIDER_COMMAND",
    show_envvar=True,
    default=None,
    help="with --provider command: the executable (and its arguments) called with JSON",
)
@click.option(
    "--provider-timeout",
    type=DURATION,
    default="10m",
    show_default=True,
    help="longest a provider call may take",
)
@click.option(
    "--size",
    "sizes",
    multiple=True,
    default=("standard=2,4Gi,0",),
    show_default=True,
    help="a node size NAME=CPU,MEMORY[,PRICE per hour] (repeatable)",
)
@click.option("--min-nodes", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--max-nodes", type=click.IntRange(min=1), default=10, show_default=True)
@click.option(
    "--budget",
    type=click.FloatRange(min=0),
    default=None,
    help="most the provider's nodes may cost per hour (in the sizes' price unit)",
)
@click.option(
    "--scale-up-cooldown",
    type=DURATION,
    default="10s",
    show_default=True,
    help="least time between two nodes asked for",
)
@click.option(
    "--scale-down-cooldown",
    type=DURATION,
    default="1m",
    show_default=True,
    help="least time after a node was added or removed before one is removed",
)
@click.option(
    "--scale-down-after",
    "low_for",
    type=DURATION,
    default="1m",
    show_default=True,
    help="how long a node stays empty or under-used before it is removed",
)
@click.option(
    "--low-utilization",
    type=click.FloatRange(min=0, max=1),
    default=0.5,
    show_default=True,
    help="a node whose CPU and memory requests are below this fraction is under-used",
)
@click.option(
    "--consolidate/--no-consolidate",
    default=True,
    show_default=True,
    help="also drain under-used nodes that are not empty (their replicas must fit elsewhere)",
)
@click.option(
    "--join-timeout",
    type=DURATION,
    default="5m",
    show_default=True,
    help="a node not ready this long after it was asked for is deleted",
)
@click.option(
    "--rebalance/--no-rebalance",
    default=False,
    show_default=True,
    help="after nodes join, have the scheduler move replicas onto them (shoal rebalance)",
)
@click.option(
    "--rebalance-after",
    type=DURATION,
    default="5s",
    show_default=True,
    help="how long after a node joined (and nothing is pending) the rebalance is asked for",
)
@click.option("--node-labels", default="", help="labels of every node made, k=v,k2=v2")
@click.option("--node-prefix", default="auto-", show_default=True, help="ids of nodes made")
@click.option("--interval", type=DURATION, default="1s", show_default=True)
@click.option(
    "--list-interval",
    type=DURATION,
    default="30s",
    show_default=True,
    help="how often the provider's list of nodes is read again",
)
@click.option(
    "--local-first-address",
    default="127.0.0.10",
    show_default=True,
    help="with --provider local: the first advertise address handed out",
)
@click.option(
    "--local-agent-arg",
    "agent_args",
    multiple=True,
    help="with --provider local: an extra argument for every agent (repeatable)",
)
def command(
    config: ServiceConfig,
    provider: str,
    provider_command: str | None,
    provider_timeout: float,
    sizes: tuple[str, ...],
    min_nodes: int,
    max_nodes: int,
    budget: float | None,
    scale_up_cooldown: float,
    scale_down_cooldown: float,
    low_for: float,
    low_utilization: float,
    consolidate: bool,
    join_timeout: float,
    rebalance: bool,
    rebalance_after: float,
    node_labels: str,
    node_prefix: str,
    interval: float,
    list_interval: float,
    local_first_address: str,
    agent_args: tuple[str, ...],
) -> None:
    """Add nodes when replicas cannot be placed; drain and remove nodes left under-used."""
    try:
        parsed = tuple(parse_size(s) for s in sizes)
        labels = parse_labels(node_labels)
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    if len({s.name for s in parsed}) != len(parsed):
        raise click.UsageError("two --size options have the same name")
    if min_nodes > max_nodes:
        raise click.UsageError("--min-nodes is above --max-nodes")
    if interval <= 0 or list_interval <= 0:
        raise click.UsageError("--interval and --list-interval must be > 0")
    options: dict[str, Any] = {
        "timeout": provider_timeout,
        "first_address": local_first_address,
        "agent_args": list(agent_args),
    }
    if provider == "command":
        if not provider_command:
            raise click.UsageError("--provider command needs --provider-command")
        options["argv"] = shlex.split(provider_command)
    else:
        if isinstance(config.broker, BrokerURL) and config.broker.username:
            raise click.UsageError(
                "--provider local starts agents without identities of their own, and this "
                "broker asks for one (its URL has a user): every node needs its own "
                "(`shoal auth add-node NODE`). Use --provider command, whose executable "
                "gives each new machine its node's credentials."
            )
        import ipaddress

        try:
            if not ipaddress.IPv4Address(local_first_address).is_loopback:
                raise ValueError("it is not a loopback address (127.x)")
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--local-first-address") from err
    limits = Limits(
        min_nodes=min_nodes,
        max_nodes=max_nodes,
        budget=budget,
        up_cooldown=scale_up_cooldown,
        down_cooldown=scale_down_cooldown,
        low_for=low_for,
        low_utilization=low_utilization,
        consolidate=consolidate,
        join_timeout=join_timeout,
        rebalance=rebalance,
        rebalance_after=rebalance_after,
        labels=labels,
    )
    settings = ProvisionerSettings(
        sizes=parsed,
        limits=limits,
        interval=interval,
        list_interval=list_interval,
        node_prefix=node_prefix,
    )
    run_service(_Factory(settings, provider, options), config)
