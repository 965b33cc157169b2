"""Registry credentials reach the agent without its command line (``ps`` shows that to
every user): from ``$SHOAL_REGISTRY_AUTH`` or a file of entries."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import services.agent.command as agent_command
import services.agent.service as agent_service
from core.config import ServiceConfig
from services.agent.registry import Credential, parse_auth_lines

BASE = ["--node-id", "n1", "--address", "127.0.0.2"]


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The options the agent would be started with (nothing is started)."""
    seen: list[Any] = []

    class Agent:
        name = "agent"

        def __init__(self, config: ServiceConfig, options: Any) -> None:
            seen.append(options)

    def run_service(factory: Any, config: ServiceConfig) -> None:
        factory(config)

    monkeypatch.setattr(agent_service, "AgentService", Agent)
    monkeypatch.setattr(agent_command, "run_service", run_service)
    return seen


def invoke(args: list[str], env: dict[str, str] | None = None) -> Any:
    return CliRunner().invoke(agent_command.command, [*BASE, *args], env=env)


def test_credentials_come_from_the_environment_with_no_warning(started: list[Any]) -> None:
    result = invoke([], env={"SHOAL_REGISTRY_AUTH": "reg:5000=u:p:w= other.io=a:b"})
    assert result.exit_code == 0, result.output
    assert started[0].registry_auth == {
        "reg:5000": Credential("u", "p:w="),
        "other.io": Credential("a", "b"),
    }
    assert "warning" not in result.output


def test_credentials_come_from_a_file_of_entries(started: list[Any], tmp_path: Path) -> None:
    path = tmp_path / "registries"
    path.write_text("# private registries\n\nreg:5000=u:pass word\n  https://other.io/v2=a:b\n")
    path.chmod(0o600)
    result = invoke([], env={"SHOAL_REGISTRY_AUTH_FILE": str(path)})
    assert result.exit_code == 0, result.output
    assert started[0].registry_auth == {
        "reg:5000": Credential("u", "pass word"),
        "other.io": Credential("a", "b"),
    }


def test_the_command_line_flag_still_works_but_warns(started: list[Any]) -> None:
    result = invoke(["--registry-auth", "reg:5000=u:p"])
    assert result.exit_code == 0, result.output
    assert started[0].registry_auth == {"reg:5000": Credential("u", "p")}
    assert "sees the password in ps" in result.output


def test_a_bad_entry_is_refused_without_repeating_its_password(
    started: list[Any], tmp_path: Path
) -> None:
    path = tmp_path / "registries"
    path.write_text("reg:5000=u:fine\nreg2=secret-without-user\n")
    result = invoke(["--registry-auth-file", str(path)])
    assert result.exit_code == 2
    assert f"{path}:2 must look like host=user:password" in result.output
    assert "secret-without-user" not in result.output
    env = {"SHOAL_REGISTRY_AUTH": "reg=hunter2"}
    result = invoke([], env=env)
    assert result.exit_code == 2
    assert "hunter2" not in result.output
    assert started == []


def test_entry_lines_skip_comments_and_blanks() -> None:
    assert parse_auth_lines("\n# x=y:z\n r=u:p \n", "f") == {"r": Credential("u", "p")}
