"""Image pulls from a private registry: Debian's docker-registry on 127.0.0.1 with htpasswd.

The echo image is pushed under a unique tag, the local copy of that tag removed, so the
agent has to pull it: with good credentials (one pull for three replicas), with bad ones
(``image_pull_failed`` with the registry's reason, retried with back-off).
"""

from __future__ import annotations

import shutil
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import aiodocker
import pytest

from tests.e2e.test_agent import Rig, docker, echo_spec, new_replicas, rig  # noqa: F401
from tests.support.net import free_port, wait_port

pytestmark = pytest.mark.e2e

USER, PASSWORD = "shoal", "s3cret-pw"


@dataclass
class Registry:
    host: str  # 127.0.0.1:<port>

    def ref(self, tag: str) -> str:
        return f"{self.host}/shoal-test/echo:{tag}"


def ensure_registry_installed() -> None:
    if shutil.which("docker-registry") and shutil.which("htpasswd"):
        return
    subprocess.run(
        ["apt-get", "install", "-y", "--no-install-recommends", "docker-registry", "apache2-utils"],
        check=True,
        capture_output=True,
        env={"DEBIAN_FRONTEND": "noninteractive", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )


def make_htpasswd() -> str:
    return subprocess.run(
        ["htpasswd", "-Bbn", USER, PASSWORD], check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
async def registry(rig: Rig) -> Registry:  # noqa: F811
    ensure_registry_installed()
    workdir: Path = rig.procs.workdir / "registry"
    (workdir / "data").mkdir(parents=True)
    (workdir / "htpasswd").write_text(make_htpasswd())
    port = free_port()
    (workdir / "config.yml").write_text(
        "version: 0.1\n"
        "log: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {workdir / 'data'}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
        f"auth: {{htpasswd: {{realm: shoal-test, path: {workdir / 'htpasswd'}}}}}\n"
    )
    rig.procs.spawn("registry", ["docker-registry", "serve", str(workdir / "config.yml")])
    wait_port("127.0.0.1", port, timeout=15)
    return Registry(f"127.0.0.1:{port}")


async def push(reg: Registry, tag: str) -> str:
    """Push the echo image as ``tag`` with credentials, then forget the local tag."""
    ref = reg.ref(tag)
    docker("tag", "shoal-test/echo:v1", ref)
    async with aiodocker.Docker() as client:
        auth = {"username": USER, "password": PASSWORD, "serveraddress": reg.host}
        await client.images.push(ref, auth=auth)
    docker("rmi", ref)
    return ref


async def test_private_registry_pull_with_good_and_bad_credentials(
    rig: Rig,  # noqa: F811
    registry: Registry,
) -> None:
    tag = uuid.uuid4().hex[:8]
    ref = await push(registry, tag)
    try:
        # credentials never on the command line: n1 reads a file, n2 its environment
        logins = rig.procs.workdir / "registry-logins"
        logins.write_text(f"# test registry\n{registry.host}={USER}:{PASSWORD}\n")
        logins.chmod(0o600)
        n1 = rig.start_agent("n1", "127.0.0.2", "--registry-auth-file", str(logins))
        n2 = rig.start_agent(
            "n2", "127.0.0.3", env={"SHOAL_REGISTRY_AUTH": f"{registry.host}={USER}:wrong"}
        )
        assert not any(PASSWORD in arg or "wrong" in arg for p in (n1, n2) for arg in p.argv)
        spec = echo_spec(image=ref)

        # Bad credentials first: the reason is the registry's, and pulls are retried.
        bad = new_replicas(spec, 2)
        await rig.assign("n2", bad, spec)
        failed = await rig.wait(
            lambda: (
                all(
                    (s := rig.report("n2").get(r.id)) is not None and s.phase == "image_pull_failed"
                    for r in bad
                )
                and rig.report("n2")
            ),
            30,
            "image_pull_failed",
        )
        reason = failed[bad[0].id].reason
        assert registry.host in reason
        assert any(word in reason for word in ("unauthorized", "authentication required")), reason
        await rig.wait(
            lambda: len([e for e in rig.events("image_pull_failed") if e.node == "n2"]) >= 2,
            15,
            "a retried pull",
        )

        # Good credentials: three replicas, one pull, progress visible in events.
        good = new_replicas(spec, 3)
        await rig.assign("n1", good, spec)
        await rig.wait_phases("n1", [r.id for r in good], "running", timeout=30)
        pulls = [e for e in rig.events("image_pull") if e.node == "n1"]
        starts = [e for e in pulls if e.data.get("status") == "start"]
        assert len(starts) == 1
        assert any(e.data.get("status") == "done" for e in pulls)
        assert docker("image", "inspect", "--format", "{{.Id}}", ref)

        # n2 keeps failing until it is given the image another way, and n1's pull is one:
        # the two agents share an engine, so n2's next retry may find the image there.
        phases = {s.phase for s in rig.report("n2").values()}
        assert phases <= {"image_pull_failed", "pulling", "creating", "running"}, phases
    finally:
        await rig.assign("n1", [], spec)
        await rig.assign("n2", [], spec)
        await rig.wait(lambda: not rig.report("n1") and not rig.report("n2"), 15, "removed")
        docker("rmi", "-f", ref, check=False)
