"""Shell completion: scripts for each shell, names from the retained state."""

from __future__ import annotations

import pytest
from click.shell_completion import ShellComplete

from services.cli import completion
from services.cli.completion import candidate_names, completion_script
from services.cli.main import cli
from tests.unit.cli.models import running_snapshot


@pytest.mark.parametrize(
    ("kind", "namespace", "names"),
    [
        ("app", None, ["web"]),
        ("apps", "default", ["web"]),
        ("app", "ops", []),
        ("node", None, ["n1", "n2"]),
        ("nodes", "ops", ["n1", "n2"]),
        ("replica", None, ["web-1", "web-2"]),
        ("replica", "ops", []),
        ("other", None, []),
    ],
)
def test_candidates(kind: str, namespace: str | None, names: list[str]) -> None:
    assert candidate_names(running_snapshot(), kind, namespace) == names


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_scripts_call_back_into_shoal(shell: str) -> None:
    script = completion_script(shell)
    assert "_SHOAL_COMPLETE" in script
    assert f"{shell}_complete" in script


def complete(args: list[str], incomplete: str) -> list[str]:
    comp = ShellComplete(cli, {}, "shoal", "_SHOAL_COMPLETE")
    return [item.value for item in comp.get_completions(args, incomplete)]


@pytest.mark.parametrize(
    ("args", "incomplete", "values"),
    [
        (["get", "app"], "", ["web"]),
        (["get", "nodes"], "n", ["n1", "n2"]),
        (["describe", "node"], "n2", ["n2"]),
        (["describe", "replica"], "web-", ["web-1", "web-2"]),
        (["node", "drain"], "", ["n1", "n2"]),
        (["scale"], "w", ["web"]),
        (["rollout", "status"], "", ["web"]),
        (["logs"], "x", []),
        (["get", "app", "-n", "ops"], "", []),
    ],
)
def test_names_complete_from_the_snapshot(
    monkeypatch: pytest.MonkeyPatch, args: list[str], incomplete: str, values: list[str]
) -> None:
    monkeypatch.setattr(completion, "_snapshot_for", lambda ctx: running_snapshot())
    assert complete(args, incomplete) == values


def test_no_broker_means_no_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(completion, "_snapshot_for", lambda ctx: None)
    assert complete(["get", "app"], "") == []
    assert "describe" in complete([], "desc")


def test_snapshot_for_gives_up_quickly_on_a_dead_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_BROKER", "mqtt://127.0.0.1:1")
    monkeypatch.setenv("SHOAL_CONFIG", "/nonexistent/shoal.yaml")
    assert complete(["describe", "node"], "") == []
