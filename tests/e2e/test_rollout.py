"""Issue 7: rolling updates without a failed request, automatic rollback, undo, canary,
namespaces, and a controller restart in mid-rollout — all under continuous load."""

from __future__ import annotations

import time

import pytest

from tests.support.cluster import Cluster, wait_for
from tests.support.load import LoadLoop

pytestmark = pytest.mark.e2e


def spec(
    version: str,
    *,
    replicas: int = 4,
    namespace: str = "default",
    host: str = "app.test",
    readiness: str = "/healthz",
    extra: str = "",
) -> str:
    return f"""
name: app
namespace: {namespace}
image: shoal-test/echo:{version}
replicas: {replicas}
resources: {{cpu: 0.05, memory: 32Mi}}
ports: {{http: 8080}}
health:
  readiness: {{http: {readiness}, port: http, interval: 200ms, timeout: 500ms, failures: 1}}
route: {{host: {host}, path: /, port: http}}
termination: {{drain: 1s, grace: 3s}}
update: {{max_surge: 1, max_unavailable: 0, progress_deadline: 8s{extra}}}
"""


def app_state(cluster: Cluster, namespace: str = "default") -> dict[str, object]:
    for app in cluster.get_json("apps"):
        if app["namespace"] == namespace and app["name"] == "app":
            return app
    raise AssertionError("app not found")


def only_version_answers(cluster: Cluster, version: str, host: str = "app.test") -> bool:
    bodies = {cluster.get("/", host=host).body.split()[0] for _ in range(20)}
    return bodies == {version}


def test_rolling_update_v1_to_v2_without_a_failed_request(cluster: Cluster) -> None:
    cluster.start()
    cluster.apply_text(spec("v1"), "--wait")
    with LoadLoop("127.0.0.1", cluster.listen_port, vhost="app.test", workers=4) as load:
        time.sleep(1)
        out = cluster.apply_text(spec("v2"), "--wait").stdout
        assert "revision 2" in out
        time.sleep(1)
        result = load.stop()
    assert result.failed == 0, (result.failed, result.errors[:5])
    assert result.bodies["v2"] > 0
    assert only_version_answers(cluster, "v2")
    # The last v1 replica may still be draining (termination.drain + grace) when --wait returns.
    wait_for(
        lambda: len(cluster.containers(app="app", all_states=True)) == 4,
        20,
        message="old containers removed",
    )


def test_bad_version_is_rolled_back_while_v1_serves(cluster: Cluster) -> None:
    cluster.start()
    cluster.apply_text(spec("v1", replicas=2), "--wait")
    with LoadLoop("127.0.0.1", cluster.listen_port, vhost="app.test", workers=2) as load:
        bad = cluster.apply_text(spec("v2", replicas=2, readiness="/never"), "--wait", check=False)
        assert bad.returncode != 0
        wait_for(lambda: app_state(cluster)["phase"] == "rolled_back", 60, message="rolled back")
        result = load.stop()
    assert result.failed == 0, (result.failed, result.errors[:5])
    assert result.bodies.keys() == {"v1"}
    assert only_version_answers(cluster, "v1")


def test_undo_to_an_earlier_revision(cluster: Cluster) -> None:
    cluster.start()
    cluster.apply_text(spec("v1", replicas=2), "--wait")
    cluster.apply_text(spec("v2", replicas=2), "--wait")
    history = cluster.shoal("rollout", "history", "app").stdout
    assert "1" in history
    assert "2" in history
    cluster.shoal("rollout", "undo", "app", "--to-revision", "1")
    wait_for(lambda: only_version_answers(cluster, "v1"), 60, message="v1 back")
    assert app_state(cluster)["revision"] == 3


def test_canary_share_then_promote_and_abort(cluster: Cluster) -> None:
    cluster.start()
    cluster.apply_text(spec("v1", replicas=4), "--wait")
    cluster.apply_text(spec("v2", replicas=4, extra=", canary: 1"))

    def share() -> float:
        versions = [cluster.get("/", host="app.test").body.split()[0] for _ in range(400)]
        return versions.count("v2") / len(versions)

    wait_for(lambda: share() > 0, 60, message="canary receives traffic")
    measured = share()
    assert 0.10 <= measured <= 0.40, measured  # 1 of 4 replicas by weight: ~25%
    cluster.shoal("rollout", "abort", "app")
    wait_for(lambda: only_version_answers(cluster, "v1"), 60, message="abort back to v1")

    cluster.apply_text(spec("v2", replicas=4, extra=", canary: 1"))
    wait_for(lambda: share() > 0, 60, message="canary again")
    cluster.shoal("rollout", "promote", "app")
    wait_for(lambda: only_version_answers(cluster, "v2"), 90, message="promoted to v2")


def test_test_and_prod_namespaces_side_by_side(cluster: Cluster) -> None:
    cluster.start()
    cluster.apply_text(spec("v1", replicas=1, namespace="prod", host="prod.test"), "--wait")
    cluster.apply_text(spec("v2", replicas=1, namespace="test", host="test.test"), "--wait")
    assert only_version_answers(cluster, "v1", host="prod.test")
    assert only_version_answers(cluster, "v2", host="test.test")
    assert {(a["namespace"], a["name"]) for a in cluster.get_json("apps")} == {
        ("prod", "app"),
        ("test", "app"),
    }
    cluster.shoal("delete", "app", "app", "-n", "test")
    wait_for(lambda: cluster.get("/", host="test.test").status == 404, 30)
    assert only_version_answers(cluster, "v1", host="prod.test")


def test_controller_restart_in_mid_rollout(cluster: Cluster) -> None:
    cluster.start()
    cluster.apply_text(spec("v1", replicas=4), "--wait")
    with LoadLoop("127.0.0.1", cluster.listen_port, vhost="app.test", workers=2) as load:
        cluster.apply_text(spec("v2", replicas=4))
        wait_for(lambda: load.snapshot().bodies["v2"] > 0, 60, message="rollout started")
        controller = cluster.services["controller"]
        controller.kill()
        controller.start()
        wait_for(lambda: only_version_answers(cluster, "v2"), 120, message="rollout completed")
        result = load.stop()
    assert result.failed == 0, (result.failed, result.errors[:5])
    assert app_state(cluster)["revision"] == 2
