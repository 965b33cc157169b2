from __future__ import annotations

import contextlib
import dataclasses
import multiprocessing
import signal
import sys
import time

import click

from core.config import ServiceConfig
from core.options import service_options
from core.service import run_service
from services.balancer.policy import ProxyOptions
from services.balancer.service import BalancerOptions


def parse_address(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not host:port", param_hint=option)
    return host.strip("[]") or "0.0.0.0", int(port)


def _run(config: ServiceConfig, options: BalancerOptions) -> None:
    from services.balancer.service import BalancerService

    class Configured(BalancerService):
        def __init__(self, cfg: ServiceConfig) -> None:
            super().__init__(cfg, options)

    run_service(Configured, config)


def _worker(config: ServiceConfig, options: BalancerOptions) -> None:
    """A ``--workers`` child: dies with its supervisor (Linux ``PR_SET_PDEATHSIG``)."""
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PDEATHSIG
    _run(config, options)


def _supervise(config: ServiceConfig, options: BalancerOptions, workers: int) -> None:
    """``--workers N``: N processes share the listen port (SO_REUSEPORT); worker i serves
    admin on admin port + i and is its own bus instance ``<instance>-w<i>``."""
    ctx = multiprocessing.get_context("spawn")
    procs = []
    for i in range(workers):
        admin = options.admin
        if admin is not None:
            admin = (admin[0], admin[1] + i)
        opts = dataclasses.replace(options, admin=admin, reuse_port=True)
        cfg = dataclasses.replace(config, instance=f"{config.instance}-w{i}")
        proc = ctx.Process(target=_worker, args=(cfg, opts), name=f"balancer-w{i}")
        proc.start()
        procs.append(proc)

    def forward(signum: int, _: object) -> None:
        for p in procs:
            if p.is_alive() and p.pid is not None:
                p.terminate() if signum == signal.SIGTERM else _interrupt(p.pid)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    code = 0
    while procs:
        for p in list(procs):
            p.join(0.2)
            if p.exitcode is not None:
                procs.remove(p)
                code = code or p.exitcode
                if procs and p.exitcode != 0:
                    forward(signal.SIGTERM, None)
        time.sleep(0.05)
    sys.exit(code)


def _interrupt(pid: int) -> None:
    import os

    os.kill(pid, signal.SIGINT)


@click.command("balancer")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="user traffic")
@click.option("--admin", default=None, help="host:port for /metrics, /routes, /healthz")
@click.option(
    "--engine",
    default="fast",
    show_default=True,
    type=click.Choice(["fast", "aiohttp"]),
    help="fast: asyncio protocols + httptools; aiohttp: aiohttp server and client",
)
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--reuse-port", is_flag=True, help="SO_REUSEPORT: several balancers on one port")
@click.option("--connect-timeout", default=2.0, show_default=True, help="seconds")
@click.option("--read-timeout", default=60.0, show_default=True, help="seconds")
@click.option("--max-body", default="100Mi", show_default=True, help="request body limit")
@click.option("--retries", default=2, show_default=True, help="on other replicas")
@click.option("--eject-seconds", default=3.0, show_default=True)
@click.option("--hold-timeout", default=30.0, show_default=True, help="scale-from-zero wait")
@click.option("--hold-max", default=1000, show_default=True, help="held requests per app")
@service_options
def command(
    config: ServiceConfig,
    listen: str,
    admin: str | None,
    engine: str,
    workers: int,
    reuse_port: bool,
    connect_timeout: float,
    read_timeout: float,
    max_body: str,
    retries: int,
    eject_seconds: float,
    hold_timeout: float,
    hold_max: int,
) -> None:
    """Reverse proxy: route by Host and path prefix to ready replicas."""
    from core.units import parse_memory

    try:
        body_limit = parse_memory(max_body)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--max-body") from err
    options = BalancerOptions(
        listen=parse_address(listen, "--listen"),
        admin=parse_address(admin, "--admin") if admin else None,
        reuse_port=reuse_port,
        engine=engine,
        proxy=ProxyOptions(
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_body=body_limit,
            retries=retries,
            eject_seconds=eject_seconds,
            hold_timeout=hold_timeout,
            hold_max=hold_max,
        ),
    )
    if workers > 1:
        _supervise(config, options, workers)
    else:
        _run(config, options)
