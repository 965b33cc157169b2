"""Secrets in the controller shell (in-memory broker): pins on apply, a new value rolls the
apps using it, only a node assigned a replica gets the value (sealed), and no message on
the bus carries the value in the clear."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from core.bus import Bus
from core.channels import (
    APPLY,
    APPS,
    DELETE,
    HISTORY,
    NODE_ASSIGN,
    SECRET_LS,
    SECRET_RM,
    SECRET_VALUES,
)
from core.commands import ApplyCommand, DeleteCommand, History, HistoryQuery, Reply
from core.config import ServiceConfig
from core.keys import AppKey
from core.memory import MemoryBroker
from core.sealing import Opener, label
from core.secrets import (
    SecretDelete,
    SecretList,
    SecretPutResult,
    SecretQuery,
    SecretValues,
    SecretValuesRequest,
    SecretWant,
)
from core.state import AssignedReplica, NodeAssignment
from services.cli.secrets import put_secret
from services.controller.service import ControllerService
from tests.support.memory import connected, serving
from tests.support.waiting import eventually

PREFIX = "t"
WEB = AppKey("default", "web")
VALUE = b"correct horse battery staple"
NEW_VALUE = b"Tr0ub4dor&3"


@asynccontextmanager
async def running(
    data_dir: Path, seen: list[bytes]
) -> AsyncIterator[tuple[Bus, ControllerService]]:
    broker = MemoryBroker()
    publish = broker.publish

    def recording(topic: str, payload: bytes, *, retain: bool = False) -> None:
        seen.append(topic.encode() + b" " + payload)
        publish(topic, payload, retain=retain)

    broker.publish = recording  # type: ignore[method-assign]
    config = ServiceConfig(broker=broker, prefix=PREFIX, instance="c1")
    controller = ControllerService(config, data_dir)
    async with connected(broker, PREFIX, "me") as bus, serving(controller):
        await eventually(lambda: controller.bus.connected and controller.store is not None)
        yield bus, controller


async def put(bus: Bus, value: bytes, name: str = "db") -> SecretPutResult:
    answer = await put_secret(bus, "default", name, value, timeout=5)
    assert isinstance(answer, SecretPutResult), answer
    return answer


async def apply(bus: Bus, **fields: Any) -> Reply:
    app = {"name": "web", "image": "img:1", "replicas": 1, **fields}
    return await bus.request(APPLY, ApplyCommand(apps=[app]), timeout=5)


def no_trace(seen: list[bytes], *values: bytes) -> None:
    import base64

    for value in values:
        for form in (value, base64.b64encode(value)):
            assert not any(form in payload for payload in seen), form


async def test_apply_pins_versions_and_a_new_value_rolls_the_app(tmp_path: Path) -> None:
    seen: list[bytes] = []
    async with running(tmp_path, seen) as (bus, _):
        apps = await bus.view(APPS)
        missing = await apply(bus, secrets=["db"])
        assert not missing.ok
        assert missing.errors == [
            "app default/web: secret 'db' does not exist in namespace default "
            "(create it first: shoal secret create db -n default ...)"
        ]
        assert (await put(bus, VALUE)).change == "created"
        assert (
            (await apply(bus, secrets=["db", {"name": "db2", "env": "X"}]))
            .errors[0]
            .startswith("app default/web: secret 'db2' does not exist")
        )
        reply = await apply(bus, secrets=["db"])
        assert reply.ok
        assert reply.revision == 1
        state = await eventually(lambda: apps.get(WEB))
        assert [(u.name, u.version) for u in state.spec.secrets] == [("db", 1)]
        assert (await apply(bus, secrets=["db"])).results[0].change == "unchanged"

        assert (await put(bus, VALUE)).change == "unchanged"
        changed = await put(bus, NEW_VALUE)
        assert (changed.change, changed.version) == ("updated", 2)
        assert [(r.name, r.revision) for r in changed.rolled] == [("web", 2)]
        state = await eventually(lambda: (s := apps.get(WEB)) and s.revision == 2 and s)
        assert [(u.name, u.version) for u in state.spec.secrets] == [("db", 2)]
        history = await bus.request(HISTORY, HistoryQuery(name="web"), timeout=5)
        assert isinstance(history, History)
        assert history.revisions[-1].source.startswith("secret default/db changed (version 2)")

        listed = await bus.request(SECRET_LS, SecretQuery(), timeout=5)
        assert isinstance(listed, SecretList)
        [info] = listed.secrets
        assert (info.name, info.version, info.size, info.used_by) == (
            "db",
            2,
            len(NEW_VALUE),
            ["default/web"],
        )
        refused = await bus.request(SECRET_RM, SecretDelete(name="db"), timeout=5)
        assert refused.errors == [
            "secret default/db is used by default/web: remove it from their specs first"
        ]
        assert (await bus.request(DELETE, DeleteCommand(name="web"), timeout=5)).ok
        assert (await bus.request(SECRET_RM, SecretDelete(name="db"), timeout=5)).ok
        await bus.sync()
    no_trace(seen, VALUE, NEW_VALUE)
    rows = sqlite3.connect(tmp_path / "controller.db").execute("SELECT * FROM secrets").fetchall()
    assert rows == []


async def test_only_a_node_assigned_a_replica_gets_the_value_sealed_to_its_key(
    tmp_path: Path,
) -> None:
    seen: list[bytes] = []
    async with running(tmp_path, seen) as (bus, controller):
        apps = await bus.view(APPS)
        await put(bus, VALUE)
        assert (await apply(bus, secrets=[{"name": "db", "env": "DB"}])).ok
        state = await eventually(lambda: apps.get(WEB))
        agent = Opener()
        want = SecretWant(namespace="default", name="db", version=1)
        request = SecretValuesRequest(node="n1", public_key=agent.public_key, wants=[want])
        refused = await bus.request(SECRET_VALUES, request, timeout=5)
        assert isinstance(refused, Reply)
        assert refused.errors == ["node n1 runs no replica using secret default/db version 1"]

        replica = AssignedReplica(id="default.web.1", namespace="default", app="web", revision=1)
        await bus.publish(
            NODE_ASSIGN,
            NodeAssignment(node="n1", replicas=[replica], specs={replica.spec_key: state.spec}),
        )

        await eventually(lambda: "n1" in controller.assignments)
        answer = await bus.request(SECRET_VALUES, request, timeout=5)
        assert isinstance(answer, SecretValues), answer
        [item] = answer.values
        assert agent.open(answer.public_key, item.sealed, label("default", "db", 1)) == VALUE
        other = SecretValuesRequest(node="n2", public_key=agent.public_key, wants=[want])
        assert isinstance(await bus.request(SECRET_VALUES, other, timeout=5), Reply)
        await bus.sync()
    no_trace(seen, VALUE)


async def test_a_balancer_gets_route_certificates_and_never_an_app_secret(tmp_path: Path) -> None:
    seen: list[bytes] = []
    async with running(tmp_path, seen) as (bus, _):
        apps = await bus.view(APPS)
        for name, value in (("db", VALUE), ("crt", b"CERT"), ("key", b"KEY")):
            await put(bus, value, name)
        route = {"host": "web.test", "port": "http", "tls": {"cert": "crt", "key": "key"}}
        assert (await apply(bus, ports={"http": 80}, route=route, secrets=["db"])).ok
        await eventually(lambda: apps.get(WEB))
        balancer = Opener()

        def asking(*wants: tuple[str, int]) -> SecretValuesRequest:
            return SecretValuesRequest(
                node="lb-1",
                public_key=balancer.public_key,
                role="balancer",
                wants=[SecretWant(namespace="default", name=n, version=v) for n, v in wants],
            )

        answer = await bus.request(SECRET_VALUES, asking(("crt", 1), ("key", 1)), timeout=5)
        assert isinstance(answer, SecretValues)
        assert [
            balancer.open(answer.public_key, v.sealed, label("default", v.name, 1))
            for v in answer.values
        ] == [b"CERT", b"KEY"]
        refused = await bus.request(SECRET_VALUES, asking(("db", 1)), timeout=5)
        assert isinstance(refused, Reply)
        assert refused.errors == [
            "no route of balancer lb-1's apps uses secret default/db version 1"
        ]
        # a new certificate updates the route in place: no new revision
        changed = await put(bus, b"CERT2", "crt")
        assert [(r.name, r.revision, r.change) for r in changed.rolled] == [("web", 1, "updated")]
        state = await eventually(
            lambda: (s := apps.get(WEB)) and s.spec.route.tls.cert_version == 2 and s
        )
        assert state.revision == 1
        await bus.sync()
    no_trace(seen, VALUE, b"CERT2")
