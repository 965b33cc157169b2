"""Each page action is authorised like the CLI command it stands for, for the dashboard's role."""

from __future__ import annotations

import pytest

from services.dashboard.authz import Role, refusal

ADMIN = Role()
READER = Role(read_only=True)
TEAM = Role.parse(False, "team-a, team-b")


@pytest.mark.parametrize(
    ("role", "action", "namespace", "allowed"),
    [
        (ADMIN, "scale", "default", True),
        (ADMIN, "delete", "prod", True),
        (ADMIN, "drain", None, True),
        (READER, "scale", "default", False),
        (READER, "cordon", None, False),
        (TEAM, "scale", "team-a", True),
        (TEAM, "undo", "team-b", True),
        (TEAM, "delete", "default", False),
        (TEAM, "cordon", None, False),
        (ADMIN, "format-disk", "default", False),
    ],
)
def test_refusal(role: Role, action: str, namespace: str | None, allowed: bool) -> None:
    assert (refusal(role, action, namespace) is None) == allowed


def test_refusals_say_why() -> None:
    assert "read-only" in (refusal(READER, "scale", "default") or "")
    message = refusal(TEAM, "delete", "default") or ""
    assert "'default'" in message
    assert "team-a, team-b" in message
    assert "cluster scope" in (refusal(TEAM, "drain", None) or "")


def test_role_parse_and_describe() -> None:
    assert Role.parse(False, "") == Role()
    assert TEAM.namespaces == frozenset({"team-a", "team-b"})
    assert READER.describe() == "read-only: every namespace and the nodes"
    assert TEAM.as_json()["namespaces"] == ["team-a", "team-b"]
