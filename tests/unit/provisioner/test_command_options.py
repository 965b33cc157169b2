"""The provisioner's command line refuses what cannot work, before anything starts."""

from __future__ import annotations

from typing import Any

import pytest
from click.testing import CliRunner

import services.provisioner.command as provisioner_command


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    seen: list[Any] = []
    monkeypatch.setattr(provisioner_command, "run_service", lambda *a: seen.append(a))
    return seen


def invoke(*args: str) -> Any:
    return CliRunner().invoke(provisioner_command.command, ["--size", "s=1,1Gi,0.01", *args])


def test_the_local_provider_on_an_authenticated_broker_is_refused(started: list[Any]) -> None:
    result = invoke("--broker", "mqtt://provisioner:secret@127.0.0.1:1883")
    assert result.exit_code == 2
    assert "--provider local starts agents without identities of their own" in result.output
    assert "--provider command" in result.output
    assert started == []


def test_the_local_provider_on_an_open_broker_starts(started: list[Any]) -> None:
    result = invoke("--broker", "mqtt://127.0.0.1:1883")
    assert result.exit_code == 0, result.output
    assert len(started) == 1
