"""``shoal get/describe/apply --dry-run/diff`` against a real controller on mosquitto, the
test playing the scheduler and health monitor (their retained status is all the CLI reads)."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import pytest
import yaml

from core.channels import APPS, NODE_INFO, SCHEDULER_STATUS
from core.spec import Resources
from core.state import AppState, NodeInfo, SchedulerStatus
from tests.integration.test_controller import publish_health, start_controller, wait_online
from tests.integration.test_controller_cli import WEB, shoal, write
from tests.support.observer import Observer
from tests.support.procs import ROOT, Broker, ProcGroup

pytestmark = pytest.mark.integration


async def test_get_describe_dry_run_diff_and_watch(
    mosquitto: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    v1 = write(tmp_path, "v1.yaml", "v1")
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: web\nimage: ''\n")
    async with Observer(mosquitto.url, prefix) as obs:
        await wait_online(obs, start_controller(procs, mosquitto, prefix, tmp_path / "data"))

        dry = await shoal(mosquitto, prefix, "apply", "-f", v1, "--dry-run")
        assert (dry.code, dry.out) == (
            0,
            "app default/web would be created as revision 1 (dry run)\n",
        )
        assert obs.value(APPS, WEB) is None
        # kubectl diff: 1 changes, 0 none, 2 an error
        assert (await shoal(mosquitto, prefix, "diff", "-f", v1)).code == 1
        invalid = await shoal(mosquitto, prefix, "diff", "-f", str(broken))
        assert invalid.code == 2, invalid.err
        assert (await shoal(mosquitto, prefix, "apply", "-f", v1)).code == 0
        assert (await shoal(mosquitto, prefix, "diff", "-f", v1)).code == 0

        await obs.wait_for(lambda: obs.value(APPS, WEB) is not None, 10, "app stored")
        await obs.bus.publish(
            SCHEDULER_STATUS,
            SchedulerStatus(
                namespace="default",
                name="web",
                desired=2,
                unplaceable=2,
                message="0/3 nodes fit: 3 insufficient memory",
                reasons={"insufficient memory": 3},
            ),
        )
        await obs.bus.sync()

        one = await shoal(mosquitto, prefix, "get", "app", "web", "-o", "json")
        assert one.code == 0, one.err
        doc = json.loads(one.out)
        assert (doc["name"], doc["phase"], doc["desired"]) == ("web", "pending", 2)
        assert doc["updated"].endswith("Z")
        assert "T" in doc["updated"]
        as_yaml = await shoal(mosquitto, prefix, "get", "apps", "-o", "yaml")
        assert yaml.safe_load(as_yaml.out)[0] == doc
        names = await shoal(mosquitto, prefix, "get", "apps", "-o", "name")
        assert names.out == "app/default/web\n"
        missing = await shoal(mosquitto, prefix, "get", "app", "nope")
        assert (missing.code, missing.err.strip()) == (1, "error: app default/nope not found")

        described = await shoal(mosquitto, prefix, "describe", "app", "web")
        assert described.code == 0, described.err
        assert "Phase:        pending" in described.out
        assert "0/3 nodes fit: 3 insufficient memory" in described.out
        scheduled = [line.split()[:3] for line in described.out.splitlines() if "Scheduled" in line]
        assert scheduled == [["Scheduled", "False", "Unplaceable"]]

        # apply --wait that times out says why
        waited = await shoal(mosquitto, prefix, "apply", "-f", v1, "--wait", "--wait-timeout", "1")
        assert waited.code == 1
        assert "default/web: 0/2 replicas of revision 1 ready" in waited.err
        assert "2 unplaceable: 0/3 nodes fit: 3 insufficient memory" in waited.err

        # -w prints on start and again when what it shows changes, until --watch-timeout
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            *("get", "apps", "-w", "--watch-timeout", "20"),
            cwd=ROOT,
            env={**os.environ, "SHOAL_BROKER": mosquitto.url, "SHOAL_PREFIX": prefix},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        assert proc.stdout is not None
        first = await asyncio.wait_for(read_block(proc.stdout), 15)
        assert first[1].split()[:4] == ["default", "web", "1", "0"]
        s = obs.value(APPS, WEB)
        assert isinstance(s, AppState)
        await publish_health(obs, s)
        second = await asyncio.wait_for(read_block(proc.stdout), 15)
        assert second[1].split()[:4] == ["default", "web", "1", "2"]
        assert await asyncio.wait_for(proc.wait(), 30) == 0


async def read_block(stream: asyncio.StreamReader) -> list[str]:
    """One printing of a watched table: lines up to the blank line after it."""
    lines: list[str] = []
    while (line := (await stream.readline()).decode()) not in ("\n", ""):
        lines.append(line.rstrip("\n"))
    return lines


async def test_a_refused_connection_is_one_error_line(procs: ProcGroup, prefix: str) -> None:
    dead = cast(Broker, SimpleNamespace(url="mqtt://127.0.0.1:1"))
    for args in (("get", "apps"), ("describe", "node", "n1"), ("node", "list")):
        run = await shoal(dead, prefix, *args, "--timeout", "20")
        assert run.code == 1
        assert run.out == ""
        lines = run.err.strip().splitlines()
        assert len(lines) == 1, run.err
        assert lines[0].startswith("error: no connection to the broker at mqtt://127.0.0.1:1")


async def test_a_named_context_picks_broker_and_prefix(
    mosquitto: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHOAL_")}
    env["SHOAL_CONFIG"] = str(tmp_path / "config.yaml")

    async def run(*args: str) -> tuple[int, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "services.cli",
            *args,
            cwd=ROOT,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        return proc.returncode or 0, out.decode() + err.decode()

    async with Observer(mosquitto.url, prefix) as obs:
        await obs.bus.publish(
            NODE_INFO,
            NodeInfo(node="n1", address="127.0.0.1", capacity=Resources(cpu=1, memory=2**30)),
        )
        await obs.bus.sync()
        assert (await run("config", "set-context", "it", "--broker", mosquitto.url))[0] == 0
        assert (await run("config", "set-context", "it", "--prefix", prefix))[0] == 0
        assert (await run("config", "set-context", "other", "--prefix", "elsewhere"))[0] == 0
        assert (await run("config", "use-context", "it"))[0] == 0
        assert await run("get", "nodes", "-o", "name") == (0, "node/n1\n")
        env["SHOAL_CONTEXT"] = "other"  # no broker of its own: the default one, nothing there
        assert (await run("get", "nodes", "-o", "name", "--context", "it")) == (0, "node/n1\n")
