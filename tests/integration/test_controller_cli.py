"""``shoal diff`` and ``shoal rollout ...`` against a real controller on mosquitto."""

from __future__ import annotations

import asyncio
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from core.channels import APPS
from core.keys import AppKey
from core.state import AppState
from tests.integration.test_controller import publish_health, start_controller, wait_online
from tests.support.observer import Observer
from tests.support.procs import ROOT, Broker, ProcGroup

pytestmark = pytest.mark.integration

WEB = AppKey("default", "web")

SPEC = """
name: web
image: shoal-test/echo:{version}
replicas: {replicas}
ports: {{http: 8080}}
route: {{host: web.test, port: http}}
update: {{max_surge: 1{extra}}}
"""


@dataclass
class Run:
    code: int
    out: str
    err: str


async def shoal(broker: Broker, prefix: str, *args: str) -> Run:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.cli",
        *args,
        cwd=ROOT,
        env={**os.environ, "SHOAL_BROKER": broker.url, "SHOAL_PREFIX": prefix, "COLUMNS": "250"},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    return Run(proc.returncode or 0, out.decode(), err.decode())


def write(tmp_path: Path, name: str, version: str, replicas: int = 2, extra: str = "") -> str:
    path = tmp_path / name
    path.write_text(SPEC.format(version=version, replicas=replicas, extra=extra))
    return str(path)


async def test_diff_history_undo_status_promote_abort(
    mosquitto: Broker, procs: ProcGroup, prefix: str, tmp_path: Path
) -> None:
    v1 = write(tmp_path, "v1.yaml", "v1")
    v2 = write(tmp_path, "v2.yaml", "v2", replicas=3)
    canary = write(tmp_path, "canary.yaml", "v3", extra=", canary: 1")
    async with Observer(mosquitto.url, prefix) as obs:
        await wait_online(obs, start_controller(procs, mosquitto, prefix, tmp_path / "data"))

        created = await shoal(mosquitto, prefix, "diff", "-f", v1, "--exit-code")
        assert created.code == 1
        assert "+ default/web: would be created as revision 1" in created.out
        assert (await shoal(mosquitto, prefix, "apply", "-f", v1)).code == 0
        same = await shoal(mosquitto, prefix, "diff", "-f", v1, "--exit-code")
        assert (same.code, same.out.splitlines()[-1].strip()) == (
            0,
            "default/web: unchanged (revision 1)",
        )
        changed = await shoal(mosquitto, prefix, "diff", "-f", v2)
        assert changed.code == 1  # as kubectl diff: 1 when something would change
        assert "~ default/web: new revision 2 (now 1), rolled out" in changed.out
        assert "    image: shoal-test/echo:v1 -> shoal-test/echo:v2" in changed.out
        assert "    replicas: 2 -> 3" in changed.out
        assert obs.value(APPS, WEB).revision == 1  # type: ignore[union-attr]

        assert (await shoal(mosquitto, prefix, "apply", "-f", v2)).code == 0
        history = await shoal(mosquitto, prefix, "rollout", "history", "web")
        assert history.code == 0, history.err
        rows = [
            r for r in (line.split() for line in history.out.splitlines()) if r and r[0].isdigit()
        ]
        assert [r[0] for r in rows] == ["1", "2"]
        assert rows[1][1] == "*"
        assert "image: shoal-test/echo:v1 -> shoal-test/echo:v2; replicas: 2 -> 3" in history.out

        status = await shoal(mosquitto, prefix, "rollout", "status", "web")
        assert status.code == 0
        assert "default/web: revision 2, progressing" in status.out

        undo = await shoal(mosquitto, prefix, "rollout", "undo", "web", "--to-revision", "1")
        assert undo.code == 0, undo.err
        assert "app default/web rolling back as revision 3" in undo.out
        bad = await shoal(mosquitto, prefix, "rollout", "undo", "web", "--to-revision", "9")
        assert bad.code == 1
        assert "app default/web has no revision 9 (known: 1, 2, 3)" in bad.err

        promote = await shoal(mosquitto, prefix, "rollout", "promote", "web")
        assert promote.code == 1
        assert "app default/web has no canary to promote" in promote.err

        # walk revision 3 to the end as the health monitor would, then try a canary
        async def settle() -> AppState:
            while True:
                s = obs.value(APPS, WEB)
                assert s is not None
                if s.phase == "stable":
                    return s
                await publish_health(obs, s)
                await asyncio.sleep(0.1)

        await asyncio.wait_for(settle(), 20)
        assert (await shoal(mosquitto, prefix, "apply", "-f", canary)).code == 0
        watched = await shoal(mosquitto, prefix, "rollout", "status", "web", "--watch-timeout", "1")
        assert "revision 4 (target): 0/1 ready, shoal-test/echo:v3, 33% of traffic" in watched.out
        aborted = await shoal(mosquitto, prefix, "rollout", "abort", "web")
        assert aborted.code == 0, aborted.err
        assert "app default/web aborted: back to revision 3" in aborted.out
        await obs.wait_for(
            lambda: (s := obs.value(APPS, WEB)) and s.phase == "rolled_back",
            10,
            "canary aborted",
        )
        final = await shoal(mosquitto, prefix, "rollout", "status", "web", "--watch")
        assert final.code == 1  # rolled back
        assert "rolled back to revision 3: canary of revision 4 aborted by cli" in final.out
