"""``shoal run scaler`` / ``python -m services.scaler``."""

from __future__ import annotations

from typing import Any

import click

from core.config import ServiceConfig
from core.options import service_options
from core.service import run_service
from core.units import parse_duration
from services.scaler.decide import Policy
from services.scaler.service import ScalerService, ScalerSettings


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


class _Factory:
    """What ``run_service`` calls to build the service (it reads ``name`` for logging)."""

    name = ScalerService.name

    def __init__(self, settings: ScalerSettings) -> None:
        self.settings = settings

    def __call__(self, config: ServiceConfig) -> ScalerService:
        return ScalerService(config, self.settings)


@click.command("scaler")
@service_options
@click.option(
    "--interval",
    type=DURATION,
    default="1s",
    show_default=True,
    help="how often every autoscaled app is evaluated",
)
@click.option(
    "--scale-down-window",
    type=DURATION,
    default="30s",
    show_default=True,
    help="scale down only to the highest recommendation over this window",
)
@click.option(
    "--up-cooldown",
    type=DURATION,
    default="3s",
    show_default=True,
    help="minimum time between a change and a scale-up",
)
@click.option(
    "--cooldown",
    "down_cooldown",
    type=DURATION,
    default="10s",
    show_default=True,
    help="minimum time between a change and a scale-down",
)
@click.option(
    "--tolerance",
    type=float,
    default=0.1,
    show_default=True,
    help="a metric within this fraction of its target changes nothing",
)
@click.option(
    "--max-step-up",
    type=int,
    default=4,
    show_default=True,
    help="replicas added per step (or --max-step-up-percent, whichever is larger)",
)
@click.option("--max-step-up-percent", type=float, default=100.0, show_default=True)
@click.option(
    "--max-step-down",
    type=int,
    default=1,
    show_default=True,
    help="replicas removed per step (or --max-step-down-percent, if larger)",
)
@click.option("--max-step-down-percent", type=float, default=50.0, show_default=True)
@click.option(
    "--idle-after",
    type=DURATION,
    default="60s",
    show_default=True,
    help="with autoscale min 0: no request for this long scales the app to zero",
)
@click.option(
    "--surge-factor",
    type=float,
    default=2.0,
    show_default=True,
    help="after a scale-down, going up within the window needs this much more load",
)
@click.option(
    "--metrics-window",
    type=DURATION,
    default="3s",
    show_default=True,
    help="balancer samples are averaged over this window",
)
@click.option(
    "--request-timeout",
    type=DURATION,
    default="5s",
    show_default=True,
    help="how long to wait for the controller to answer a scale command",
)
def command(
    config: ServiceConfig,
    interval: float,
    scale_down_window: float,
    up_cooldown: float,
    down_cooldown: float,
    tolerance: float,
    max_step_up: int,
    max_step_up_percent: float,
    max_step_down: int,
    max_step_down_percent: float,
    idle_after: float,
    surge_factor: float,
    metrics_window: float,
    request_timeout: float,
) -> None:
    """Scale autoscaled apps on balancer and agent metrics, through the controller."""
    try:
        policy = Policy(
            scale_down_window=scale_down_window,
            up_cooldown=up_cooldown,
            down_cooldown=down_cooldown,
            tolerance=tolerance,
            max_step_up=max_step_up,
            max_step_up_percent=max_step_up_percent,
            max_step_down=max_step_down,
            max_step_down_percent=max_step_down_percent,
            idle_after=idle_after,
            surge_factor=surge_factor,
        )
    except ValueError as err:
        raise click.UsageError(str(err)) from err
    if interval <= 0 or metrics_window <= 0 or request_timeout <= 0:
        raise click.UsageError("--interval, --metrics-window and --request-timeout must be > 0")
    settings = ScalerSettings(
        policy=policy,
        interval=interval,
        metrics_window=metrics_window,
        request_timeout=request_timeout,
    )
    run_service(_Factory(settings), config)
