"""Controllers in HA as real processes on mosquitto, on both stores (a shared SQLite file,
a real PostgreSQL): the leader answers and the standby is silent; ``kill -9`` of the leader
during a stream of applies -> the standby takes over within 5 s and answers, and every apply
that was acknowledged is there; a rollout in flight resumes on the new leader; a second
controller on an empty store changes nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from core import codec
from core.channels import APPLY, APPS, PRESENCE
from core.codec import Envelope
from core.commands import ApplyCommand, Reply
from core.keys import AppKey
from core.state import AppState
from tests.integration.test_controller import publish_health
from tests.support.observer import Observer
from tests.support.procs import Broker, Proc, ProcGroup

pytestmark = pytest.mark.integration


def app(name: str) -> dict[str, Any]:
    return {"name": name, "image": "shoal-test/echo:v1", "replicas": 1, "ports": {"http": 80}}


@pytest.fixture(params=["sqlite", "postgresql"])
def store_args(request: pytest.FixtureRequest, tmp_path: Path) -> list[str]:
    """The controller arguments that put every controller of a test on one store."""
    if request.param == "sqlite":
        return ["--data-dir", str(tmp_path / "shared")]
    return ["--store", str(request.getfixturevalue("postgres_url"))]


def start(procs: ProcGroup, broker: Broker, prefix: str, name: str, args: list[str]) -> Proc:
    return procs.service(
        "controller", broker.url, *args, "--instance", name, prefix=prefix, name=name
    )


def presence_of(obs: Observer, proc: Proc) -> Any:
    for presence in obs.values(PRESENCE, service="controller").values():
        if presence.pid == proc.pid and presence.status == "online":
            return presence
    return None


async def leading(obs: Observer, proc: Proc, timeout: float = 20) -> None:
    await obs.wait_for(
        lambda: (p := presence_of(obs, proc)) is not None and p.leader,
        timeout,
        f"{proc.name} leads",
    )


class Client:
    """Sends applies and records every reply it gets, from whichever controller."""

    def __init__(self, obs: Observer) -> None:
        self.obs = obs
        self.topic = f"{obs.prefix}/reply/ha-client"
        self.replies: dict[str, list[Envelope]] = {}

    async def start(self) -> None:
        async def on_reply(topic: str, env: Envelope | None) -> None:
            if env is not None and env.re is not None:
                self.replies.setdefault(env.re, []).append(env)

        await self.obs.bus.watch(self.topic, on_reply)

    async def apply(self, name: str, timeout: float = 3.0) -> Envelope | None:
        """The first reply to one apply, or None when none came in time."""
        bus = self.obs.bus
        env = bus.envelope(APPLY.kind, ApplyCommand(apps=[app(name)]), reply_to=self.topic)
        await bus.publish_raw(APPLY.topic(self.obs.prefix), codec.encode(env), qos=1)
        try:
            return await self.obs.wait_for(lambda: self.replies.get(env.id, [None])[0], timeout)
        except TimeoutError:
            return None


async def test_kill_9_of_the_leader_mid_stream_loses_no_acknowledged_apply(
    mosquitto: Broker, procs: ProcGroup, prefix: str, store_args: list[str]
) -> None:
    async with Observer(mosquitto.url, prefix) as obs:
        client = Client(obs)
        await client.start()
        first = start(procs, mosquitto, prefix, "c1", store_args)
        await leading(obs, first)
        second = start(procs, mosquitto, prefix, "c2", store_args)
        await obs.wait_for(lambda: presence_of(obs, second), 20, "c2 online")

        acked: list[str] = []
        srcs: list[str] = []
        i = 0

        async def one() -> Envelope | None:
            nonlocal i
            i += 1
            answer = await client.apply(f"app{i}")
            if answer is not None and answer.open(Reply).ok:
                acked.append(f"app{i}")
                srcs.append(answer.src)
            return answer

        while len(acked) < 10:
            await one()
        assert set(srcs) == {"controller/c1"}  # the standby is silent

        # kill -9 while applies are in flight
        stream = [asyncio.create_task(client.apply(f"burst{n}", 5)) for n in range(5)]
        first.kill()
        for n, answer in enumerate(await asyncio.gather(*stream)):
            if answer is not None and answer.open(Reply).ok:
                acked.append(f"burst{n}")
        await leading(obs, second, timeout=5)
        answer = None
        for _ in range(20):
            answer = await one()
            if answer is not None and answer.src == "controller/c2":
                break
        assert answer is not None
        assert answer.open(Reply).ok
        assert answer.src == "controller/c2"

        # every acknowledged apply is in the new leader's store and on the bus
        await obs.wait_for(
            lambda: {AppKey("default", n) for n in acked} <= set(obs.values(APPS)),
            10,
            "every acknowledged app retained",
        )
        history = await obs.bus.request_raw(
            f"{prefix}/cmd/history", "history", {"name": acked[0]}, timeout=5
        )
        assert history.kind == "revisions", history
        # no request got two answers
        assert all(len(r) == 1 for r in client.replies.values())


async def test_a_second_controller_on_an_empty_store_changes_nothing(
    mosquitto: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    async with Observer(mosquitto.url, prefix) as obs:
        client = Client(obs)
        await client.start()
        first = start(procs, mosquitto, prefix, "c1", ["--data-dir", str(tmp_path / "a")])
        await leading(obs, first)
        for name in ("web", "api", "db"):
            answer = await client.apply(name)
            assert answer is not None
            assert answer.open(Reply).ok
        before: dict[AppKey, AppState] = await obs.wait_for(
            lambda: len(obs.values(APPS)) == 3 and obs.values(APPS), 10, "three apps"
        )

        second = start(procs, mosquitto, prefix, "c2", ["--data-dir", str(tmp_path / "b")])
        await obs.wait_for(lambda: presence_of(obs, second), 20, "c2 online")
        answer = await client.apply("late")  # served by c1, after c2 has seen every app
        assert answer is not None
        assert answer.src == "controller/c1"
        await obs.bus.sync()
        now = obs.values(APPS)
        assert {k: now[k] for k in before} == before
        assert set(now) == {*before, AppKey("default", "late")}

        # c2 leads once c1 is gone, on its own empty store: it still clears nothing
        first.kill()
        await leading(obs, second, timeout=5)
        await obs.wait_for(
            lambda: "republished apps" in second.output(), 15, "c2 republished its store"
        )
        await obs.bus.sync()
        assert obs.values(APPS) == now


async def test_a_rollout_in_flight_resumes_on_the_new_leader(
    mosquitto: Broker, procs: ProcGroup, prefix: str, store_args: list[str]
) -> None:
    web = AppKey("default", "web")

    def state() -> AppState | None:
        return obs.value(APPS, web)

    spec = {"name": "web", "replicas": 3, "ports": {"http": 8080}}
    async with Observer(mosquitto.url, prefix) as obs:
        first = start(procs, mosquitto, prefix, "c1", store_args)
        await leading(obs, first)
        second = start(procs, mosquitto, prefix, "c2", store_args)
        await obs.wait_for(lambda: presence_of(obs, second), 20, "c2 online")
        body = {"apps": [{**spec, "image": "shoal-test/echo:v1"}]}
        assert (await obs.bus.request_raw(APPLY.topic(prefix), "apply", body)).open(Reply).ok
        await publish_health(obs, await obs.wait_for(state, 10, "v1"))
        body = {"apps": [{**spec, "image": "shoal-test/echo:v2"}]}
        assert (await obs.bus.request_raw(APPLY.topic(prefix), "apply", body)).open(Reply).ok
        rolling = await obs.wait_for(
            lambda: (s := state()) is not None and s.revision == 2 and s, 10, "rev 2"
        )
        assert rolling.phase == "progressing"
        await publish_health(obs, rolling, ready={1: 3})  # the new replica is not ready yet

        first.kill()
        await leading(obs, second, timeout=5)

        async def walk() -> AppState:
            while True:
                s = state()
                assert s is not None
                if s.phase == "stable":
                    return s
                await publish_health(obs, s)
                await asyncio.sleep(0.1)

        done = await asyncio.wait_for(walk(), 20)
        assert done.revision == 2
        assert [(v.revision, v.replicas) for v in done.versions] == [(2, 3)]
        assert done.store_id == rolling.store_id  # written by the same store, the new leader
