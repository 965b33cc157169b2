"""Entry point of the ``shoal`` command. Each command group lives in its own module and is
registered here."""

from __future__ import annotations

import importlib

import click

from core import __version__
from core.logs import setup_logging

SERVICES = (
    "controller",
    "scheduler",
    "agent",
    "health",
    "balancer",
    "scaler",
    "dashboard",
    "broker",
    "mesh",
    "provisioner",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shoal")
def cli() -> None:
    """Shoal: declare apps; Shoal places, heals, scales and routes them."""
    # Client commands print results on stdout (``-o json`` must stay parseable); library
    # chatter goes to stderr, warnings and worse only. ``shoal run`` reconfigures per service.
    setup_logging("warning")


class _ServiceRunner(click.Group):
    """``shoal run <service> ...``: each service's own command, loaded on demand."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(SERVICES)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in SERVICES:
            return None
        try:
            module = importlib.import_module(f"services.{name}.command")
        except ModuleNotFoundError:
            return None
        command: click.Command = module.command
        return command


@cli.group(cls=_ServiceRunner)
def run() -> None:
    """Run one service in the foreground against any broker."""


def _register() -> None:
    for module_name in (
        "apps",
        "describe",
        "up",
        "rollout",
        "nodes",
        "logs",
        "scale",
        "events",
        "contexts",
        "completion",
        "secrets",
        "rebalance",
        "auth",
    ):
        try:
            module = importlib.import_module(f"services.cli.{module_name}")
        except ModuleNotFoundError as err:
            if err.name != f"services.cli.{module_name}":
                raise
            continue
        for command in module.COMMANDS:
            cli.add_command(command)


_register()
