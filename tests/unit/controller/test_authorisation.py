"""With an identities file, every command the controller serves is authorised: a user with
no grant in the namespace is refused, by name, for every verb; nothing is changed.

A new controller command must be listed in ``BODIES`` (or ``PUBLIC``): that is where its
author decides who may send it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from core.channels import APPS, COMMANDS
from core.commands import Reply
from core.config import ServiceConfig
from core.identities import AuthFile, Identity, dump_auth
from core.memory import MemoryBroker
from services.controller.service import ControllerService
from tests.support.memory import connected, serving
from tests.support.waiting import eventually

PREFIX = "t"
H = "$7$101$AAAAAAAAAAAAAAAA$AAAA"
NS = {"namespace": "prod", "name": "web"}
BODIES: dict[str, dict[str, Any]] = {
    "apply": {"apps": [{**NS, "image": "shoal-test/echo:v1"}]},
    "delete": NS,
    "scale": {**NS, "replicas": 1},
    "rollback": NS,
    "history": NS,
    "rollout": {**NS, "action": "promote"},
    "secret_put": {**NS, "sender": "x", "sealed": "y"},
    "secret_rm": NS,
    "secret_ls": {"namespace": "prod"},
    "secret_values": {"node": "n2", "public_key": "k", "wants": []},
}
#: commands anyone may send
PUBLIC = {"secret_key"}
SERVED = {c.name: c for c in COMMANDS if c.served_by == "controller"}


def test_every_controller_command_says_who_may_send_it() -> None:
    assert set(SERVED) == set(BODIES) | PUBLIC


def identities(path: Path) -> Path:
    auth = AuthFile(
        prefix=PREFIX,
        identities={
            "mallory": Identity(role="user", password_hash=H, grants={"test": ["*"]}),
            "agent-n1": Identity(role="agent", node="n1", password_hash=H),
        },
    )
    path.write_text(dump_auth(auth))
    return path


@pytest.mark.parametrize("user", ["mallory", "agent-n1", "stranger"])
async def test_a_user_without_a_grant_is_refused_every_verb(tmp_path: Path, user: str) -> None:
    broker = MemoryBroker()
    controller = ControllerService(
        ServiceConfig(broker=broker, prefix=PREFIX, instance="c1"),
        tmp_path,
        auth=identities(tmp_path / "ids.yaml"),
    )
    async with connected(broker, PREFIX, "m", user=user) as bus, serving(controller):
        await eventually(lambda: controller.serving)
        apps = await bus.view(APPS)
        for name, body in BODIES.items():
            command = SERVED[name]
            env = await bus.request_raw(command.topic(PREFIX, user), command.kind, body, 5)
            assert env.kind == "reply", (name, env)
            reply = env.open(Reply)
            assert not reply.ok, name
            assert reply.errors[0].startswith(f"not allowed: user {user!r} may not "), reply
            if name != "secret_values":
                assert reply.errors[0].split(" may not ")[1].startswith(name), reply
                assert "'prod'" in reply.errors[0], reply
        # the bare topic carries no identity: refused too
        bare = await bus.request_raw(SERVED["history"].topic(PREFIX), "history", NS, 5)
        assert "cmd/<name>/<user>" in bare.open(Reply).errors[0]
        await bus.sync()
        assert dict(apps) == {}
        # the public key is for anyone
        key = SERVED["secret_key"]
        answer = await bus.request_raw(key.topic(PREFIX, user), key.kind, {}, 5)
        assert answer.kind == key.answer_kind
