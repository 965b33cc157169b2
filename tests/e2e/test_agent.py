"""The node agent on a real broker (mosquitto) and the real Docker engine.

The agent runs as a process; the test drives it like the scheduler would, by publishing
retained ``NodeAssignment``s, and watches its retained reports with an Observer.
Containers are found and cleaned up by the test's ``shoal.prefix`` label only.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from core import codec
from core.channels import EVENTS, LOGS_REQUEST, NODE_ASSIGN, NODE_INFO, NODE_METRICS, NODE_REPLICAS
from core.spec import AppSpec
from core.state import AssignedReplica, Event, NodeAssignment, NodeInfo, ReplicaStatus
from services.agent.containers import volume_name
from tests.support.observer import Observer
from tests.support.procs import ROOT, Broker, Proc, ProcGroup, start_broker

pytestmark = pytest.mark.e2e


def docker(*args: str, check: bool = True) -> str:
    out = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=60)
    if check and out.returncode != 0:
        raise AssertionError(f"docker {' '.join(args)}: {out.stderr}")
    return out.stdout.strip()


def remove_prefix_containers(prefix: str) -> None:
    ids = docker("ps", "-aq", "--filter", f"label=shoal.prefix={prefix}").split()
    if ids:
        docker("rm", "-f", *ids, check=False)


def echo_spec(name: str = "web", **fields: Any) -> AppSpec:
    base: dict[str, Any] = {
        "name": name,
        "image": "shoal-test/echo:v1",
        "ports": {"http": 8080},
        "resources": {"cpu": 0.1, "memory": "32Mi"},
        "termination": {"drain": "200ms", "grace": "2s"},
    }
    base.update(fields)
    return AppSpec.model_validate(base)


def new_replicas(spec: AppSpec, n: int, revision: int = 1) -> list[AssignedReplica]:
    return [
        AssignedReplica(
            id=f"{spec.namespace}.{spec.name}.{uuid.uuid4().hex[:8]}",
            namespace=spec.namespace,
            app=spec.name,
            revision=revision,
        )
        for _ in range(n)
    ]


def http_get(endpoint: str, path: str = "/", timeout: float = 3.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://{endpoint}{path}", timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, ""


class Rig:
    """One broker, one topic prefix, agents as processes, an Observer on the bus."""

    def __init__(self, procs: ProcGroup, broker: Broker, prefix: str, obs: Observer) -> None:
        self.procs, self.broker, self.prefix, self.obs = procs, broker, prefix, obs
        self.generation = 0
        self.specs: dict[str, dict[str, AppSpec]] = {}

    def start_agent(
        self,
        node: str = "n1",
        address: str = "127.0.0.2",
        *extra: str,
        env: dict[str, str] | None = None,
    ) -> Proc:
        return self.procs.service(
            "agent",
            self.broker.url,
            "--node-id",
            node,
            "--address",
            address,
            "--heartbeat",
            "1",
            "--stats-interval",
            "1",
            "--restart-initial",
            "0.2",
            "--restart-cap",
            "1.6",
            "--restart-reset",
            "5",
            *extra,
            prefix=self.prefix,
            name=f"agent-{node}",
            env=env,
        )

    async def assign(self, node: str, replicas: list[AssignedReplica], *specs: AppSpec) -> None:
        self.generation += 1
        by_key: dict[str, AppSpec] = {}
        for r in replicas:
            spec = next(s for s in specs if s.name == r.app and s.namespace == r.namespace)
            by_key[r.spec_key] = spec
        assignment = NodeAssignment(
            node=node, replicas=replicas, specs=by_key, generation=self.generation
        )
        await self.obs.bus.publish(NODE_ASSIGN, assignment)

    def report(self, node: str = "n1") -> dict[str, ReplicaStatus]:
        r = self.obs.value(NODE_REPLICAS, node)
        return {s.id: s for s in r.replicas} if r is not None else {}

    def info(self, node: str = "n1") -> NodeInfo | None:
        return self.obs.value(NODE_INFO, node)

    async def wait(
        self,
        predicate: Callable[[], Any],
        timeout: float = 20.0,
        message: str = "condition",
    ) -> Any:
        return await self.obs.wait_for(predicate, timeout, message)

    async def wait_phases(
        self, node: str, ids: list[str], phase: str, timeout: float = 20.0
    ) -> dict[str, ReplicaStatus]:
        def ok() -> dict[str, ReplicaStatus] | None:
            rep = self.report(node)
            if all(i in rep and rep[i].phase == phase for i in ids):
                return rep
            return None

        result: dict[str, ReplicaStatus] = await self.wait(
            ok, timeout, f"{len(ids)} replicas {phase} on {node}"
        )
        return result

    def containers(self, node: str | None = None) -> list[dict[str, Any]]:
        filters = ["--filter", f"label=shoal.prefix={self.prefix}"]
        if node:
            filters += ["--filter", f"label=shoal.node={node}"]
        ids = docker("ps", "-aq", *filters).split()
        # A container listed a moment ago may be gone now (the agent removing an orphan):
        # inspect prints the ones it found and fails for the rest.
        found = docker("inspect", *ids, check=False) if ids else ""
        return list(json.loads(found)) if found else []

    def events(self, kind: str) -> list[Event]:
        topic = self.obs.topic(EVENTS, kind)
        return [e.open(Event) for _, t, e in self.obs.seen if t == topic and e is not None]


@pytest.fixture
async def rig(procs: ProcGroup, prefix: str, echo_image: str) -> AsyncIterator[Rig]:
    broker = start_broker(procs, "mosquitto")
    try:
        async with Observer(broker.url, prefix) as obs:
            yield Rig(procs, broker, prefix, obs)
            procs.close()
    finally:
        remove_prefix_containers(prefix)


# -- issue 3: the skeleton -------------------------------------------------------------


async def test_runs_assigned_replicas_and_reports_them(rig: Rig) -> None:
    rig.start_agent("n1", "127.0.0.2", "--labels", "zone=a,disk=ssd")
    info = await rig.wait(lambda: (i := rig.info()) and i.status == "ready" and i, 20, "ready")
    assert info.address == "127.0.0.2"
    assert info.labels == {"zone": "a", "disk": "ssd"}
    assert info.capacity.cpu == os.cpu_count()
    assert info.capacity.memory > 2**30
    assert info.version.startswith("docker ")

    spec = echo_spec(env={"GREETING": "hi"})
    replicas = new_replicas(spec, 3)
    await rig.assign("n1", replicas, spec)
    report = await rig.wait_phases("n1", [r.id for r in replicas], "running")

    hosts = set()
    for r in replicas:
        status = report[r.id]
        assert status.endpoints["http"].startswith("127.0.0.2:")
        assert status.container_id
        assert status.started_at is not None
        code, body = await asyncio.to_thread(http_get, status.endpoints["http"])
        assert code == 200
        version, host = body.split()
        assert version == "v1"
        hosts.add(host)
    assert len(hosts) == 3

    boxes = {c["Config"]["Labels"]["shoal.replica"]: c for c in rig.containers("n1")}
    assert set(boxes) == {r.id for r in replicas}
    one = boxes[replicas[0].id]
    assert one["Name"] == f"/shoal.n1.{replicas[0].id}"
    labels = one["Config"]["Labels"]
    assert labels["shoal.managed"] == "true"
    assert labels["shoal.prefix"] == rig.prefix
    assert (labels["shoal.ns"], labels["shoal.app"], labels["shoal.revision"]) == (
        "default",
        "web",
        "1",
    )
    host_config = one["HostConfig"]
    assert host_config["CpuShares"] == 102
    assert host_config["NanoCpus"] == 0
    assert host_config["Memory"] == 32 * 1024**2
    assert host_config["RestartPolicy"]["Name"] == "no"
    assert host_config["SecurityOpt"] == ["no-new-privileges:true"]
    assert "GREETING=hi" in one["Config"]["Env"]

    # Scale down to one: two are reported terminating, then gone, and their containers too.
    await rig.assign("n1", replicas[:1], spec)
    await rig.wait(
        lambda: (
            all(rig.report()[r.id].phase == "terminating" for r in replicas[1:])
            if all(r.id in rig.report() for r in replicas[1:])
            else False
        ),
        10,
        "terminating reported",
    )
    await rig.wait(lambda: set(rig.report()) == {replicas[0].id}, 15, "removed")
    assert [c["Config"]["Labels"]["shoal.replica"] for c in rig.containers()] == [replicas[0].id]
    assert rig.report()[replicas[0].id].container_id == report[replicas[0].id].container_id


async def test_a_killed_container_is_seen_at_once_and_restarted(rig: Rig) -> None:
    rig.start_agent()
    spec = echo_spec()
    (replica,) = new_replicas(spec, 1)
    await rig.assign("n1", [replica], spec)
    first = (await rig.wait_phases("n1", [replica.id], "running"))[replica.id]

    killed = time.monotonic()
    docker("kill", first.container_id)
    seen: list[float] = []

    def exited_or_restarted() -> bool:
        s = rig.report().get(replica.id)
        if s is not None and (s.phase != "running" or s.restarts > 0):
            seen.append(time.monotonic() - killed)
            return True
        return False

    await rig.wait(exited_or_restarted, 10, "exit seen")
    again = await rig.wait(
        lambda: (
            (s := rig.report().get(replica.id)) and s.phase == "running" and s.restarts == 1 and s
        ),
        10,
        "restarted",
    )
    assert again.exit_code == 137
    assert again.container_id == first.container_id  # restarted in place, same replica
    assert len(rig.containers()) == 1
    code, _ = await asyncio.to_thread(http_get, again.endpoints["http"])
    assert code == 200
    print(f"exit reported {seen[0] * 1000:.0f} ms after docker kill")


async def test_removal_drains_then_sigterm_then_sigkill_after_grace(rig: Rig) -> None:
    rig.start_agent()
    # Ignores SIGTERM: only SIGKILL after the grace period ends it.
    stubborn = echo_spec(
        "stubborn",
        command=["sh", "-c", "trap '' TERM; while true; do sleep 0.1; done"],
        ports={},
        termination={"drain": "1s", "grace": "1s"},
    )
    polite = echo_spec("polite", termination={"drain": "0s", "grace": "30s"})
    (s1,), (p1,) = new_replicas(stubborn, 1), new_replicas(polite, 1)
    await rig.assign("n1", [s1, p1], stubborn, polite)
    await rig.wait_phases("n1", [s1.id, p1.id], "running")

    started = time.monotonic()
    await rig.assign("n1", [], stubborn, polite)
    await rig.wait(
        lambda: (s := rig.report().get(s1.id)) is not None and s.phase == "terminating",
        5,
        "terminating",
    )
    await rig.wait(lambda: p1.id not in rig.report(), 10, "polite gone")
    polite_took = time.monotonic() - started
    await rig.wait(lambda: not rig.report(), 15, "all gone")
    stubborn_took = time.monotonic() - started
    assert not rig.containers()
    # The echo workload exits at once on SIGTERM (far below its 30 s grace); the stubborn
    # one is killed only after drain (1 s) + grace (1 s).
    assert polite_took < 10
    assert stubborn_took >= 2.0


# -- issue 4: restarts, OOM, crash loops ------------------------------------------------


async def test_crash_loop_backs_off_and_counts_and_oom_is_reported(rig: Rig) -> None:
    rig.start_agent()
    crasher = echo_spec("crasher", command=["sh", "-c", "echo boom; exit 3"], ports={})
    hog = echo_spec("hog", resources={"cpu": 0.1, "memory": "16Mi"})
    (c1,), (h1,) = new_replicas(crasher, 1), new_replicas(hog, 1)
    await rig.assign("n1", [c1, h1], crasher, hog)
    running = await rig.wait_phases("n1", [h1.id], "running")

    # Crash loop: visible as backoff, exit code and restarts counted, delays growing.
    loop = await rig.wait(
        lambda: (s := rig.report().get(c1.id)) and s.phase == "backoff" and s.restarts >= 3 and s,
        30,
        "crash loop in backoff",
    )
    assert loop.exit_code == 3
    assert loop.reason == "Error"
    restarts = sorted(
        (e for e in rig.events("replica_restarted") if e.replica == c1.id),
        key=lambda e: e.data["restarts"],  # type: ignore[arg-type,return-value]
    )
    assert len(restarts) >= 3
    delays = [e.data["backoff"] for e in restarts]
    assert delays == sorted(delays)  # exponential back-off, reported with each restart
    assert delays[-1] > delays[0]

    # OOM: the workload allocates past its 16Mi limit in PID 1.
    code, _ = await asyncio.to_thread(
        http_get, running[h1.id].endpoints["http"], "/cgi-bin/alloc?mb=64"
    )
    assert code == 200
    oom = await rig.wait(
        lambda: (s := rig.report().get(h1.id)) and s.reason.endswith("OOMKilled") and s,
        15,
        "OOM reported",
    )
    assert oom.exit_code == 137
    back = await rig.wait(
        lambda: (s := rig.report().get(h1.id)) and s.phase == "running" and s.restarts == 1 and s,
        10,
        "restarted after OOM",
    )
    assert back.reason == "last exit: OOMKilled"


async def test_adoption_after_kill_9_restarts_nothing_and_removes_orphans(rig: Rig) -> None:
    agent = rig.start_agent()
    spec = echo_spec()
    replicas = new_replicas(spec, 3)
    await rig.assign("n1", replicas, spec)
    await rig.wait_phases("n1", [r.id for r in replicas], "running")
    before = {c["Id"]: c["State"]["StartedAt"] for c in rig.containers()}
    assert len(before) == 3

    agent.kill()  # kill -9: no goodbye
    await rig.wait(lambda: (i := rig.info()) is not None and i.status == "offline", 30, "last will")
    # While the agent is away: one replica is unassigned (an orphan now) and a stray
    # container with this node's labels appears; one new replica is assigned.
    (extra,) = new_replicas(spec, 1)
    await rig.assign("n1", [*replicas[:2], extra], spec)
    stray = docker(
        "run",
        "-d",
        "--label",
        "shoal.managed=true",
        "--label",
        f"shoal.prefix={rig.prefix}",
        "--label",
        "shoal.node=n1",
        "--label",
        "shoal.replica=default.web.deadbeef",
        "--label",
        "shoal.ns=default",
        "--label",
        "shoal.app=web",
        "--label",
        "shoal.revision=1",
        "shoal-test/echo:v1",
    )

    rig.start_agent()
    await rig.wait_phases("n1", [replicas[0].id, replicas[1].id, extra.id], "running")
    await rig.wait(lambda: len(rig.containers()) == 3, 15, "orphans removed")
    after = {c["Id"]: c["State"]["StartedAt"] for c in rig.containers()}
    kept = [c for c in before if c in after]
    assert len(kept) == 2
    for cid in kept:
        assert after[cid] == before[cid]  # adopted, not restarted
    assert stray not in after
    per_replica = [c["Config"]["Labels"]["shoal.replica"] for c in rig.containers()]
    assert sorted(per_replica) == sorted([replicas[0].id, replicas[1].id, extra.id])
    assert all(s.restarts == 0 for s in rig.report().values())


async def test_restart_counts_survive_an_agent_restart(rig: Rig) -> None:
    agent = rig.start_agent()
    spec = echo_spec()
    (replica,) = new_replicas(spec, 1)
    await rig.assign("n1", [replica], spec)
    first = (await rig.wait_phases("n1", [replica.id], "running"))[replica.id]
    docker("kill", first.container_id)
    await rig.wait(
        lambda: (s := rig.report().get(replica.id)) and s.phase == "running" and s.restarts == 1,
        15,
        "restarted once",
    )
    agent.kill()
    await rig.wait(lambda: (i := rig.info()) is not None and i.status == "offline", 30, "gone")
    rig.start_agent()
    await rig.wait(lambda: (i := rig.info()) is not None and i.status == "ready", 30, "back")
    await asyncio.sleep(1)  # a few report cycles of the new agent
    (status,) = rig.report().values()
    assert status.restarts == 1  # carried over from the retained report, not reset to 0
    assert status.exit_code == 137


async def test_two_agents_on_one_engine_touch_only_their_own(rig: Rig) -> None:
    rig.start_agent("n1", "127.0.0.2")
    rig.start_agent("n2", "127.0.0.3")
    spec = echo_spec()
    r1, r2 = new_replicas(spec, 2), new_replicas(spec, 2)
    await rig.assign("n1", r1, spec)
    await rig.assign("n2", r2, spec)
    rep1 = await rig.wait_phases("n1", [r.id for r in r1], "running")
    rep2 = await rig.wait_phases("n2", [r.id for r in r2], "running")
    assert all(s.endpoints["http"].startswith("127.0.0.2:") for s in rep1.values())
    assert all(s.endpoints["http"].startswith("127.0.0.3:") for s in rep2.values())
    for s in rep2.values():
        code, _ = await asyncio.to_thread(http_get, s.endpoints["http"])
        assert code == 200
    n2_before = {c["Id"]: c["State"]["StartedAt"] for c in rig.containers("n2")}

    await rig.assign("n1", [], spec)  # n1 removes all of its replicas...
    await rig.wait(lambda: not rig.report("n1"), 15, "n1 empty")
    assert not rig.containers("n1")
    # ...and n2's containers, same app, same prefix, same engine, are untouched.
    n2_after = {c["Id"]: c["State"]["StartedAt"] for c in rig.containers("n2")}
    assert n2_after == n2_before
    assert all(s.phase == "running" and s.restarts == 0 for s in rig.report("n2").values())


async def test_volumes_workdir_user_and_hardening(rig: Rig, tmp_path: Path) -> None:
    rig.start_agent()
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    volume = f"{rig.prefix}-cache"
    hardened = echo_spec(
        "hardened",
        command=[
            "sh",
            "-c",
            "id -u > /data/uid; pwd > /data/pwd; grep NoNewPrivs /proc/self/status > /data/nnp; "
            "touch /data/hardened-done; exec /start.sh",
        ],
        volumes=[{"source": str(data), "target": "/data"}],
        working_dir="/www",
        user="65534",
    )
    relaxed = echo_spec(
        "relaxed",
        command=[
            "sh",
            "-c",
            "grep NoNewPrivs /proc/self/status > /data/nnp-relaxed; echo kept > /cache/file; "
            "cat /cache/file > /data/cache; touch /data/relaxed-done; exec /start.sh",
        ],
        volumes=[
            {"source": str(data), "target": "/data"},
            {"source": volume, "target": "/cache"},
        ],
        security={"no_new_privileges": False},
    )
    (h1,), (r1,) = new_replicas(hardened, 1), new_replicas(relaxed, 1)
    scoped = volume_name(volume, prefix=rig.prefix, namespace=relaxed.namespace)
    try:
        await rig.assign("n1", [h1, r1], hardened, relaxed)
        await rig.wait_phases("n1", [h1.id, r1.id], "running")
        await rig.wait(
            lambda: (data / "hardened-done").exists() and (data / "relaxed-done").exists(),
            5,
            "files written",
        )
        assert (data / "uid").read_text().strip() == "65534"
        assert (data / "pwd").read_text().strip() == "/www"
        assert (data / "nnp").read_text().split() == ["NoNewPrivs:", "1"]
        assert (data / "nnp-relaxed").read_text().split() == ["NoNewPrivs:", "0"]
        assert (data / "cache").read_text().strip() == "kept"
        # the namespace's volume (another namespace's ``volume`` would be another one)
        volumes = json.loads(docker("volume", "inspect", scoped))
        assert volumes[0]["Name"] == scoped
        assert volumes[0]["Labels"] == {
            "shoal.managed": "true",
            "shoal.prefix": rig.prefix,
            "shoal.ns": relaxed.namespace,
            "shoal.volume": volume,
        }
        assert docker("volume", "ls", "-q", "--filter", f"name=^{volume}$").strip() == ""
    finally:
        await rig.assign("n1", [], hardened, relaxed)
        await rig.wait(lambda: not rig.report(), 15, "removed")
        docker("volume", "rm", "-f", scoped, check=False)


async def test_node_metrics_report_cpu_and_memory_per_replica(rig: Rig) -> None:
    rig.start_agent()
    spec = echo_spec(resources={"cpu": 0.5, "memory": "64Mi"})
    (r1,) = new_replicas(spec, 1)
    await rig.assign("n1", [r1], spec)
    report = await rig.wait_phases("n1", [r1.id], "running")

    def usage() -> Any:
        m = rig.obs.value(NODE_METRICS, "n1")
        return m.replicas.get(r1.id) if m is not None else None

    first = await rig.wait(lambda: (u := usage()) and u.memory > 0 and u, 10, "metrics")
    assert first.memory_limit == 64 * 1024**2
    assert (first.namespace, first.app) == ("default", "web")
    code, _ = await asyncio.to_thread(
        http_get, report[r1.id].endpoints["http"], "/cgi-bin/alloc?mb=24"
    )
    assert code == 200
    grown = await rig.wait(
        lambda: (u := usage()) and u.memory > first.memory + 20 * 1024**2 and u,
        10,
        "memory growth seen",
    )
    assert grown.cpu >= 0.0


async def test_logs_through_the_cli(rig: Rig) -> None:
    rig.start_agent()
    spec = echo_spec()
    replicas = new_replicas(spec, 2)
    await rig.assign("n1", replicas, spec)
    report = await rig.wait_phases("n1", [r.id for r in replicas], "running")
    env = {**os.environ, "SHOAL_BROKER": rig.broker.url, "SHOAL_PREFIX": rig.prefix}
    cli = [sys.executable, "-m", "services.cli"]

    marker = uuid.uuid4().hex[:8]
    code, _ = await asyncio.to_thread(
        http_get, report[replicas[0].id].endpoints["http"], f"/cgi-bin/log?msg=hello-{marker}"
    )
    assert code == 200
    out = await asyncio.to_thread(
        subprocess.run,
        [*cli, "logs", "web"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    assert f"{replicas[0].id} | hello-{marker}" in out.stdout
    assert f"{replicas[1].id} | echo v1 listening on :8080" in out.stdout

    out = await asyncio.to_thread(
        subprocess.run,
        [*cli, "logs", "web", "--replica", replicas[0].id, "--tail", "1"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert out.stdout.splitlines() == [f"hello-{marker}"]

    follow = rig.procs.spawn("logs-follow", [*cli, "logs", "web", "-f"], env=env)
    await rig.wait(lambda: "listening" in follow.output(), 15, "follow started")
    code, _ = await asyncio.to_thread(
        http_get, report[replicas[1].id].endpoints["http"], f"/cgi-bin/log?msg=later-{marker}"
    )
    await rig.wait(
        lambda: f"{replicas[1].id} | later-{marker}" in follow.output(), 10, "followed line"
    )
    follow.stop()

    missing = await asyncio.to_thread(
        subprocess.run,
        [*cli, "logs", "nosuchapp"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=30,
    )
    assert missing.returncode == 1
    assert "no running app default/nosuchapp" in missing.stderr


async def test_malformed_assignments_are_dropped_and_the_agent_keeps_going(rig: Rig) -> None:
    agent = rig.start_agent()
    await rig.wait(lambda: (i := rig.info()) and i.status == "ready", 20, "ready")
    topic = rig.obs.topic(NODE_ASSIGN, "n1")
    for payload in (
        b"\x00garbage",
        b'{"v": 1, "kind": "assign", "body": {"node": 5}}',
        b"\x81\xa1v\x01",
    ):
        await rig.obs.bus.publish_raw(topic, payload, retain=True)
    logs_request = rig.obs.topic(LOGS_REQUEST, None)
    await rig.obs.bus.publish_raw(logs_request, b"\xc1not msgpack")
    bad_request = rig.obs.bus.envelope("logs_request", {"app": 5})
    await rig.obs.bus.publish_raw(logs_request, codec.encode(bad_request))
    other = NodeAssignment(node="n2")
    await rig.obs.bus.publish(NODE_ASSIGN, other, key="n1")
    spec = echo_spec()
    (r1,) = new_replicas(spec, 1)
    await rig.assign("n1", [r1], spec)
    await rig.wait_phases("n1", [r1.id], "running")
    assert agent.alive()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, asyncio.CancelledError):
        pass
    finally:
        writer.close()


async def test_unreachable_engine_means_not_ready_then_recovers(rig: Rig, tmp_path: Path) -> None:
    """Docker unreachable (a socket nobody serves yet), then reachable through a proxy."""
    sock = tmp_path / "docker.sock"
    agent = rig.start_agent("n1", "127.0.0.2", "--docker", f"unix://{sock}")
    info = await rig.wait(
        lambda: (i := rig.info()) is not None and i.status == "not_ready" and i, 20, "not ready"
    )
    assert "unreachable" in info.reason
    spec = echo_spec()
    (r1,) = new_replicas(spec, 1)
    await rig.assign("n1", [r1], spec)
    await asyncio.sleep(1.0)
    assert agent.alive()
    assert not rig.containers()

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_unix_connection("/var/run/docker.sock")
        await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))

    server = await asyncio.start_unix_server(forward, path=str(sock))
    try:
        await rig.wait(lambda: (i := rig.info()) is not None and i.status == "ready", 20, "ready")
        await rig.wait_phases("n1", [r1.id], "running")
        assert len(rig.containers()) == 1
        await rig.assign("n1", [], spec)
        await rig.wait(lambda: not rig.report(), 15, "removed")
    finally:
        server.close()
