from __future__ import annotations

import click

from services.broker.embedded import run


@click.command("broker")
@click.option("--listen", default="127.0.0.1:1883", show_default=True, help="host:port")
@click.option("--log-level", default="info", show_default=True)
@click.option("--log-format", default="console", type=click.Choice(["console", "json"]))
def command(listen: str, log_level: str, log_format: str) -> None:
    """Run the embedded MQTT broker (amqtt)."""
    host, _, port = listen.rpartition(":")
    run(host or "127.0.0.1", int(port), log_level, log_format)
