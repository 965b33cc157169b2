"""The ``command`` provider against a real executable (a small Python script)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from services.provisioner.providers.base import NodeRequest, ProviderError
from services.provisioner.providers.command import CommandProvider

SCRIPT = r"""
import json, sys, pathlib
state = pathlib.Path(sys.argv[1])
nodes = json.loads(state.read_text()) if state.exists() else []
req = json.load(sys.stdin)
assert req["version"] == 1
if req["action"] == "create":
    n = req["node"]
    if n["size"] == "broken":
        print(json.dumps({"error": "no capacity in region"}))
        sys.exit(0)
    if n["size"] == "crash":
        print("boom", file=sys.stderr)
        sys.exit(3)
    if n["size"] == "garbage":
        print("not json")
        sys.exit(0)
    node = {"node": n["node"], "size": n["size"], "address": "10.0.0.9", "created": 5.0}
    nodes.append(node)
    print(json.dumps({"node": node}))
elif req["action"] == "delete":
    nodes = [n for n in nodes if n["node"] != req["node"]]
    print("{}")
elif req["action"] == "list":
    print(json.dumps({"nodes": nodes}))
state.write_text(json.dumps(nodes))
"""


@pytest.fixture
def provider(tmp_path: Path) -> CommandProvider:
    script = tmp_path / "provider.py"
    script.write_text(SCRIPT)
    return CommandProvider([sys.executable, str(script), str(tmp_path / "state.json")], "p1")


def request(size: str = "small") -> NodeRequest:
    return NodeRequest(node="auto-1", size=size, cpu=1.0, memory=1024**3, labels={"a": "b"})


def test_create_list_delete(provider: CommandProvider, tmp_path: Path) -> None:
    async def run() -> None:
        made = await provider.create(request())
        assert made.node == "auto-1"
        assert made.address == "10.0.0.9"
        assert [n.node for n in await provider.list()] == ["auto-1"]
        await provider.delete("auto-1")
        assert await provider.list() == []

    asyncio.run(run())
    assert json.loads((tmp_path / "state.json").read_text()) == []


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ("broken", "no capacity in region"),
        ("crash", "exited 3: boom"),
        ("garbage", "not JSON"),
    ],
)
def test_failures_are_provider_errors(provider: CommandProvider, size: str, message: str) -> None:
    with pytest.raises(ProviderError, match=message):
        asyncio.run(provider.create(request(size)))


def test_a_missing_executable_and_a_timeout(tmp_path: Path) -> None:
    missing = CommandProvider([str(tmp_path / "nope")], "p1")
    with pytest.raises(ProviderError, match="nope"):
        asyncio.run(missing.list())
    slow = CommandProvider([sys.executable, "-c", "import time; time.sleep(30)"], "p1", 0.5)
    with pytest.raises(ProviderError, match="no answer within"):
        asyncio.run(slow.list())
