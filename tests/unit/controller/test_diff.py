"""Field-level diffs of specs and what makes a new revision."""

from __future__ import annotations

from typing import Any

import pytest

from services.controller.diff import diff_specs, diff_values, template_changed
from tests.unit.controller.helpers import spec


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ({}, {}, []),
        ({"image": "a:1"}, {"image": "a:2"}, ["image: a:1 -> a:2"]),
        ({"replicas": 3}, {"replicas": 5}, ["replicas: 3 -> 5"]),
        ({"env": {}}, {"env": {"MODE": "fast"}}, ["env.MODE: added (fast)"]),
        ({"env": {"MODE": "fast"}}, {"env": {}}, ["env.MODE: removed (was fast)"]),
        ({"command": None}, {"command": ["/bin/x"]}, ['command: added (["/bin/x"])']),
        (
            {"resources": {"cpu": 0.1, "memory": 1}},
            {"resources": {"cpu": 0.5, "memory": 1}},
            ["resources.cpu: 0.1 -> 0.5"],
        ),
        ({"x": "a" * 100}, {"x": "b"}, [f"x: {'a' * 57}... -> b"]),
    ],
)
def test_diff_values(old: dict[str, Any], new: dict[str, Any], expected: list[str]) -> None:
    assert diff_values(old, new) == expected


def test_diff_specs_lists_template_fields_first() -> None:
    old = spec(replicas=3)
    new = spec("shoal-test/echo:v2", replicas=5, env={"A": "1"})
    assert diff_specs(old, new) == [
        "env.A: added (1)",
        "image: shoal-test/echo:v1 -> shoal-test/echo:v2",
        "replicas: 3 -> 5",
    ]


@pytest.mark.parametrize(
    ("change", "new_revision"),
    [
        ({"image": "shoal-test/echo:v2"}, True),
        ({"env": {"A": "1"}}, True),
        ({"command": ["/x"]}, True),
        ({"resources": {"cpu": 0.5}}, True),
        ({"ports": {"http": 8080, "admin": 9000}}, True),
        ({"health": {"readiness": {"http": "/healthz", "port": "http"}}}, True),
        ({"termination": {"drain": 3}}, True),
        ({"labels": {"team": "a"}}, True),
        ({"replicas": 7}, False),
        ({"route": {"host": "other.test", "port": "http"}}, False),
        ({"placement": {"strategy": "binpack"}}, False),
        ({"update": {"max_surge": 2}}, False),
        ({"update": {"canary": 1}}, False),
        ({"autoscale": {"min": 1, "max": 5, "target": {"rps_per_replica": 10}}}, False),
    ],
)
def test_what_makes_a_new_revision(change: dict[str, Any], new_revision: bool) -> None:
    fields: dict[str, Any] = {"image": "shoal-test/echo:v1", **change}
    assert template_changed(spec(), spec(**fields)) is new_revision
