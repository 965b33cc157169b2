"""The admin endpoint's rules: loopback unless told otherwise, and a token when set."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import services.balancer.command as balancer_command
from services.balancer.admin_auth import allowed, bind_refusal, is_loopback, read_token


@pytest.mark.parametrize(
    ("path", "authorization", "token", "ok"),
    [
        ("/routes", None, None, True),  # no token set: loopback is the protection
        ("/routes", None, "s3cret", False),
        ("/routes", "Bearer s3cret", "s3cret", True),
        ("/routes", "bearer  s3cret ", "s3cret", True),
        ("/routes", "Bearer s3cre", "s3cret", False),
        ("/routes", "s3cret", "s3cret", False),
        ("/routes", "Basic czNjcmV0", "s3cret", False),
        ("/metrics", None, "s3cret", False),
        ("/healthz", None, "s3cret", True),
    ],
)
def test_who_is_answered(path: str, authorization: str | None, token: str | None, ok: bool) -> None:
    assert allowed(path, authorization, token) is ok


def test_addresses_beyond_loopback_need_a_token() -> None:
    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.9", "::1", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.5", "::", "lb.example"))
    assert bind_refusal("127.0.0.1", None) is None
    assert bind_refusal("0.0.0.0", "t") is None
    refusal = bind_refusal("0.0.0.0", None)
    assert refusal is not None
    assert "SHOAL_BALANCER_ADMIN_TOKEN" in refusal


def test_a_token_file_holds_one_token() -> None:
    assert read_token("  abc \n# ignored\n") == "abc"
    with pytest.raises(ValueError, match="empty"):
        read_token("\n\n")


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    monkeypatch.setattr(
        balancer_command, "run_master", lambda config, options, n: seen.append(options)
    )
    return seen


def invoke(*args: str, env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(balancer_command.command, list(args), env=env)


def test_the_command_binds_a_bare_port_to_loopback(started: list[Any]) -> None:
    for value in ("9090", ":9090"):
        assert invoke("--admin", value).exit_code == 0
    assert [o.admin for o in started] == [("127.0.0.1", 9090)] * 2
    assert started[0].admin_token is None
    assert started[0].proxy.expose_replica is True


def test_the_command_refuses_an_open_admin_address_without_a_token(
    started: list[Any], tmp_path: Path
) -> None:
    result = invoke("--admin", "0.0.0.0:9090")
    assert result.exit_code == 2
    assert "bind it to loopback" in result.output
    env = {"SHOAL_BALANCER_ADMIN_TOKEN": "from-env"}
    assert invoke("--admin", "0.0.0.0:9090", env=env).exit_code == 0
    path = tmp_path / "token"
    path.write_text("from-file\n")
    assert invoke("--admin", "10.0.0.5:9090", "--admin-token-file", str(path)).exit_code == 0
    assert [(o.admin, o.admin_token) for o in started] == [
        (("0.0.0.0", 9090), "from-env"),
        (("10.0.0.5", 9090), "from-file"),
    ]
    assert "from-env" not in repr(started[0])  # never in a log line of the options


def test_the_replica_header_option(started: list[Any]) -> None:
    assert invoke("--no-replica-header").exit_code == 0
    assert invoke(env={"SHOAL_BALANCER_REPLICA_HEADER": "false"}).exit_code == 0
    assert [o.proxy.expose_replica for o in started] == [False, False]
