"""The bus contract: one declaration per channel, listed whole and documented."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.channels import (
    APPS,
    CHANNELS,
    COMMANDS,
    EVENTS,
    LOGS_REQUEST,
    PRESENCE,
    contract_table,
    kinds,
)
from core.keys import AppKey, ServiceKey
from core.state import Event

README = Path(__file__).resolve().parents[3] / "core" / "README.md"


def test_every_kind_names_one_model_and_every_path_one_channel() -> None:
    names = [c.kind for c in CHANNELS] + [c.kind for c in COMMANDS]
    assert len(names) == len(set(names)), "two channels share a kind"
    paths = [c.path for c in CHANNELS] + [f"cmd/{c.name}" for c in COMMANDS]
    assert len(paths) == len(set(paths))
    assert set(kinds()) >= set(names) | {"reply", "revisions"}


@pytest.mark.parametrize("channel", CHANNELS, ids=lambda c: c.path)
def test_topics_and_keys_round_trip(channel: object) -> None:
    from core.channels import Channel

    assert isinstance(channel, Channel)
    key = channel.key.build(tuple(f"v{i}" for i in range(len(channel.key.names))))
    topic = channel.topic("p/q", key)
    assert channel.parse("p/q", topic) == key
    assert channel.pattern("p/q").count("+") == len(channel.key.names)


def test_keys_are_typed_and_read_from_bodies() -> None:
    assert APPS.parse("shoal", "shoal/apps/prod/web") == AppKey("prod", "web")
    assert str(AppKey("prod", "web")) == "prod/web"
    assert AppKey.parse("prod/web") == AppKey("prod", "web")
    with pytest.raises(ValueError, match="not an app key"):
        AppKey.parse("web")
    assert PRESENCE.pattern("shoal", service="scheduler") == "shoal/services/scheduler/+"
    assert PRESENCE.parse("s", "s/services/health/h1") == ServiceKey("health", "h1")
    assert EVENTS.key_for(Event(kind="scaled", message="x")) == "scaled"
    assert LOGS_REQUEST.topic("shoal", None) == "shoal/logs/request"


def test_commands_are_strict_and_state_is_lenient() -> None:
    assert all(c.lenient for c in CHANNELS)
    assert {c.served_by.split()[0] for c in COMMANDS} == {"controller", "scheduler", "dashboard"}


def test_core_readme_lists_the_whole_contract() -> None:
    """core/README.md carries the generated table; regenerate it with
    ``python -c 'from core.channels import contract_table; print(contract_table())'``."""
    assert contract_table() in README.read_text()
