"""What every ``shoal`` client command shares: options, a bus connection, errors, output."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import click
from pydantic import BaseModel
from rich.console import Console

from core.bus import Bus, connect_bus
from core.config import DEFAULT_BROKER, BrokerURL, ConfigError
from core.errors import ShoalError
from core.topics import Topics

T = TypeVar("T")

# Wide when piped, so tables and error lines are not wrapped for scripts and logs.
console = Console(width=None if sys.stdout.isatty() else 250, soft_wrap=True)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 250, soft_wrap=True)


@dataclass(frozen=True)
class ClientOptions:
    broker: str
    prefix: str
    timeout: float


def client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--broker --prefix --timeout`` for commands that talk to a running cluster."""

    @click.option(
        "--broker",
        envvar="SHOAL_BROKER",
        default=DEFAULT_BROKER,
        show_default=True,
        help="mqtt://[user:pass@]host[:port] or mqtts://...",
    )
    @click.option(
        "--prefix",
        envvar="SHOAL_PREFIX",
        default="shoal",
        show_default=True,
        help="topic prefix of the cluster",
    )
    @click.option(
        "--timeout",
        default=10.0,
        show_default=True,
        type=float,
        help="seconds to wait for the broker and for replies",
    )
    @functools.wraps(func)
    def wrapper(broker: str, prefix: str, timeout: float, **kwargs: Any) -> Any:
        return func(opts=ClientOptions(broker, prefix, timeout), **kwargs)

    return wrapper


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; turn Shoal errors into a message and exit code 1."""
    try:
        return asyncio.run(coro)
    except ShoalError as err:
        err_console.print(f"[red]error:[/red] {err}", highlight=False)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


@asynccontextmanager
async def connect(opts: ClientOptions) -> AsyncIterator[Bus]:
    """A connected bus for one CLI invocation."""
    try:
        url = BrokerURL.parse(opts.broker)
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="--broker") from err
    client_id = f"cli-{uuid.uuid4().hex[:10]}"
    bus = connect_bus(url, Topics(opts.prefix), client_id=client_id, src="cli")
    task = asyncio.create_task(bus.run(), name="cli-bus")
    try:
        try:
            await bus.wait_connected(opts.timeout)
        except ShoalError as err:
            raise type(err)(f"{err} (is `shoal up` running? pass --broker)") from err
        yield bus
    finally:
        bus.close()
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            pass


def print_json(value: Any) -> None:
    def default(obj: Any) -> Any:
        if isinstance(obj, BaseModel):
            return obj.model_dump(mode="json")
        raise TypeError(type(obj).__name__)

    click.echo(json.dumps(value, default=default, indent=2, sort_keys=True))
