"""Compose files end to end (issue 12, item 4): ``shoal apply -f compose.yaml`` builds the
``build:`` image on the local engine, starts ``web`` only once ``db`` is healthy, serves
``web`` through the balancer, and ``shoal delete -f compose.yaml`` removes everything.

The compose application is ``tests/e2e/compose_app`` (copied to the test's work folder with
the static busybox binary beside its Dockerfile)."""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, http_get, wait_for
from tests.support.net import free_port, wait_port

pytestmark = pytest.mark.e2e

APP = Path(__file__).parent / "compose_app"
BUSYBOX = Path("/bin/busybox")
#: db's readiness delay (``compose_app/compose.yaml``)
START_DELAY = 3.0


def ready(cluster: Cluster, name: str) -> int:
    for app in cluster.get_json("apps"):
        if app["name"] == name and app["namespace"] == "composetest":
            return int(app["ready"])  # type: ignore[call-overload]
    return 0


def container_time(container: str, field: str) -> float:
    """A container's timestamp (``docker inspect`` template ``field``), as Unix seconds."""
    out = subprocess.run(
        ["docker", "inspect", "--format", field, container],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    # RFC 3339 with nanoseconds: 2026-12-03T06:57:01.123456789Z
    whole, _, fraction = out.rstrip("Z").partition(".")
    seconds = datetime.fromisoformat(whole).replace(tzinfo=UTC).timestamp()
    return seconds + float(f"0.{fraction or 0}")


def built_images(tag_prefix: str) -> list[str]:
    out = subprocess.run(
        ["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}", tag_prefix],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return out.split()


@pytest.mark.skipif(not BUSYBOX.exists(), reason="needs busybox-static (.ci/setup.sh)")
def test_compose_build_depends_on_healthy_serve_and_delete(cluster: Cluster) -> None:
    folder = cluster.procs.workdir / "compose_app"
    shutil.copytree(APP, folder)
    shutil.copy(BUSYBOX, folder / "web" / "busybox")
    compose = str(folder / "compose.yaml")
    cluster.start()
    try:
        applied = cluster.shoal("apply", "-f", compose)
        assert "app composetest/web created (revision 1)" in applied.stdout
        assert "app composetest/db created (revision 1)" in applied.stdout
        assert "building composetest-web:" in applied.stderr
        [image] = built_images("composetest-web")
        spec = json.loads(
            cluster.shoal("get", "app", "web", "-n", "composetest", "-o", "json").stdout
        )
        assert spec["spec"]["image"] == image

        # depends_on service_healthy: while db runs but is not ready (START_DELAY), web
        # has no container at all. Web's containers are listed first, db's readiness read
        # after: web having a container then means db was ready before it.
        wait_for(lambda: cluster.containers(app="db"), 30, message="db container running")

        def db_ready_and_web_held() -> bool:
            web = cluster.containers(app="web", all_states=True)
            db_is_ready = ready(cluster, "db") == 1
            assert db_is_ready or web == [], "web started before db was ready"
            return db_is_ready

        wait_for(db_ready_and_web_held, 60, message="db ready")
        wait_for(lambda: ready(cluster, "web") == 2, 60, message="2 web replicas ready")
        # and by the engine's own clock: no web container was created before db could be
        # ready (START_DELAY after it started), however late the polls above came
        [db] = cluster.containers(app="db")
        db_started = container_time(db, "{{.State.StartedAt}}")
        for web in cluster.containers(app="web", all_states=True):
            held = container_time(web, "{{.Created}}") - db_started
            assert held >= START_DELAY - 0.1, f"web created {held:.2f}s after db started"

        # served through the balancer; the page comes from the build argument in .env
        def served() -> bool:
            r = cluster.get("/")
            return r.status == 200 and r.body.strip() == "hello from .env"

        wait_for(served, 20, message="web served through the balancer")

        # the same content is the same tag: nothing is built again, nothing changes
        again = cluster.shoal("apply", "-f", compose)
        assert "app composetest/web unchanged (revision 1)" in again.stdout
        assert "building" not in again.stderr
        assert cluster.shoal("diff", "-f", compose, check=False).returncode == 0

        deleted = cluster.shoal("delete", "-f", compose).stdout
        assert "app composetest/web deleted" in deleted
        assert "app composetest/db deleted" in deleted
        wait_for(
            lambda: cluster.containers(all_states=True) == [], 30, message="every container gone"
        )
        assert [a for a in cluster.get_json("apps") if a["namespace"] == "composetest"] == []
    finally:
        images = built_images("composetest-web")
        if images:
            subprocess.run(["docker", "rmi", "-f", *images], capture_output=True)


@pytest.mark.skipif(
    not BUSYBOX.exists() or shutil.which("docker-registry") is None,
    reason="needs busybox-static and docker-registry (.ci/setup.sh)",
)
def test_compose_build_is_pushed_to_the_cluster_registry(cluster: Cluster) -> None:
    """With ``--registry``, the built image is tagged for the registry and pushed there, so
    that every node can pull it; the replicas run from that reference."""
    port = free_port()
    store = cluster.procs.workdir / "registry"
    store.mkdir()
    config = store / "config.yml"
    config.write_text(
        "version: 0.1\nlog: {level: warn}\n"
        f"storage: {{filesystem: {{rootdirectory: {store}}}}}\n"
        f"http: {{addr: '127.0.0.1:{port}'}}\n"
    )
    cluster.procs.spawn("registry", ["docker-registry", "serve", str(config)])
    wait_port("127.0.0.1", port, timeout=15)
    registry = f"127.0.0.1:{port}"

    folder = cluster.procs.workdir / "compose_app"
    shutil.copytree(APP, folder)
    shutil.copy(BUSYBOX, folder / "web" / "busybox")
    compose = folder / "compose.yaml"
    # web alone (no depends_on): this test is about where its image goes
    compose.write_text(
        compose.read_text().replace("    depends_on:\n      db: {condition: service_healthy}\n", "")
    )
    cluster.start()
    try:
        out = cluster.shoal("apply", "-f", str(compose), "--registry", registry, "--wait")
        assert f"pushing {registry}/composetest-web:" in out.stderr
        spec = json.loads(
            cluster.shoal("get", "app", "web", "-n", "composetest", "-o", "json").stdout
        )
        image = spec["spec"]["image"]
        assert image.startswith(f"{registry}/composetest-web:")
        tags = json.loads(http_get(f"http://{registry}/v2/composetest-web/tags/list").body)
        assert tags["tags"] == [image.rsplit(":", 1)[1]]
        assert ready(cluster, "web") == 2
        cluster.shoal("delete", "-f", str(compose))
        wait_for(lambda: cluster.containers(all_states=True) == [], 30, message="removed")
    finally:
        images = built_images(f"{registry}/composetest-web")
        if images:
            subprocess.run(["docker", "rmi", "-f", *images], capture_output=True)
