"""``shoal completion``: the shell's callback completes node names from a real broker."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from core.channels import NODE_INFO
from core.spec import Resources
from core.state import NodeInfo
from tests.support.observer import Observer
from tests.support.procs import ROOT, Broker

pytestmark = pytest.mark.integration


async def complete(broker_url: str, prefix: str, words: str) -> tuple[int, str]:
    """What bash's completion function receives for the command line ``words``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env.update(
        SHOAL_BROKER=broker_url,
        SHOAL_PREFIX=prefix,
        SHOAL_CONFIG=os.devnull,
        _SHOAL_COMPLETE="bash_complete",
        COMP_WORDS=words,
        COMP_CWORD=str(len(words.split(" ")) - 1),
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert err == b""
    return proc.returncode or 0, out.decode()


async def test_node_names_complete_and_a_dead_broker_completes_nothing(
    mosquitto: Broker, prefix: str
) -> None:
    async with Observer(mosquitto.url, prefix) as obs:
        for name in ("n1", "n2", "m1"):
            await obs.bus.publish(
                NODE_INFO,
                NodeInfo(node=name, address="127.0.0.1", capacity=Resources(cpu=1, memory=2**30)),
            )
        await obs.bus.sync()
        assert await complete(mosquitto.url, prefix, "shoal describe node n") == (
            0,
            "plain,n1\nplain,n2\n",
        )
        assert await complete(mosquitto.url, prefix, "shoal node drain ") == (
            0,
            "plain,m1\nplain,n1\nplain,n2\n",
        )
    code, out = await complete("mqtt://127.0.0.1:1", prefix, "shoal describe node ")
    assert (code, out.strip()) == (0, "")
