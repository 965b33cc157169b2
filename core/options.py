"""Command-line options every service shares (click), turned into a ``ServiceConfig``."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import click

from core.config import (
    DEFAULT_BROKER,
    BrokerURL,
    ConfigError,
    ServiceConfig,
    default_instance,
    with_credentials,
)
from core.metrics import parse_listen


def service_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """Add ``--broker --prefix --instance --metrics --log-level --log-format``; pass
    ``config``."""

    @click.option(
        "--broker",
        envvar="SHOAL_BROKER",
        show_envvar=True,
        default=DEFAULT_BROKER,
        show_default=True,
        help="mqtt://[user:pass@]host[:port] or mqtts://...[?ca=FILE]",
    )
    @click.option(
        "--broker-credentials",
        envvar="SHOAL_BROKER_CREDENTIALS",
        show_envvar=True,
        default=None,
        metavar="FILE",
        help="a file of USERNAME:PASSWORD for the broker (`shoal auth` writes them), "
        "instead of a password in the URL, which `ps` shows",
    )
    @click.option(
        "--prefix",
        envvar="SHOAL_PREFIX",
        show_envvar=True,
        default="shoal",
        show_default=True,
        help="topic prefix; two clusters can share a broker under two prefixes",
    )
    @click.option(
        "--instance",
        envvar="SHOAL_INSTANCE",
        show_envvar=True,
        default=None,
        help="instance name (default: host-pid-random)",
    )
    @click.option(
        "--metrics",
        "metrics_listen",
        envvar="SHOAL_METRICS",
        show_envvar=True,
        default="127.0.0.1:0",
        show_default=True,
        help="HOST:PORT for this service's Prometheus /metrics (port 0: any free one, "
        "announced in its presence); 'off' for none",
    )
    @click.option(
        "--log-level",
        envvar="SHOAL_LOG_LEVEL",
        show_envvar=True,
        default="info",
        show_default=True,
        type=click.Choice(["debug", "info", "warning", "error"]),
    )
    @click.option(
        "--log-format",
        envvar="SHOAL_LOG_FORMAT",
        show_envvar=True,
        default="console",
        show_default=True,
        type=click.Choice(["console", "json"]),
    )
    @functools.wraps(func)
    def wrapper(
        broker: str,
        broker_credentials: str | None,
        prefix: str,
        instance: str | None,
        log_level: str,
        log_format: str,
        metrics_listen: str,
        **kwargs: Any,
    ) -> Any:
        try:
            metrics = parse_listen(metrics_listen)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint="--metrics") from err
        try:
            config = ServiceConfig(
                broker=with_credentials(BrokerURL.parse(broker), broker_credentials),
                prefix=prefix,
                instance=instance or default_instance(),
                log_level=log_level,
                log_format=log_format,  # type: ignore[arg-type]
                metrics=metrics,
            )
        except ConfigError as err:
            raise click.BadParameter(str(err), param_hint="--broker") from err
        return func(config=config, **kwargs)

    return wrapper


def data_dir_default() -> str:
    """The controller's data dir: ``$SHOAL_DATA_DIR``; else ``/var/lib/shoal`` for root;
    else ``$XDG_STATE_HOME/shoal`` (``~/.local/state/shoal``). Never relative to the
    directory a command happens to run in."""
    return default_data_dir(os.environ, os.geteuid() if hasattr(os, "geteuid") else -1)


def default_data_dir(env: Mapping[str, str], euid: int) -> str:
    if env.get("SHOAL_DATA_DIR"):
        return os.path.abspath(env["SHOAL_DATA_DIR"])
    if euid == 0:
        return "/var/lib/shoal"
    state = env.get("XDG_STATE_HOME", "")
    if not os.path.isabs(state):  # the XDG spec: a relative value is to be ignored
        state = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "shoal")


def auth_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--auth FILE``: the identities file (``shoal auth``); authorisation is on with it."""
    return click.option(
        "--auth",
        "auth_file",
        envvar="SHOAL_AUTH",
        show_envvar=True,
        default=None,
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="the cluster's identities and grants (`shoal auth ...` writes it): with it, "
        "every command is authorised per user, namespace and verb; read again when it "
        "changes",
    )(func)
