"""The metrics every service serves: durations as histograms, the listen option, and a
service's /metrics over HTTP with its presence naming the address."""

from __future__ import annotations

import asyncio
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from core.channels import APPLY, PRESENCE
from core.commands import ApplyCommand
from core.config import ServiceConfig
from core.durations import Durations
from core.keys import ServiceKey
from core.memory import MemoryBroker
from core.metrics import parse_listen
from core.service import Service
from core.state import Presence
from tests.support.memory import connected, serving
from tests.support.waiting import eventually


def test_durations_are_cumulative_buckets() -> None:
    d = Durations()
    for seconds in (0.0001, 0.003, 0.003, 7.0, 99.0):
        d.observe(seconds)
    pairs = dict(d.cumulative())
    assert pairs["0.0005"] == 1
    assert pairs["0.005"] == 3
    assert pairs["10.0"] == 4
    assert pairs["+Inf"] == 5 == d.count
    assert d.total == pytest.approx(106.0061)


def test_durations_add_up_bucket_by_bucket() -> None:
    a, b = Durations(), Durations()
    for seconds in (0.0001, 0.003):
        a.observe(seconds)
    b.observe(7.0)
    both = sum((a, b), Durations())
    assert (both.count, both.total) == (3, pytest.approx(7.0031))
    assert dict(both.cumulative())["0.005"] == 2
    assert dict(both.cumulative())["10.0"] == 3
    assert (a.count, b.count) == (2, 1)  # the terms are left as they were


@pytest.mark.parametrize(
    ("text", "parsed"),
    [
        ("127.0.0.1:9100", ("127.0.0.1", 9100)),
        ("0.0.0.0:0", ("0.0.0.0", 0)),
        (":9100", ("127.0.0.1", 9100)),
        ("[::1]:9100", ("::1", 9100)),
        ("off", None),
        ("", None),
    ],
)
def test_listen_option(text: str, parsed: tuple[str, int] | None) -> None:
    assert parse_listen(text) == parsed


@pytest.mark.parametrize("bad", ["9100", "host:", "host:99999", "host:http"])
def test_listen_option_refuses(bad: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT"):
        parse_listen(bad)


class Answering(Service):
    name = "answering"

    async def setup(self) -> None:
        async def refuse(cmd: ApplyCommand, env: object) -> None:
            raise ValueError("no")

        await self.bus.answer(APPLY, refuse)  # type: ignore[arg-type]


def scrape(address: str) -> str:
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=5) as resp:
        return str(resp.read().decode())


async def test_a_service_serves_metrics_where_its_presence_says() -> None:
    broker = MemoryBroker()
    config = ServiceConfig(broker=broker, prefix="m", metrics=("127.0.0.1", 0))
    async with serving(Answering(config)) as svc, connected(broker, "m") as bus:
        presences: dict[ServiceKey, Presence] = {}
        await bus.subscribe(PRESENCE, lambda k, p: presences.__setitem__(k, p))
        key = ServiceKey("answering", svc.instance)
        await eventually(lambda: presences.get(key) and presences[key].metrics)
        reply = await bus.request(APPLY, ApplyCommand(apps=[{"name": "x"}]), timeout=5)
        assert not reply.ok
        address = presences[key].metrics
        assert address is not None
        text = await asyncio.to_thread(scrape, address)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    info = families["shoal_build_info"].samples[0]
    assert info.labels["service"] == "answering"
    commands = families["shoal_commands"].samples
    assert [(s.labels, s.value) for s in commands if s.name == "shoal_commands_total"] == [
        ({"command": "apply", "result": "crashed"}, 1.0)
    ]
    assert families["shoal_bus_messages_published"].samples[0].value >= 1
    assert families["shoal_bus_connected"].samples[0].value == 1
    assert "process_resident_memory_bytes" in {s.name for f in families.values() for s in f.samples}
