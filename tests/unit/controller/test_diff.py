"""Field-level diffs of specs and what makes a new revision."""

from __future__ import annotations

from typing import Any

import pytest

from services.controller.diff import diff_specs, diff_values, redact_line, template_changed
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


def test_env_values_named_like_credentials_never_appear() -> None:
    old = spec(env={"DB_PASSWORD": "hunter2", "API_TOKEN": "t0k3n", "MODE": "a"})
    new = spec(env={"DB_PASSWORD": "correct-horse", "aws_secret_key": "AKIA", "MODE": "b"})
    lines = diff_specs(old, new)
    assert lines == [
        "env.API_TOKEN: removed (value was hidden)",
        "env.DB_PASSWORD: changed (value hidden)",
        "env.MODE: a -> b",
        "env.aws_secret_key: added (value hidden)",
    ]
    assert not any(v in line for line in lines for v in ("hunter2", "horse", "t0k3n", "AKIA"))


def test_passwords_in_urls_are_masked_even_when_the_value_is_shortened() -> None:
    long_password = "p" * 80
    old = spec(
        env={"DATABASE_URL": "postgres://app:hunter2@db:5432/app", "HOME_URL": "http://x:80/"}
    )
    new = spec(
        env={"DATABASE_URL": f"postgres://app:{long_password}@db/app", "HOME_URL": "http://y/"}
    )
    lines = diff_specs(old, new)
    assert lines[0].startswith(
        "env.DATABASE_URL: postgres://app:***@db:5432/app -> postgres://app:***@db"
    )
    assert "env.HOME_URL: http://x:80/ -> http://y/" in lines
    assert not any("hunter2" in line or "ppp" in line for line in lines)


def test_secret_references_show_their_name_and_version() -> None:
    old = spec(secrets=[{"name": "db-password", "version": 1}])
    assert diff_specs(
        spec(replicas=3, secrets=[{"name": "db-password", "version": 1}]),
        spec(replicas=4, secrets=[{"name": "db-password", "version": 2}]),
    ) == ["secrets[0].version: 1 -> 2", "replicas: 3 -> 4"]
    both = diff_specs(spec(replicas=3), spec(replicas=4, secrets=[{"name": "db-password"}]))
    assert both[0].startswith("secrets: ")  # a template field: listed first
    assert both[1:] == ["replicas: 3 -> 4"]
    (added,) = diff_specs(spec(), old)
    assert added.startswith('secrets: [] -> [{"env": null, "name": "db-password"')


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        ("env.DB_PASSWORD: added (hunter2)", "env.DB_PASSWORD: added (value hidden)"),
        ("env.DB_PASSWORD: removed (was hunter2)", "env.DB_PASSWORD: removed (value was hidden)"),
        ("env.API_KEY: a -> b", "env.API_KEY: changed (value hidden)"),
        ("env.URL: added (postgres://u:hunter2@db/x)", "env.URL: added (postgres://u:***@db/x)"),
        ("env.URL: added (postgres://u:hunter2hunter...)", "env.URL: added (postgres://u:***...)"),
        ("image: a:1 -> a:2", "image: a:1 -> a:2"),
        ("env.MODE: a -> b", "env.MODE: a -> b"),
    ],
)
def test_lines_stored_before_values_were_hidden_are_hidden_when_shown(
    stored: str, shown: str
) -> None:
    assert redact_line(stored) == shown
