"""The controller as a real process on a real broker (mosquitto and the embedded one).

The test plays every other party: a client sending commands (msgpack and JSON), and -
for rollouts - the health monitor, by publishing retained ``AppHealth``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from core import codec
from core.channels import APPLY, APPS, COMMANDS, HEALTH, NODE_REPLICAS, PRESENCE, SCALE
from core.codec import Envelope
from core.commands import History, Reply
from core.keys import AppKey
from core.state import (
    AppHealth,
    AppState,
    NodeReplicas,
    ReplicaHealth,
    ReplicaStatus,
)
from tests.support.observer import Observer
from tests.support.procs import Broker, Proc, ProcGroup

pytestmark = pytest.mark.integration

WEB = AppKey("default", "web")
COMMAND = {c.name: c for c in COMMANDS}


def app(name: str = "web", image: str = "shoal-test/echo:v1", **fields: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": image,
        "replicas": 2,
        "ports": {"http": 8080},
        "route": {"host": f"{name}.test", "port": "http"},
        **fields,
    }


def start_controller(procs: ProcGroup, broker: Broker, prefix: str, data_dir: Path) -> Proc:
    return procs.service("controller", broker.url, "--data-dir", str(data_dir), prefix=prefix)


async def wait_online(obs: Observer, proc: Proc, timeout: float = 20) -> None:
    def online() -> bool:
        for presence in obs.values(PRESENCE, service="controller").values():
            if presence.status == "online" and presence.pid == proc.pid:
                return True
        return False

    await obs.wait_for(online, timeout, "controller online")


@asynccontextmanager
async def observing(broker: Broker, prefix: str) -> AsyncIterator[Observer]:
    async with Observer(broker.url, prefix) as obs:
        yield obs


async def request(obs: Observer, command: str, body: dict[str, Any]) -> Envelope:
    return await obs.bus.request_raw(COMMAND[command].topic(obs.prefix), command, body, timeout=10)


async def reply(obs: Observer, command: str, body: dict[str, Any]) -> Reply:
    env = await request(obs, command, body)
    assert env.kind == "reply", env
    return env.open(Reply)


def state(obs: Observer, name: str = "web", ns: str = "default") -> AppState | None:
    return obs.value(APPS, AppKey(ns, name))


async def until(
    obs: Observer, predicate: Callable[[], Any], message: str, timeout: float = 15
) -> Any:
    return await obs.wait_for(predicate, timeout, message)


# -- issue 3 -------------------------------------------------------------------------------


async def test_apply_round_trip_and_an_invalid_spec_changes_nothing(
    broker: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    async with observing(broker, prefix) as obs:
        await wait_online(obs, start_controller(procs, broker, prefix, tmp_path))

        ok = await reply(obs, "apply", {"apps": [app()], "source": "web.yaml"})
        assert ok.ok, ok.errors
        assert ok.revision == 1
        assert [(r.name, r.revision, r.change) for r in ok.results] == [("web", 1, "created")]
        first = await until(obs, lambda: state(obs), "app published")
        assert (first.revision, first.generation, first.replicas) == (1, 1, 2)
        assert [(v.revision, v.replicas) for v in first.versions] == [(1, 2)]

        bad = await reply(
            obs,
            "apply",
            {
                "apps": [
                    app(image="shoal-test/echo:v2"),
                    app("api", replicas=-1, ports={"http": 70000}, colour="red"),
                ]
            },
        )
        assert not bad.ok
        assert bad.errors == [
            "app 2 (api): replicas: Input should be greater than or equal to 0",
            "app 2 (api): ports: port 'http': 70000 is not in 1-65535",
            "app 2 (api): colour: unknown field",
        ]
        assert bad.results == []
        await obs.bus.sync()
        assert state(obs) == first  # the valid app of the batch was not applied either
        assert state(obs, "api") is None

        same = await reply(obs, "apply", {"apps": [app()]})
        assert [(r.revision, r.change) for r in same.results] == [(1, "unchanged")]
        scaled = await reply(obs, "apply", {"apps": [app(replicas=4)]})
        assert [(r.revision, r.change, r.changes) for r in scaled.results] == [
            (1, "scaled", ["replicas: 2 -> 4"])
        ]
        dry = await reply(
            obs, "apply", {"apps": [app(image="shoal-test/echo:v2")], "dry_run": True}
        )
        assert [(r.revision, r.change, r.changes) for r in dry.results] == [
            (2, "updated", ["image: shoal-test/echo:v1 -> shoal-test/echo:v2", "replicas: 4 -> 2"])
        ]
        await obs.bus.sync()
        after = state(obs)
        assert after is not None
        assert (after.revision, after.generation, after.replicas) == (1, 2, 4)


async def test_scale_and_delete(
    broker: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    async with observing(broker, prefix) as obs:
        await wait_online(obs, start_controller(procs, broker, prefix, tmp_path))
        auto = {"min": 1, "max": 3, "target": {"rps_per_replica": 10}}
        assert (await reply(obs, "apply", {"apps": [app(autoscale=auto)]})).ok

        refused = await reply(obs, "scale", {"name": "web", "replicas": 5})
        assert refused.errors == [
            "app default/web autoscales between 1 and 3 replicas: cannot scale to 5 "
            "(change autoscale in the spec)"
        ]
        scaled = await reply(obs, "scale", {"name": "web", "replicas": 3, "source": "autoscaler"})
        assert [(r.change, r.revision) for r in scaled.results] == [("scaled", 1)]
        await until(obs, lambda: (s := state(obs)) and s.replicas == 3, "scaled to 3")

        missing = await reply(obs, "delete", {"name": "nope"})
        assert missing.errors == ["app default/nope not found"]
        deleted = await reply(obs, "delete", {"name": "web"})
        assert [(r.change, r.revision) for r in deleted.results] == [("deleted", 1)]
        await obs.bus.sync()
        await until(obs, lambda: state(obs) is None, "retained app cleared")

        again = await reply(obs, "apply", {"apps": [app()]})
        assert again.revision == 2  # never reused, even after a delete


async def test_retained_apps_are_rebuilt_after_a_restart(
    broker: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    async with observing(broker, prefix) as obs:
        controller = start_controller(procs, broker, prefix, tmp_path)
        await wait_online(obs, controller)
        assert (await reply(obs, "apply", {"apps": [app(), app("api", namespace="prod")]})).ok
        before = await until(
            obs,
            lambda: len(obs.values(APPS)) == 2 and obs.values(APPS),
            "two apps",
        )
        controller.stop()
        # a retained app the store does not know (left over, or written by someone else)
        stray = AppKey("default", "stray")
        await obs.bus.publish(APPS, before[WEB], key=stray)
        await obs.bus.clear(APPS, WEB)
        await obs.bus.sync()
        assert set(obs.values(APPS)) == {AppKey("prod", "api"), stray}

        await wait_online(obs, start_controller(procs, broker, prefix, tmp_path))
        await until(
            obs,
            lambda: obs.values(APPS) == before,
            "apps republished from the store, stray cleared",
        )


async def test_restart_of_the_broker_loses_nothing(
    mosquitto: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    async with observing(mosquitto, prefix) as obs:
        await wait_online(obs, start_controller(procs, mosquitto, prefix, tmp_path))
        assert (await reply(obs, "apply", {"apps": [app()]})).ok
        first = await until(obs, lambda: state(obs), "app")
        await asyncio.to_thread(mosquitto.restart)  # persistence off: retained state is gone
        await obs.bus.wait_connected(15)
        await until(obs, lambda: state(obs) == first and obs.bus.connects >= 2, "republished", 20)


async def test_json_command_from_mosquitto_pub(
    broker: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    if shutil.which("mosquitto_pub") is None:
        pytest.fail("mosquitto_pub is needed (apt-get install mosquitto-clients)")
    async with observing(broker, prefix) as obs:
        await wait_online(obs, start_controller(procs, broker, prefix, tmp_path))
        reply_topic = f"{prefix}/reply/json-{uuid.uuid4().hex[:6]}"
        answers: list[Envelope] = []
        await obs.bus.watch(
            reply_topic, lambda t, e: answers.append(e) if e else None, allow_json=True
        )
        await obs.bus.sync()
        message = {"kind": "apply", "body": {"apps": [app()]}, "reply_to": reply_topic}
        pub = await asyncio.create_subprocess_exec(
            "mosquitto_pub",
            "-h",
            broker.host,
            "-p",
            str(broker.port),
            "-q",
            "1",
            "-t",
            APPLY.topic(obs.prefix),
            "-m",
            json.dumps(message),
        )
        assert await asyncio.wait_for(pub.wait(), 10) == 0
        await until(obs, lambda: answers, "a JSON reply")
        assert answers[0].was_json
        assert answers[0].open(Reply).revision == 1
        await until(obs, lambda: state(obs), "app applied from JSON")


async def test_malformed_commands_leave_the_controller_running(
    broker: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    async with observing(broker, prefix) as obs:
        controller = start_controller(procs, broker, prefix, tmp_path)
        await wait_online(obs, controller)
        for command in ("apply", "delete", "scale", "rollback", "history", "rollout"):
            topic = COMMAND[command].topic(obs.prefix)
            for payload in (
                b"\xc1\xc1 not msgpack",
                b"{ not json",
                b"[1, 2]",
                b"\x00" * 32,
                codec.encode(codec.make(command, {"bogus": True})),
                codec.encode(codec.make("nonsense", {})),
                json.dumps({"kind": command, "body": {"name": "x" * 100}}).encode(),
            ):
                await obs.bus.publish_raw(topic, payload)
        await obs.bus.publish_raw(HEALTH.topic(obs.prefix, WEB), b"garbage", retain=True)

        wrong = await reply(obs, "delete", {"name": "Web!"})
        assert not wrong.ok
        assert wrong.errors[0].startswith("delete command: name: Value error, name 'Web!'") or (
            wrong.errors[0].startswith("delete command: name: name 'Web!' must be a DNS label")
        )
        kind = await obs.bus.request_raw(SCALE.topic(obs.prefix), "apply", {"apps": []}, timeout=10)
        assert kind.open(Reply).errors == [
            "a 'scale' command was expected on " + SCALE.topic(obs.prefix) + ", got 'apply'"
        ]
        assert (await reply(obs, "apply", {"apps": [app()]})).ok
        assert controller.alive()
        await obs.bus.clear(HEALTH, WEB)


# -- issue 7 -------------------------------------------------------------------------------


async def publish_health(obs: Observer, s: AppState, ready: dict[int, int] | None = None) -> None:
    """Play the health monitor: every replica the state asks for, ready unless told."""
    replicas = []
    for version in s.versions:
        n_ready = version.replicas if ready is None else ready.get(version.revision, 0)
        for i in range(version.replicas):
            replicas.append(
                ReplicaHealth(
                    id=f"default.web.{version.revision:04d}{i:04d}",
                    revision=version.revision,
                    node="n1",
                    endpoint=f"127.0.0.1:{20000 + i}",
                    ready=i < n_ready,
                )
            )
    health = AppHealth(namespace=s.namespace, name=s.name, replicas=replicas)
    await obs.bus.publish(HEALTH, health)


async def test_rolling_update_history_undo_and_restart_mid_rollout(
    broker: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    async with observing(broker, prefix) as obs:
        controller = start_controller(procs, broker, prefix, tmp_path)
        await wait_online(obs, controller)
        assert (await reply(obs, "apply", {"apps": [app(replicas=3)]})).ok
        await publish_health(obs, await until(obs, lambda: state(obs), "v1"))

        v2 = await reply(obs, "apply", {"apps": [app(image="shoal-test/echo:v2", replicas=3)]})
        assert [(r.revision, r.change) for r in v2.results] == [(2, "updated")]
        first = await until(obs, lambda: (s := state(obs)) and s.revision == 2 and s, "rev 2")
        assert first.phase == "progressing"
        assert [(v.revision, v.replicas) for v in first.versions] == [(1, 3), (2, 1)]

        # the new replica is not ready: nothing moves; then the controller restarts
        await publish_health(obs, first, ready={1: 3})
        await asyncio.sleep(0.5)
        assert state(obs) == first
        controller.kill()
        controller = start_controller(procs, broker, prefix, tmp_path)
        await wait_online(obs, controller)

        # readiness drives it to the end, step by step
        async def walk() -> AppState:
            while True:
                s = state(obs)
                assert s is not None
                if s.phase == "stable":
                    return s
                await publish_health(obs, s)
                await asyncio.sleep(0.1)

        done = await asyncio.wait_for(walk(), 20)
        assert done.revision == 2
        assert [(v.revision, v.replicas) for v in done.versions] == [(2, 3)]

        history_env = await request(obs, "history", {"name": "web"})
        assert history_env.kind == "revisions"
        history = history_env.open(History)
        assert [(r.revision, r.current, r.image) for r in history.revisions] == [
            (1, False, "shoal-test/echo:v1"),
            (2, True, "shoal-test/echo:v2"),
        ]
        assert history.revisions[1].changes == ["image: shoal-test/echo:v1 -> shoal-test/echo:v2"]
        assert history.revisions[0].source.startswith("apply by observer-")

        undo = await reply(obs, "rollback", {"name": "web"})
        assert [(r.revision, r.change) for r in undo.results] == [(3, "updated")]
        back = await until(obs, lambda: (s := state(obs)) and s.revision == 3 and s, "rev 3")
        assert back.spec.image == "shoal-test/echo:v1"
        unknown = await reply(obs, "rollback", {"name": "web", "to_revision": 9})
        assert unknown.errors == ["app default/web has no revision 9 (known: 1, 2, 3)"]


async def test_a_never_ready_revision_is_rolled_back(
    broker: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    async with observing(broker, prefix) as obs:
        await wait_online(obs, start_controller(procs, broker, prefix, tmp_path))
        update = {"max_surge": 1, "progress_deadline": "1500ms"}
        assert (await reply(obs, "apply", {"apps": [app(update=update)]})).ok
        await publish_health(obs, await until(obs, lambda: state(obs), "v1"))
        bad = app(image="shoal-test/echo:v2", update=update)
        assert (await reply(obs, "apply", {"apps": [bad]})).ok
        rolling = await until(obs, lambda: (s := state(obs)) and s.revision == 2 and s, "rev 2")
        await publish_health(obs, rolling, ready={1: 2})
        back = await until(obs, lambda: (s := state(obs)) and s.phase == "rolled_back" and s, "rb")
        assert back.revision == 1
        assert (
            back.message
            == "rolled back to revision 1: revision 2 had 0/2 replicas ready after 1.5s"
        )
        assert [(v.revision, v.replicas) for v in back.versions] == [(1, 2)]
        history = (await request(obs, "history", {"name": "web"})).open(History)
        assert (
            history.revisions[-1].status == "failed: revision 2 had 0/2 replicas ready after 1.5s"
        )


async def test_canary_promote(
    broker: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    async with observing(broker, prefix) as obs:
        await wait_online(obs, start_controller(procs, broker, prefix, tmp_path))
        assert (await reply(obs, "apply", {"apps": [app(replicas=4)]})).ok
        await publish_health(obs, await until(obs, lambda: state(obs), "v1"))
        canary = app(image="shoal-test/echo:v2", replicas=4, update={"canary": 1})
        assert (await reply(obs, "apply", {"apps": [canary]})).ok
        s = await until(obs, lambda: (s := state(obs)) and s.revision == 2 and s, "canary")
        assert [(v.revision, v.replicas, v.weight) for v in s.versions] == [(1, 4, 80), (2, 1, 20)]
        await publish_health(obs, s)
        await until(obs, lambda: (s := state(obs)) and s.phase == "paused", "paused")
        refused = await reply(obs, "rollout", {"name": "web", "action": "promote", "x": 1})
        assert refused.errors == ["rollout command: x: unknown field"]
        assert (await reply(obs, "rollout", {"name": "web", "action": "promote"})).ok

        async def walk() -> AppState:
            while True:
                s = state(obs)
                assert s is not None
                if s.phase == "stable":
                    return s
                await publish_health(obs, s)
                await asyncio.sleep(0.1)

        done = await asyncio.wait_for(walk(), 20)
        assert [(v.revision, v.replicas, v.weight) for v in done.versions] == [(2, 4, None)]


async def test_a_crash_looping_revision_is_rolled_back_at_once(
    broker: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    async with observing(broker, prefix) as obs:
        await wait_online(obs, start_controller(procs, broker, prefix, tmp_path))
        update = {"max_surge": 1, "progress_deadline": "10m"}
        assert (await reply(obs, "apply", {"apps": [app(update=update)]})).ok
        await publish_health(obs, await until(obs, lambda: state(obs), "v1"))
        bad = app(image="shoal-test/echo:v2", update=update)
        assert (await reply(obs, "apply", {"apps": [bad]})).ok
        rolling = await until(obs, lambda: (s := state(obs)) and s.revision == 2 and s, "rev 2")
        await publish_health(obs, rolling, ready={1: 2})
        crashing = ReplicaStatus(
            id="default.web.00020000",
            namespace="default",
            app="web",
            revision=2,
            node="n1",
            phase="backoff",
            restarts=3,
            exit_code=2,
        )
        observed = NodeReplicas(node="n1", replicas=[crashing])
        await obs.bus.publish(NODE_REPLICAS, observed)
        back = await until(obs, lambda: (s := state(obs)) and s.phase == "rolled_back" and s, "rb")
        assert back.message == (
            "rolled back to revision 1: revision 2 is failing: "
            "replica default.web.00020000 restarted 3 times, last exit code 2"
        )
        await obs.bus.clear(NODE_REPLICAS, "n1")
