from __future__ import annotations

import os
from pathlib import Path

import click

from core.config import ServiceConfig
from core.options import service_options
from services.balancer import admin_auth
from services.balancer.master import run_master
from services.balancer.policy import ProxyOptions
from services.balancer.service import BalancerOptions


def parse_address(value: str, option: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise click.BadParameter(f"{value!r} is not host:port", param_hint=option)
    return host.strip("[]") or "0.0.0.0", int(port)


def parse_admin(value: str, token: str | None) -> tuple[str, int]:
    """``--admin``: ``PORT`` or ``:PORT`` is on loopback; beyond it only with a token."""
    if value.isdigit():
        value = f":{value}"
    host, port = parse_address(value, "--admin")
    if value.startswith(":"):
        host = admin_auth.DEFAULT_HOST
    refusal = admin_auth.bind_refusal(host, token)
    if refusal is not None:
        raise click.BadParameter(refusal, param_hint="--admin")
    return host, port


def admin_token(path: Path | None) -> str | None:
    """The admin token: ``--admin-token-file``, else ``$SHOAL_BALANCER_ADMIN_TOKEN`` (never a
    command-line value, which ``ps`` shows)."""
    try:
        if path is not None:
            return admin_auth.read_token(path.read_text())
        text = os.environ.get("SHOAL_BALANCER_ADMIN_TOKEN", "")
        return admin_auth.read_token(text) if text.strip() else None
    except OSError as err:
        raise click.BadParameter(
            f"{path}: {err.strerror}", param_hint="--admin-token-file"
        ) from err
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--admin-token-file") from err


@click.command("balancer")
@click.option("--listen", default="127.0.0.1:8080", show_default=True, help="user traffic")
@click.option(
    "--admin",
    default=None,
    metavar="[HOST:]PORT",
    help="/metrics, /routes, /healthz; HOST defaults to 127.0.0.1, and any address beyond "
    "loopback needs an admin token",
)
@click.option(
    "--tls-listen",
    default=None,
    metavar="HOST:PORT",
    help="HTTPS (TLS 1.2 and 1.3) for routes with tls: the certificate chosen by SNI",
)
@click.option(
    "--acme-directory",
    default=None,
    envvar="SHOAL_ACME_DIRECTORY",
    show_envvar=True,
    metavar="URL",
    help="ACME (RFC 8555) directory: certificates for routes with tls: {acme: true}",
)
@click.option(
    "--acme-email",
    default=None,
    envvar="SHOAL_ACME_EMAIL",
    show_envvar=True,
    help="contact e-mail of the ACME account",
)
@click.option(
    "--acme-ca-file",
    default=None,
    envvar="SHOAL_ACME_CA_FILE",
    show_envvar=True,
    type=click.Path(exists=True, dir_okay=False),
    help="CA bundle for the ACME server's HTTPS (a private or test server); default: system",
)
@click.option(
    "--acme-storage",
    default=None,
    envvar="SHOAL_ACME_STORAGE",
    show_envvar=True,
    type=click.Path(file_okay=False),
    help="directory keeping the ACME account key and certificates (0600) across restarts",
)
@click.option(
    "--acme-retry",
    default=60.0,
    show_default=True,
    envvar="SHOAL_ACME_RETRY",
    show_envvar=True,
    type=click.FloatRange(min=1),
    help="seconds before retrying a failed order, doubled per failure up to 6 hours",
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
# -- what the balancer tells about itself (grouped: admin endpoint, response headers) ------
@click.option(
    "--admin-token-file",
    envvar="SHOAL_BALANCER_ADMIN_TOKEN_FILE",
    show_envvar=True,
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="a file whose first line is the token the admin endpoint asks for (Authorization: "
    "Bearer TOKEN; /healthz needs none); or the token itself in $SHOAL_BALANCER_ADMIN_TOKEN",
)
@click.option(
    "--replica-header/--no-replica-header",
    envvar="SHOAL_BALANCER_REPLICA_HEADER",
    show_envvar=True,
    default=True,
    show_default=True,
    help="add X-Shoal-Replica (the id of the replica that answered) to every proxied response",
)
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
    acme_directory: str | None,
    acme_email: str | None,
    acme_ca_file: str | None,
    acme_storage: str | None,
    acme_retry: float,
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
    admin_token_file: Path | None,
    replica_header: bool,
    region: str | None,
) -> None:
    """Reverse proxy: route by Host and path prefix to ready replicas.

    A small master process binds the sockets and runs ``--workers`` workers that inherit
    them; a worker that dies is restarted while the kernel keeps queueing connections."""
    from core.units import parse_memory
    from services.balancer.acme_manager import AcmeSettings

    acme = None
    if acme_directory is not None:
        if not acme_email:
            raise click.UsageError("--acme-directory needs --acme-email (the account's contact)")
        if tls_listen is None:
            raise click.UsageError("--acme-directory needs --tls-listen (where certificates serve)")
        if workers > 1 and acme_storage is None:
            raise click.UsageError(
                "--acme-directory with --workers > 1 needs --acme-storage: the first worker "
                "orders certificates and the others load them from there"
            )
        acme = AcmeSettings(
            directory=acme_directory,
            email=acme_email,
            ca_file=acme_ca_file,
            storage=acme_storage,
            retry=acme_retry,
        )

    try:
        body_limit = parse_memory(max_body)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--max-body") from err
    token = admin_token(admin_token_file)
    admin_address = parse_admin(admin, token) if admin else None
    options = BalancerOptions(
        listen=parse_address(listen, "--listen"),
        admin=admin_address,
        admin_token=token,
        tls_listen=parse_address(tls_listen, "--tls-listen") if tls_listen else None,
        reuse_port=reuse_port,
        engine=engine,
        acme=acme,
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
            expose_replica=replica_header,
        ),
    )
    run_master(config, options, workers)
