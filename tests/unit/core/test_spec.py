"""App spec validation: good specs load, each kind of bad spec gets its exact message."""

from __future__ import annotations

import pytest

from core.errors import SpecError
from core.keys import AppKey
from core.spec import AppSpec, load_specs, validate_apps

GOOD = """
name: web
namespace: prod
image: registry.example:5000/web:1.4
command: ["/app", "--port", "8080"]
env: {LOG_LEVEL: info, WORKERS: 4, DEBUG: false}
replicas: 3
resources: {cpu: 0.25, memory: 128Mi}
ports: {http: 8080}
health:
  readiness: {http: /healthz, port: http, interval: 1s, timeout: 500ms, failures: 2}
  liveness:  {tcp: http, interval: 2s, failures: 3}
route: {host: web.example.com, path: /, port: http}
placement: {strategy: spread, constraints: {zone: [eu-1, eu-2]}, spread_by: zone, max_per_node: 2}
update: {max_surge: 1, max_unavailable: 0, auto_rollback: true}
autoscale: {min: 2, max: 20, target: {rps_per_replica: 100}}
"""


def test_the_design_example_loads_with_units_parsed() -> None:
    (spec,) = load_specs(GOOD)
    assert spec.key == AppKey("prod", "web")
    assert str(spec.key) == "prod/web"
    assert spec.resources.cpu == 0.25
    assert spec.resources.memory == 128 * 1024**2
    assert spec.env == {"LOG_LEVEL": "info", "WORKERS": "4", "DEBUG": "false"}
    assert spec.health.readiness is not None
    assert spec.health.readiness.timeout == 0.5
    assert spec.health.readiness.kind == "http"
    assert spec.health.liveness is not None
    assert spec.health.liveness.kind == "tcp"
    assert spec.port_number("http") == 8080
    assert spec.placement.constraints == {"zone": ["eu-1", "eu-2"]}


def test_minimal_spec_gets_defaults() -> None:
    spec = AppSpec(name="a", image="busybox")
    assert spec.namespace == "default"
    assert spec.replicas == 1
    assert spec.resources.memory == 64 * 1024**2
    assert spec.update.max_surge == 1


def test_several_documents_json_list_and_apps_wrapper() -> None:
    yaml_text = "name: a\nimage: x\n---\nname: b\nimage: y\n"
    assert [s.name for s in load_specs(yaml_text)] == ["a", "b"]
    json_text = '{"apps": [{"name": "a", "image": "x"}, {"name": "b", "image": "y"}]}'
    assert [s.name for s in load_specs(json_text)] == ["a", "b"]
    assert [s.name for s in load_specs('[{"name": "c", "image": "z"}]')] == ["c"]


@pytest.mark.parametrize(
    ("doc", "expected"),
    [
        ({"image": "x"}, "app 1: name: required field is missing"),
        ({"name": "Web", "image": "x"}, "app 1 (Web): name: name 'Web' must be a DNS label"),
        ({"name": "a", "image": "x", "replcias": 3}, "app 1 (a): replcias: unknown field"),
        (
            {"name": "a", "image": "x", "replicas": -1},
            "app 1 (a): replicas: Input should be greater than or equal to 0",
        ),
        (
            {"name": "a", "image": "x", "resources": {"memory": "12x"}},
            "app 1 (a): resources.memory: invalid memory size '12x'",
        ),
        (
            {"name": "a", "image": "x", "resources": {"cpu": "lots"}},
            "app 1 (a): resources.cpu: invalid cpu amount 'lots'",
        ),
        (
            {"name": "a", "image": "x", "resources": {"memory": "1Mi"}},
            "app 1 (a): resources.memory: memory must be at least 6Mi",
        ),
        (
            {"name": "a", "image": "x", "ports": {"http": 70000}},
            "app 1 (a): ports: port 'http': 70000 is not in 1-65535",
        ),
        (
            {"name": "a", "image": "x", "ports": {"http": 80}, "route": {"port": "web"}},
            "app 1 (a): route refers to port 'web', not among ports (http)",
        ),
        (
            {"name": "a", "image": "x", "route": {"path": "/"}},
            "app 1 (a): route needs a port, and the app declares no ports",
        ),
        (
            {
                "name": "a",
                "image": "x",
                "ports": {"http": 80},
                "health": {"readiness": {"http": "healthz"}},
            },
            "app 1 (a): health.readiness: http probe path 'healthz' must start with '/'",
        ),
        (
            {
                "name": "a",
                "image": "x",
                "ports": {"http": 80},
                "health": {"readiness": {"http": "/h", "tcp": "http"}},
            },
            "app 1 (a): health.readiness: a probe needs exactly one of http, tcp or exec",
        ),
        (
            {"name": "a", "image": "x", "health": {"readiness": {"http": "/", "interval": "soon"}}},
            "app 1 (a): health.readiness.interval: invalid duration 'soon'",
        ),
        (
            {
                "name": "a",
                "image": "x",
                "autoscale": {"min": 5, "max": 2, "target": {"rps_per_replica": 1}},
            },
            "app 1 (a): autoscale: autoscale min (5) is greater than max (2)",
        ),
        (
            {"name": "a", "image": "x", "autoscale": {"max": 2, "target": {}}},
            "app 1 (a): autoscale.target: autoscale target needs at least one metric",
        ),
        (
            {"name": "a", "image": "x", "update": {"max_surge": 0, "max_unavailable": 0}},
            "app 1 (a): update: max_surge and max_unavailable cannot both be 0",
        ),
        (
            {"name": "a", "image": "has space"},
            "app 1 (a): image: image 'has space' must not contain white space",
        ),
        (
            {"name": "a", "image": "x", "env": {"1BAD": "v"}},
            "app 1 (a): env: env name '1BAD' must match",
        ),
        (
            {"name": "a", "image": "x", "placement": {"strategy": "random"}},
            "app 1 (a): placement.strategy: Input should be 'spread' or 'binpack'",
        ),
        (
            {"name": "a", "image": "x", "ports": {"db": 5432}, "tcp_routes": [{"port": "db"}]},
            "app 1 (a): tcp_routes[0].listen: required field is missing",
        ),
        (
            {"name": "a", "image": "x", "tcp_routes": [{"listen": 5432}]},
            "app 1 (a): tcp_routes[0] needs a port, and the app declares no ports",
        ),
        (
            {
                "name": "a",
                "image": "x",
                "ports": {"db": 5432},
                "tcp_routes": [{"listen": 70000, "port": "db"}],
            },
            "app 1 (a): tcp_routes[0].listen: Input should be less than or equal to 65535",
        ),
        (
            {
                "name": "a",
                "image": "x",
                "ports": {"db": 5432},
                "tcp_routes": [{"listen": 5432, "port": "dbx"}],
            },
            "app 1 (a): tcp_routes[0] refers to port 'dbx', not among ports (db)",
        ),
        (
            {
                "name": "a",
                "image": "x",
                "ports": {"db": 5432},
                "tcp_routes": [{"listen": 5432}, {"listen": 5432, "port": 5432}],
            },
            "app 1 (a): tcp_routes[1]: listen port 5432 is listed twice",
        ),
        (
            {
                "name": "a",
                "image": "x",
                "ports": {"db": 5432},
                "tcp_routes": [{"listen": 5432, "algorithm": "weighted"}],
            },
            "app 1 (a): tcp_routes[0].algorithm: Input should be 'round_robin', 'least_conn'",
        ),
        (
            {
                "name": "a",
                "image": "x",
                "ports": {"db": 5432},
                "network": {"internal": True},
                "tcp_routes": [{"listen": 5432}],
            },
            "app 1 (a): an internal app (network.internal: true) cannot have tcp_routes",
        ),
        ("just a string", "app 1: expected a mapping, got str"),
    ],
)
def test_each_bad_spec_has_its_message(doc: object, expected: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_apps([doc])
    assert any(line.startswith(expected) for line in info.value.errors), info.value.errors


def test_every_problem_is_reported_at_once_with_the_file_name() -> None:
    text = "name: a\nimage: x\nreplicas: -1\n---\nname: B\n"
    with pytest.raises(SpecError) as info:
        load_specs(text, "apps.yaml")
    errors = info.value.errors
    assert len(errors) == 3
    assert errors[0].startswith("apps.yaml document 1 (a): replicas:")
    assert errors[0].endswith("(line 3)")
    assert errors[1].startswith("apps.yaml document 2 (B): name:")
    # a missing field is reported at the line where its document starts
    assert errors[2] == "apps.yaml document 2 (B): image: required field is missing (line 5)"


def test_duplicate_apps_and_empty_input_are_errors() -> None:
    with pytest.raises(SpecError, match="declared more than once"):
        load_specs("name: a\nimage: x\n---\nname: a\nimage: y\n")
    with pytest.raises(SpecError, match="no app found"):
        load_specs("")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_specs("name: [unclosed")


def test_template_hash_ignores_replicas_route_and_scaling() -> None:
    base = AppSpec(name="a", image="x:1", ports={"http": 80})
    assert base.template_hash() == base.model_copy(update={"replicas": 7}).template_hash()
    routed = AppSpec(name="a", image="x:1", ports={"http": 80}, route={"path": "/api"})
    assert base.template_hash() == routed.template_hash()
    tcp = AppSpec(name="a", image="x:1", ports={"http": 80}, tcp_routes=[{"listen": 9000}])
    assert base.template_hash() == tcp.template_hash()
    assert (
        base.template_hash() != AppSpec(name="a", image="x:2", ports={"http": 80}).template_hash()
    )
    assert (
        base.template_hash()
        != AppSpec(name="a", image="x:1", ports={"http": 80}, env={"A": "1"}).template_hash()
    )
