from __future__ import annotations

import click

from core.config import ServiceConfig
from core.options import service_options
from services.balancer.master import run_master
from services.balancer.policy import ProxyOptions
from services.balancer.service import BalancerOptions


def parse_address(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not host:port", param_hint=option)
    return host.strip("[]") or "0.0.0.0", int(port)


@click.command("balancer")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="user traffic")
@click.option("--admin", default=None, help="host:port for /metrics, /routes, /healthz")
@click.option(
    "--tls-listen",
    default=None,
    metavar="HOST:PORT",
    help="HTTPS (TLS 1.2 and 1.3) for routes with tls: the certificate chosen by SNI",
)
@click.option(
    "--engine",
    default="fast",
    show_default=True,
    type=click.Choice(["fast", "aiohttp"]),
    help="fast: asyncio protocols + httptools; aiohttp: aiohttp server and client",
)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="worker processes under one master that owns the sockets and restarts them",
)
@click.option("--reuse-port", is_flag=True, help="SO_REUSEPORT: several balancers on one port")
@click.option("--connect-timeout", default=2.0, show_default=True, help="seconds")
@click.option("--read-timeout", default=60.0, show_default=True, help="seconds")
@click.option("--max-body", default="100Mi", show_default=True, help="request body limit")
@click.option(
    "--max-connections",
    default=10_000,
    show_default=True,
    type=click.IntRange(1),
    help="client connections per worker; beyond it new ones get 503 and are closed",
)
@click.option(
    "--header-timeout",
    default=10.0,
    show_default=True,
    help="seconds a client has to send a whole request head (then 408)",
)
@click.option("--retries", default=2, show_default=True, help="on other replicas")
@click.option("--eject-seconds", default=3.0, show_default=True)
@click.option("--hold-timeout", default=30.0, show_default=True, help="scale-from-zero wait")
@click.option("--hold-max", default=1000, show_default=True, help="held requests per app")
@click.option(
    "--region",
    default=None,
    help="this balancer's region: replicas on nodes labelled region=REGION first, "
    "the other regions' when none of them is ready",
)
@service_options
def command(
    config: ServiceConfig,
    listen: str,
    admin: str | None,
    tls_listen: str | None,
    engine: str,
    workers: int,
    reuse_port: bool,
    connect_timeout: float,
    read_timeout: float,
    max_body: str,
    max_connections: int,
    header_timeout: float,
    retries: int,
    eject_seconds: float,
    hold_timeout: float,
    hold_max: int,
    region: str | None,
) -> None:
    """Reverse proxy: route by Host and path prefix to ready replicas.

    A small master process binds the sockets and runs ``--workers`` workers that inherit
    them; a worker that dies is restarted while the kernel keeps queueing connections."""
    from core.units import parse_memory

    try:
        body_limit = parse_memory(max_body)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--max-body") from err
    options = BalancerOptions(
        listen=parse_address(listen, "--listen"),
        admin=parse_address(admin, "--admin") if admin else None,
        tls_listen=parse_address(tls_listen, "--tls-listen") if tls_listen else None,
        reuse_port=reuse_port,
        engine=engine,
        region=region or None,
        proxy=ProxyOptions(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_body=body_limit,
            max_connections=max_connections,
            header_timeout=header_timeout,
            retries=retries,
            eject_seconds=eject_seconds,
            hold_timeout=hold_timeout,
            hold_max=hold_max,
        ),
    )
    run_master(config, options, workers)
