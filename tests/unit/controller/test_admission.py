"""Admission rules (pure): what a spec may ask of a node, per namespace; route hosts
belong to one namespace."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import SpecError
from core.keys import AppKey
from core.spec import AppSpec, load_specs
from services.controller.admission import (
    DEFAULT_POLICY,
    Policy,
    admission_errors,
    check_admission,
    host_errors,
    load_policy,
)
from services.controller.listen_ports import listen_port_errors


def spec(namespace: str = "default", name: str = "web", **fields: Any) -> AppSpec:
    return AppSpec.model_validate({"name": name, "namespace": namespace, "image": "x", **fields})


def hint(namespace: str) -> str:
    return f"(allow it for namespace {namespace} in the policy file)"


POLICY = load_policy(
    """
namespaces:
  "*":
    bind_mounts: [/srv/shared/]
  ops:
    privileged: true
    capabilities: [cap_net_admin, SYS_TIME]
    bind_mounts: [/var/log]
    docker_socket: true
  root:
    bind_mounts: [/]
  builder:
    capabilities: ["*"]
    bind_mounts: [/run]
"""
)


@pytest.mark.parametrize(
    ("namespace", "fields", "errors"),
    [
        ("default", {}, []),
        ("default", {"security": {"cap_drop": ["ALL"], "read_only_rootfs": True}}, []),
        ("default", {"volumes": [{"source": "data", "target": "/d"}]}, []),
        (
            "default",
            {"security": {"privileged": True}},
            [f"default/web: security.privileged: refused by policy 'privileged' {hint('default')}"],
        ),
        (
            "default",
            {"security": {"cap_add": ["NET_ADMIN", "cap_sys_time"]}},
            [
                "default/web: security.cap_add[0]: NET_ADMIN: refused by policy 'capabilities' "
                + hint("default"),
                "default/web: security.cap_add[1]: SYS_TIME: refused by policy 'capabilities' "
                + hint("default"),
            ],
        ),
        (
            "default",
            {"volumes": [{"source": "/etc", "target": "/e"}]},
            [
                "default/web: volumes[0].source: host path /etc: refused by policy "
                f"'bind_mounts' {hint('default')}"
            ],
        ),
        (
            "default",
            {"volumes": [{"source": "/var/run/docker.sock", "target": "/s"}]},
            [
                "default/web: volumes[0].source: host path /var/run/docker.sock: refused by "
                f"policy 'bind_mounts' {hint('default')}",
                "default/web: volumes[0].source: /var/run/docker.sock holds the Docker socket: "
                f"refused by policy 'docker_socket' {hint('default')}",
            ],
        ),
        (
            "default",
            {"volumes": [{"source": "/", "target": "/host"}]},
            [
                f"default/web: volumes[0].source: host path /: refused by policy 'bind_mounts' "
                f"{hint('default')}",
                "default/web: volumes[0].source: / holds the Docker socket: refused by policy "
                f"'docker_socket' {hint('default')}",
            ],
        ),
        # every field at once: one line each
        (
            "prod",
            {
                "security": {"privileged": True, "cap_add": ["SYS_ADMIN"]},
                "volumes": [{"source": "/home", "target": "/h"}],
            },
            [
                f"prod/web: security.privileged: refused by policy 'privileged' {hint('prod')}",
                "prod/web: security.cap_add[0]: SYS_ADMIN: refused by policy 'capabilities' "
                + hint("prod"),
                f"prod/web: volumes[0].source: host path /home: refused by policy 'bind_mounts' "
                f"{hint('prod')}",
            ],
        ),
    ],
)
def test_the_default_policy_refuses_what_gives_away_the_node(
    namespace: str, fields: dict[str, Any], errors: list[str]
) -> None:
    assert admission_errors(spec(namespace, **fields), DEFAULT_POLICY) == errors


@pytest.mark.parametrize(
    ("namespace", "fields", "rules"),
    [
        # "*" allows /srv/shared (and below) for every namespace, nothing else
        ("default", {"volumes": [{"source": "/srv/shared/a", "target": "/a"}]}, []),
        ("ops", {"volumes": [{"source": "/srv/shared", "target": "/a"}]}, []),
        ("default", {"volumes": [{"source": "/srv/sharedx", "target": "/a"}]}, ["bind_mounts"]),
        # a path that climbs out of an allowed one is judged where it lands
        (
            "default",
            {"volumes": [{"source": "/srv/shared/../../etc", "target": "/a"}]},
            ["bind_mounts"],
        ),
        ("default", {"security": {"privileged": True}}, ["privileged"]),
        # ops: privileged, two capabilities (any spelling), /var/log and the socket
        ("ops", {"security": {"privileged": True}}, []),
        ("ops", {"security": {"cap_add": ["CAP_NET_ADMIN", "sys_time"]}}, []),
        ("ops", {"security": {"cap_add": ["SYS_ADMIN"]}}, ["capabilities"]),
        ("ops", {"security": {"cap_add": ["ALL"]}}, ["capabilities"]),
        ("ops", {"volumes": [{"source": "/var/log/app", "target": "/l"}]}, []),
        ("ops", {"volumes": [{"source": "/var/run/docker.sock", "target": "/s"}]}, ["bind_mounts"]),
        # root may bind anything but not the socket (nor a directory holding it)
        ("root", {"volumes": [{"source": "/etc", "target": "/e"}]}, []),
        ("root", {"volumes": [{"source": "/run/docker.sock", "target": "/s"}]}, ["docker_socket"]),
        ("root", {"volumes": [{"source": "/var/run", "target": "/s"}]}, ["docker_socket"]),
        ("root", {"volumes": [{"source": "/", "target": "/host"}]}, ["docker_socket"]),
        ("builder", {"security": {"cap_add": ["ALL", "SYS_ADMIN"]}}, []),
        ("builder", {"volumes": [{"source": "/run", "target": "/r"}]}, ["docker_socket"]),
        ("builder", {"volumes": [{"source": "/run/user/1000", "target": "/r"}]}, []),
        # another namespace gets only what "*" allows
        ("other", {"security": {"cap_add": ["NET_ADMIN"]}}, ["capabilities"]),
        ("other", {"volumes": [{"source": "/var/log", "target": "/l"}]}, ["bind_mounts"]),
    ],
)
def test_a_policy_allows_per_namespace(
    namespace: str, fields: dict[str, Any], rules: list[str]
) -> None:
    errors = admission_errors(spec(namespace, **fields), POLICY)
    assert [line.split("refused by policy '")[1].split("'")[0] for line in errors] == rules


@pytest.mark.parametrize(
    "field",
    [
        {"network_mode": "host"},
        {"security": {"network_mode": "host"}},
        {"security": {"pid_mode": "host"}},
        {"devices": ["/dev/sda"]},
        {"security": {"devices": ["/dev/kvm"]}},
    ],
)
def test_host_namespaces_and_devices_cannot_be_asked_for(field: dict[str, Any]) -> None:
    with pytest.raises(SpecError, match="unknown field"):
        load_specs(str({"name": "web", "image": "x", **field}).replace("'", '"'))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("namespaces: {ops: {privileged: true, hostnet: true}}", "namespaces.ops.hostnet: unknown"),
        ("namespaces: {ops: {bind_mounts: [var/log]}}", "must be an absolute host path"),
        ("namespaces: {Bad_NS: {}}", "namespace 'Bad_NS' must be a DNS label"),
        ("[]", "a policy file is one mapping"),
        ("namespaces: {a: {}}\nnamespaces: {}", "given twice"),
    ],
)
def test_bad_policy_files_are_refused(text: str, error: str) -> None:
    with pytest.raises(SpecError, match=error):
        load_policy(text, "policy.yaml")


def test_an_empty_policy_is_the_default() -> None:
    assert load_policy("{}") == DEFAULT_POLICY == Policy()


def routed(namespace: str, name: str, host: str | None) -> AppSpec:
    return spec(namespace, name, ports={"http": 80}, route={"host": host} if host else {})


@pytest.mark.parametrize(
    ("current", "batch", "errors"),
    [
        # the same host within a namespace is the namespace's business
        ([("prod", "web", "web.test")], [("prod", "admin", "web.test")], []),
        ([("prod", "web", "web.test")], [("aaa", "evil", "web.test")], ["aaa/evil", "prod/web"]),
        ([("prod", "web", "*.web.test")], [("aaa", "evil", "*.web.test")], ["aaa/evil"]),
        # a wildcard and a host under it overlap, both ways
        ([("prod", "web", "*.web.test")], [("aaa", "evil", "api.web.test")], ["aaa/evil"]),
        ([("prod", "web", "a.b.web.test")], [("aaa", "evil", "*.web.test")], ["aaa/evil"]),
        ([("prod", "web", "*.b.web.test")], [("aaa", "evil", "*.web.test")], ["aaa/evil"]),
        # but *.web.test does not match web.test itself
        ([("prod", "web", "web.test")], [("aaa", "evil", "*.web.test")], []),
        ([("prod", "web", "web.test")], [("aaa", "other", "other.test")], []),
        # hostless routes own no host
        ([("prod", "web", None)], [("aaa", "evil", None)], []),
        # an app moving its host away frees it within the same batch order
        (
            [("prod", "web", "web.test")],
            [("prod", "web", "new.test"), ("aaa", "x", "web.test")],
            [],
        ),
        # two namespaces in one batch
        ([], [("prod", "web", "web.test"), ("aaa", "evil", "web.test")], ["aaa/evil", "prod/web"]),
    ],
)
def test_a_route_host_belongs_to_one_namespace(
    current: list[tuple[str, str, str | None]],
    batch: list[tuple[str, str, str | None]],
    errors: list[str],
) -> None:
    apps = {AppKey(ns, n): routed(ns, n, h) for ns, n, h in current}
    lines = host_errors([routed(ns, n, h) for ns, n, h in batch], apps)
    if not errors:
        assert lines == []
        return
    [line] = lines
    assert line.startswith(f"{errors[0]}: route.host: ")
    assert "a host belongs to one namespace" in line
    if len(errors) > 1:
        assert f"by app {errors[1]} of namespace {errors[1].split('/')[0]}" in line


def test_check_admission_refuses_the_whole_batch_with_every_line() -> None:
    batch = [
        spec("default", "a", security={"privileged": True}),
        routed("aaa", "evil", "web.test"),
        spec("default", "fine"),
    ]
    current = {AppKey("prod", "web"): routed("prod", "web", "web.test")}
    with pytest.raises(SpecError) as caught:
        check_admission(batch, current, DEFAULT_POLICY)
    assert [line.split(":")[0] for line in caught.value.errors] == ["default/a", "aaa/evil"]
    check_admission([spec("default", "fine")], current, DEFAULT_POLICY)


def listening(namespace: str, name: str, *ports: int) -> AppSpec:
    return spec(
        namespace, name, ports={"db": 5432}, tcp_routes=[{"listen": p, "port": "db"} for p in ports]
    )


@pytest.mark.parametrize(
    ("current", "batch", "errors"),
    [
        # re-applying an app with its own port, or moving it to another port
        ([("prod", "db", 15432)], [("prod", "db", 15432)], []),
        ([("prod", "db", 15432)], [("prod", "db", 15433), ("prod", "db2", 15432)], []),
        # another app, in any namespace, cannot take it
        ([("prod", "db", 15432)], [("prod", "db2", 15432)], ["prod/db2 ... prod/db"]),
        ([("prod", "db", 15432)], [("test", "db", 15432)], ["test/db ... prod/db"]),
        # two specs of one batch asking for one port: the second is refused
        ([], [("a", "one", 9000), ("b", "two", 9000)], ["b/two ... a/one"]),
        ([("prod", "db", 15432)], [("prod", "other", 1, 2)], []),
    ],
)
def test_a_tcp_listen_port_belongs_to_one_app(
    current: list[tuple[Any, ...]], batch: list[tuple[Any, ...]], errors: list[str]
) -> None:
    apps = {AppKey(c[0], c[1]): listening(*c) for c in current}
    lines = listen_port_errors([listening(*b) for b in batch], apps)
    assert len(lines) == len(errors), lines
    for line, expected in zip(lines, errors, strict=True):
        app, _, owner = expected.partition(" ... ")
        assert line.startswith(f"{app}: tcp_routes[0].listen: port ")
        assert line.endswith(f"already used by app {owner}: a listen port belongs to one app")


def test_check_admission_refuses_a_taken_listen_port() -> None:
    current = {AppKey("prod", "db"): listening("prod", "db", 15432)}
    with pytest.raises(SpecError, match="a listen port belongs to one app"):
        check_admission([listening("test", "db", 15432)], current, DEFAULT_POLICY)
