"""Units, times and selectors as the CLI prints them."""

from __future__ import annotations

import json

import click
import pytest
import yaml

from services.cli.output import (
    human_duration,
    human_memory,
    matches,
    name_lines,
    parse_selector,
    render_document,
    rfc3339,
    with_rfc3339,
)


@pytest.mark.parametrize(
    ("n", "text"),
    [
        (0, "0"),
        (900, "900"),
        (1024, "1Ki"),
        (1536, "1.5Ki"),
        (512 * 1024**2, "512Mi"),
        (24683584 * 1024, "23.5Gi"),
        (64 * 1024**3, "64Gi"),
        (150 * 1024**2 + 1, "150Mi"),
        (3 * 1024**4, "3Ti"),
    ],
)
def test_memory_in_binary_units(n: int, text: str) -> None:
    assert human_memory(n) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "0s"),
        (45, "45s"),
        (60, "1m"),
        (200, "3m20s"),
        (1800, "30m"),
        (5 * 3600 + 120, "5h2m"),
        (20 * 3600, "20h"),
        (3 * 86400 + 4 * 3600, "3d4h"),
        (400 * 86400, "400d"),
    ],
)
def test_durations_as_kubectl_ages(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_times_in_documents_are_rfc3339() -> None:
    assert rfc3339(1_780_000_000.25) == "2026-05-28T20:26:40.250000Z"
    doc = {
        "updated": 1_780_000_000.0,
        "since": 0.0,
        "started_at": None,
        "replicas": 2,
        "nested": [{"heartbeat": 1_780_000_000}],
        "ready": True,
    }
    assert with_rfc3339(doc) == {
        "updated": "2026-05-28T20:26:40.000000Z",
        "since": None,
        "started_at": None,
        "replicas": 2,
        "nested": [{"heartbeat": "2026-05-28T20:26:40.000000Z"}],
        "ready": True,
    }


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_json_and_yaml_carry_the_same_document(fmt: str) -> None:
    doc = [{"name": "web", "ts": 1_780_000_000.0}]
    text = render_document(doc, fmt)
    parsed = json.loads(text) if fmt == "json" else yaml.safe_load(text)
    assert parsed == [{"name": "web", "ts": "2026-05-28T20:26:40.000000Z"}]


@pytest.mark.parametrize(
    ("text", "selector"),
    [
        (None, {}),
        ("", {}),
        ("zone=a", {"zone": "a"}),
        ("zone==a, tier=web", {"zone": "a", "tier": "web"}),
        ("empty=", {"empty": ""}),
    ],
)
def test_selectors(text: str | None, selector: dict[str, str]) -> None:
    assert parse_selector(text) == selector


@pytest.mark.parametrize("text", ["zone", "=a", "a,b=c"])
def test_bad_selectors_are_refused(text: str) -> None:
    with pytest.raises(click.BadParameter, match="expected key=value"):
        parse_selector(text)


def test_matching_and_names() -> None:
    assert matches({"zone": "a", "tier": "web"}, {"zone": "a"})
    assert not matches({"zone": "b"}, {"zone": "a"})
    assert matches({}, {})
    assert name_lines("app", ["default/web", "ops/db"]) == "app/default/web\napp/ops/db\n"
