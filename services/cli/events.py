"""``shoal events [-n NS] [--app NAME] [-f] [--limit N] [-o table|json]``: what happened.

Events are not retained on the bus; a dashboard keeps the recent ones and answers
``cmd/events`` (``EVENTS_QUERY``). The CLI prints those, then with ``-f`` every new event
as it is published. Without any dashboard there is no history: ``-f`` still follows new
events (with a warning), a plain ``shoal events`` says so and exits 1.
"""

from __future__ import annotations

import asyncio
import sys
import time

import click

from core.channels import EVENTS, EVENTS_QUERY
from core.commands import EventList, EventsQuery, RecentEvent
from core.errors import RequestTimeout, ShoalError
from core.logs import setup_logging
from core.state import Event
from services.cli.client import (
    ClientOptions,
    client_options,
    connect,
    err_console,
    print_json,
    run_async,
)
from services.cli.output import rfc3339

#: How long to wait for a dashboard to answer before following without history.
HISTORY_TIMEOUT = 3.0


def event_object(event: Event) -> str:
    if event.app:
        return f"{event.namespace or 'default'}/{event.app}" + (
            f" {event.replica}" if event.replica else ""
        )
    if event.node:
        return f"node/{event.node}"
    return event.replica or "-"


def event_line(event: Event, ts: float) -> str:
    """One event as a line: time, severity, kind, object, message."""
    return (
        f"{rfc3339(ts)}  {event.severity:<7}  {event.kind:<20}  {event_object(event):<32}  "
        f"{event.message}"
    )


def matches(event: Event, namespace: str | None, app: str | None) -> bool:
    if namespace is not None and (event.namespace or "default") != namespace:
        return False
    return app is None or event.app == app


def same(a: Event, b: Event) -> bool:
    """The same event seen twice (in the history and on the live subscription)."""
    return Event.model_validate(a.model_dump(include=set(Event.model_fields))) == b


async def _events(
    opts: ClientOptions,
    namespace: str | None,
    app: str | None,
    follow: bool,
    limit: int,
    output: str,
) -> None:
    async with connect(opts, persistent=follow) as bus:
        live: asyncio.Queue[tuple[float, Event]] = asyncio.Queue()

        def on_event(_kind: str, event: Event | None) -> None:
            if event is not None and matches(event, namespace, app):
                live.put_nowait((time.time(), event))

        if follow:
            await bus.subscribe(EVENTS, on_event)
            await bus.sync(timeout=opts.timeout)
        history: list[RecentEvent] = []
        try:
            answer = await bus.request(
                EVENTS_QUERY,
                EventsQuery(namespace=namespace, app=app, limit=limit),
                timeout=min(opts.timeout, HISTORY_TIMEOUT),
            )
        except RequestTimeout as err:
            if not follow:
                raise ShoalError(
                    "no dashboard answered: recent events are kept by the dashboard "
                    "(shoal up runs one; or shoal run dashboard); shoal events -f follows new ones"
                ) from err
            err_console.print(
                "[yellow]warning:[/yellow] no dashboard keeps recent events; "
                "following new ones only",
                highlight=False,
            )
        else:
            if not isinstance(answer, EventList):
                raise ShoalError("; ".join(answer.errors) or "the events query was refused")
            history = answer.events
        answered = time.time()
        if output == "json" and not follow:
            print_json([e.model_dump(mode="json") for e in history])
            return
        for e in history:
            click.echo(event_line(e, e.ts))
        if not follow:
            if not history:
                err_console.print("no events", highlight=False)
            return
        recent = history[-50:]
        while True:
            ts, event = await live.get()
            if ts <= answered and any(same(h, event) for h in recent):
                recent = [h for h in recent if not same(h, event)]
                continue  # arrived while the history was asked for, and is in it
            click.echo(event_line(event, ts))
            sys.stdout.flush()


@click.command("events")
@client_options
@click.option("-n", "--namespace", default=None, help="only events of apps in this namespace")
@click.option("--app", default=None, help="only events of this app")
@click.option("-f", "--follow", is_flag=True, help="keep printing new events")
@click.option(
    "--limit", type=click.IntRange(1, 10_000), default=100, show_default=True, help="history"
)
@click.option("-o", "--output", type=click.Choice(["table", "json"]), default="table")
def events(
    opts: ClientOptions,
    namespace: str | None,
    app: str | None,
    follow: bool,
    limit: int,
    output: str,
) -> None:
    """Print the recent events (kept by the dashboard), and with -f follow new ones."""
    setup_logging("warning")
    run_async(_events(opts, namespace, app, follow, limit, output))


COMMANDS: list[click.Command] = [events]
