"""Issue 13 item 4 on a real cluster: an app reads its secret from ``/run/secrets/<name>``
(a read-only file in memory) and from an env variable, while a subscriber to ``#`` for the
whole test sees no trace of either value; a new value rolls the app to a new revision whose
replica reads the new value; the value is not in ``get -o json``, ``rollout history``, any
service's (debug) log, nor the controller's database."""

from __future__ import annotations

import base64
import json
import subprocess
import uuid
from pathlib import Path

import pytest

from tests.support.cluster import Cluster, wait_for

pytestmark = pytest.mark.e2e

SPEC = """
name: web
image: shoal-test/echo:v1
replicas: 1
resources: {cpu: 0.05, memory: 32Mi}
ports: {http: 8080}
route: {host: web.test, port: http}
termination: {drain: 0s, grace: 1s}
secrets:
  - db-pass
  - {name: api-key, env: API_KEY}
"""


def traces(value: str) -> list[bytes]:
    raw = value.encode()
    return [raw, base64.b64encode(raw)]


def docker(*args: str) -> str:
    return subprocess.run(["docker", *args], capture_output=True, text=True, check=True).stdout


def running_revision(cluster: Cluster) -> tuple[str, str] | None:
    """(container id, revision) of the one running container of web, if exactly one."""
    ids = cluster.containers(app="web")
    if len(ids) != 1:
        return None
    revision = docker("inspect", "-f", '{{index .Config.Labels "shoal.revision"}}', ids[0])
    return ids[0], revision.strip()


def test_an_app_reads_its_secrets_and_a_new_value_rolls_it(
    cluster: Cluster, tmp_path: Path
) -> None:
    first, second, api = (f"{word}-{uuid.uuid4().hex}" for word in ("first", "second", "api"))
    seen = tmp_path / "everything.bin"
    broker = cluster.broker
    with seen.open("wb") as out:
        spy = subprocess.Popen(
            ["mosquitto_sub", "-h", broker.host, "-p", str(broker.port), "-t", "#", "-v"],
            stdout=out,
        )
    try:
        cluster.start()
        missing = cluster.apply_text(SPEC, check=False)
        assert missing.returncode != 0
        assert "secret 'db-pass' does not exist in namespace default" in missing.stderr
        assert cluster.containers(all_states=True) == []

        secret_file = tmp_path / "db-pass"
        secret_file.write_text(first)
        made = cluster.shoal("secret", "create", "db-pass", "--from-file", str(secret_file))
        assert made.stdout.strip() == "secret default/db-pass created (version 1)"
        cluster.shoal("secret", "create", "api-key", "--from-literal", api)
        cluster.apply_text(SPEC, "--wait")
        cid, revision = wait_for(lambda: running_revision(cluster), message="one replica")  # type: ignore[misc]
        assert revision == "1"
        assert docker("exec", cid, "cat", "/run/secrets/db-pass") == first
        assert docker("exec", cid, "sh", "-c", 'printf %s "$API_KEY"') == api
        # read-only, in memory on the node (Docker shows the bound file as tmpfs)
        mounts = docker("exec", cid, "grep", " /run/secrets/db-pass ", "/proc/mounts").split()
        assert (mounts[2], mounts[3].split(",")[0]) == ("tmpfs", "ro")
        [mount] = json.loads(docker("inspect", "-f", "{{json .Mounts}}", cid))
        assert (mount["Destination"], mount["RW"]) == ("/run/secrets/db-pass", False)
        assert cluster.get("/", host="web.test").status == 200

        secret_file.write_text(second)
        changed = cluster.shoal("secret", "create", "db-pass", "--from-file", str(secret_file))
        assert changed.stdout.splitlines() == [
            "secret default/db-pass updated (version 2)",
            "  app default/web: rolling to revision 2",
        ]

        def rolled() -> tuple[str, str] | None:
            found = running_revision(cluster)
            return found if found is not None and found[1] == "2" else None

        new_cid, _ = wait_for(rolled, timeout=60, message="revision 2 running alone")  # type: ignore[misc]
        assert docker("exec", new_cid, "cat", "/run/secrets/db-pass") == second
        assert docker("exec", new_cid, "sh", "-c", 'printf %s "$API_KEY"') == api
        old_file = Path(mount["Source"])
        wait_for(lambda: not old_file.exists(), message="the old replica's file removed")

        listed = cluster.shoal("secret", "ls").stdout
        assert "db-pass" in listed
        assert "default/web" in listed
        refused = cluster.shoal("secret", "rm", "api-key", check=False)
        assert refused.returncode == 1
        assert "is used by default/web" in refused.stderr

        shown = [
            cluster.shoal("get", "apps", "-o", "json").stdout,
            cluster.shoal("get", "apps", "-o", "yaml").stdout,
            cluster.shoal("rollout", "history", "web", "-o", "json").stdout,
            cluster.shoal("describe", "app", "web").stdout,
            listed,
        ]
        assert '"version": 2' in shown[0]
    finally:
        spy.terminate()
        spy.wait(timeout=10)
    captured = seen.read_bytes()
    assert b"/apps/default/web" in captured  # the spy did see the cluster's traffic
    assert b"/cmd/secret_put" in captured  # from before the first secret was sent
    assert b"/cmd/secret_values" in captured  # and the deliveries to the agent
    logs = b"".join(p.log_path.read_bytes() for p in cluster.procs.procs)
    database = b"".join(p.read_bytes() for p in cluster.data_dir.glob("controller.db*"))
    for value in (first, second, api):
        for trace in traces(value):
            assert trace not in captured, f"{value} on the bus"
            assert trace not in logs, f"{value} in a log"
            assert trace not in database, f"{value} in the database"
            assert not any(trace.decode() in text for text in shown), f"{value} shown"
