"""Admission in the controller shell (in-memory broker): a refused apply, dry run or undo
changes nothing, stored or retained."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from core.bus import Bus
from core.channels import APPLY, APPS, ROLLBACK
from core.commands import ApplyCommand, Reply, RollbackCommand
from core.config import ServiceConfig
from core.keys import AppKey
from core.memory import MemoryBroker
from services.controller.admission import DEFAULT_POLICY, Policy, load_policy
from services.controller.service import ControllerService
from services.controller.store_sqlite import SqliteStore
from tests.support.memory import connected, serving
from tests.support.waiting import eventually

PREFIX = "t"


@asynccontextmanager
async def running(data_dir: Path, policy: Policy = DEFAULT_POLICY) -> AsyncIterator[Bus]:
    broker = MemoryBroker()
    config = ServiceConfig(broker=broker, prefix=PREFIX, instance="c1")
    controller = ControllerService(config, data_dir, policy=policy)
    async with connected(broker, PREFIX, "me") as bus, serving(controller):
        await eventually(lambda: controller.bus.connected and controller.store is not None)
        yield bus


def app(namespace: str = "default", **fields: Any) -> dict[str, Any]:
    return {"name": "web", "namespace": namespace, "image": "img:1", **fields}


async def apply(bus: Bus, *apps: dict[str, Any], dry_run: bool = False) -> Reply:
    return await bus.request(APPLY, ApplyCommand(apps=list(apps), dry_run=dry_run), timeout=5)


PRIVILEGED = {"security": {"privileged": True}}


async def test_a_refused_apply_changes_nothing_and_a_dry_run_says_the_same(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as bus:
        apps = await bus.view(APPS)
        assert (await apply(bus, app())).ok
        before = await eventually(lambda: apps.get(AppKey("default", "web")))
        refusal = (
            "default/web: security.privileged: refused by policy 'privileged' "
            "(allow it for namespace default in the policy file)"
        )
        for dry_run in (True, False):
            reply = await apply(bus, app(**PRIVILEGED), app("other"), dry_run=dry_run)
            assert not reply.ok
            assert reply.errors == [refusal]
        await bus.sync()
        assert dict(apps) == {AppKey("default", "web"): before}  # other/web was not applied
    stored = SqliteStore(tmp_path / "controller.db")
    assert {k: r.state for k, r in stored.load().items()} == {AppKey("default", "web"): before}
    assert [r.revision for r in stored.history(AppKey("default", "web"))] == [1]


async def test_the_policy_allows_a_namespace_and_not_another(tmp_path: Path) -> None:
    policy = load_policy("namespaces: {ops: {privileged: true}}")
    async with running(tmp_path, policy) as bus:
        assert (await apply(bus, app("ops", **PRIVILEGED))).ok
        reply = await apply(bus, app("default", **PRIVILEGED))
        assert reply.errors[0].startswith("default/web: security.privileged: refused")


async def test_undo_to_a_revision_the_policy_now_refuses_is_refused(tmp_path: Path) -> None:
    allowing = load_policy("namespaces: {default: {privileged: true}}")
    async with running(tmp_path, allowing) as bus:
        assert (await apply(bus, app(**PRIVILEGED))).ok
        assert (await apply(bus, app(image="img:2"))).revision == 2
    async with running(tmp_path) as bus:  # restarted without the allowance
        apps = await bus.view(APPS)
        reply = await bus.request(ROLLBACK, RollbackCommand(name="web", to_revision=1), timeout=5)
        assert reply.errors == [
            "cannot undo to revision 1: default/web: security.privileged: refused by policy "
            "'privileged' (allow it for namespace default in the policy file)"
        ]
        state = await eventually(lambda: apps.get(AppKey("default", "web")))
        assert state.revision == 2


async def test_a_host_of_another_namespace_is_refused_naming_its_app(tmp_path: Path) -> None:
    routed = {"ports": {"http": 80}, "route": {"host": "web.test"}}
    async with running(tmp_path) as bus:
        apps = await bus.view(APPS)
        assert (await apply(bus, app("prod", **routed))).ok
        reply = await apply(bus, {**app("aaa", **routed), "name": "evil"})
        assert reply.errors == [
            "aaa/evil: route.host: 'web.test' already used by app prod/web of namespace "
            "prod: a host belongs to one namespace"
        ]
        assert (await apply(bus, {**app("prod", **routed), "name": "admin"})).ok
        await eventually(lambda: AppKey("prod", "admin") in apps)
        assert AppKey("aaa", "evil") not in apps
