"""What every ``shoal`` client command shares: options, a bus connection, errors, output."""

from __future__ import annotations

import asyncio
import functools
import json
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

import click
from pydantic import BaseModel
from rich.console import Console

from core.bus import Bus, MqttBus
from core.config import DEFAULT_BROKER, BrokerURL, ConfigError
from core.errors import BusError, ShoalError
from core.logs import setup_logging
from core.topics import Topics
from services.cli.contexts import load_config, select_context, with_credentials
from services.cli.output import with_rfc3339

T = TypeVar("T")

# Wide when piped, so tables and error lines are not wrapped for scripts and logs.
console = Console(width=None if sys.stdout.isatty() else 250, soft_wrap=True)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 250, soft_wrap=True)


@dataclass(frozen=True)
class ClientOptions:
    broker: str
    prefix: str
    timeout: float
    credentials: str | None = None  # a file of USERNAME:PASSWORD, from the context


def resolve_options(
    broker: str | None, prefix: str | None, timeout: float, context: str | None
) -> ClientOptions:
    """Explicit ``--broker``/``--prefix`` (or their environment variables) first, then the
    selected context's settings, then the defaults."""
    try:
        _, ctx = select_context(load_config(), context)
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="--context") from err
    return ClientOptions(
        broker=broker or ctx.broker or DEFAULT_BROKER,
        prefix=prefix or ctx.prefix or "shoal",
        timeout=timeout,
        credentials=ctx.credentials,
    )


def client_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--broker --prefix --timeout`` for commands that talk to a running cluster."""

    @click.option(
        "--broker",
        envvar="SHOAL_BROKER",
        default=None,
        help=f"mqtt://[user:pass@]host[:port] or mqtts://...  [default: the context's, "
        f"else {DEFAULT_BROKER}]",
        show_envvar=True,
    )
    @click.option(
        "--prefix",
        envvar="SHOAL_PREFIX",
        default=None,
        help="topic prefix of the cluster  [default: the context's, else shoal]",
        show_envvar=True,
    )
    @click.option(
        "--context",
        envvar="SHOAL_CONTEXT",
        default=None,
        show_envvar=True,
        help="named context of the shoal config (shoal config get-contexts)  "
        "[default: its current-context]",
    )
    @click.option(
        "--broker-credentials",
        envvar="SHOAL_BROKER_CREDENTIALS",
        default=None,
        show_envvar=True,
        metavar="FILE",
        help="a file of USERNAME:PASSWORD (`shoal auth add-user` writes it)  "
        "[default: the context's credentials]",
    )
    @click.option(
        "--timeout",
        envvar="SHOAL_TIMEOUT",
        show_envvar=True,
        default=10.0,
        show_default=True,
        type=float,
        help="seconds to wait for the broker and for replies",
    )
    @functools.wraps(func)
    def wrapper(
        broker: str | None,
        prefix: str | None,
        timeout: float,
        context: str | None,
        broker_credentials: str | None,
        **kwargs: Any,
    ) -> Any:
        opts = resolve_options(broker, prefix, timeout, context)
        if broker_credentials:
            opts = replace(opts, credentials=broker_credentials)
        return func(opts=opts, **kwargs)

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


class CliBus(MqttBus):
    """The CLI's bus: remembers why its first connection attempt failed, so a command
    that is not waiting stops there (one error line) instead of retrying until --timeout."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()

    async def _session(self) -> None:
        try:
            await super()._session()
        except self.connection_errors as err:
            if not self.refused.done() and not self.connects:
                self.refused.set_result(err)
            raise


async def wait_first_connection(bus: CliBus, timeout: float, persistent: bool) -> None:
    """Until connected; raises at the first refused attempt unless ``persistent``."""
    connected = asyncio.ensure_future(bus.wait_connected(timeout))
    waiters: set[asyncio.Future[Any]] = {connected}
    if not persistent:
        waiters.add(bus.refused)
    done, _ = await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    if connected in done:
        connected.result()  # raises BusError on timeout
        return
    connected.cancel()
    error = bus.refused.result()
    raise BusError(f"no connection to the broker at {bus.describe()}: {error}")


def connect_hint(error: str, url: BrokerURL) -> str:
    """What to check, from how the connection failed."""
    lowered = error.lower()
    if "certificate" in lowered or "ssl" in lowered or "tls" in lowered:
        return (
            "a TLS failure: check the broker's certificate against ?ca=FILE, and "
            "?cert=/&key= if the broker asks for a client certificate"
        )
    if "not authori" in lowered or "bad user" in lowered or "credentials" in lowered:
        return "the broker refused these credentials"
    if url.tls:
        return "is the broker's TLS listener up at that address?"
    return "is `shoal up` running? pass --broker"


@asynccontextmanager
async def connect(opts: ClientOptions, *, persistent: bool = False) -> AsyncIterator[Bus]:
    """A connected bus for one CLI invocation.

    The bus's reconnect warnings are silenced (errors only): a refused connection prints
    one error line. ``persistent`` (watching) keeps retrying until ``--timeout`` instead
    of failing at the first refusal.
    """
    try:
        url = BrokerURL.parse(opts.broker)
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="--broker") from err
    try:
        url = with_credentials(url, opts.credentials)
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="--context") from err
    setup_logging("error")
    client_id = f"cli-{uuid.uuid4().hex[:10]}"
    bus = CliBus(url, Topics(opts.prefix), client_id=client_id, src="cli")
    task = asyncio.create_task(bus.run(), name="cli-bus")
    try:
        try:
            await wait_first_connection(bus, opts.timeout, persistent)
        except ShoalError as err:
            raise type(err)(f"{err} ({connect_hint(str(err), url)})") from err
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

    plain = json.loads(json.dumps(value, default=default))
    click.echo(json.dumps(with_rfc3339(plain), indent=2, sort_keys=True))
