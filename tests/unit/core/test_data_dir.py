"""The controller's default data dir is a fixed path, never relative to the working dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from core.options import data_dir_default, default_data_dir


@pytest.mark.parametrize(
    ("env", "euid", "expected"),
    [
        ({"SHOAL_DATA_DIR": "/srv/shoal"}, 0, "/srv/shoal"),
        ({"SHOAL_DATA_DIR": "/srv/shoal", "HOME": "/home/a"}, 1000, "/srv/shoal"),
        ({"HOME": "/root"}, 0, "/var/lib/shoal"),
        ({"HOME": "/home/a", "XDG_STATE_HOME": "/home/a/.st"}, 0, "/var/lib/shoal"),
        ({"HOME": "/home/a"}, 1000, "/home/a/.local/state/shoal"),
        ({"HOME": "/home/a", "XDG_STATE_HOME": "/xdg"}, 1000, "/xdg/shoal"),
        ({"HOME": "/home/a", "XDG_STATE_HOME": ""}, 1000, "/home/a/.local/state/shoal"),
        # the XDG spec: relative paths are invalid and ignored
        ({"HOME": "/home/a", "XDG_STATE_HOME": "rel"}, 1000, "/home/a/.local/state/shoal"),
    ],
)
def test_default_data_dir(env: dict[str, str], euid: int, expected: str) -> None:
    assert default_data_dir(env, euid) == expected


def test_a_relative_override_is_made_absolute_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(str(tmp_path))
    monkeypatch.setenv("SHOAL_DATA_DIR", "state")
    assert data_dir_default() == os.path.join(str(tmp_path), "state")


def test_the_default_does_not_follow_the_working_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("SHOAL_DATA_DIR", raising=False)
    first = data_dir_default()
    monkeypatch.chdir(str(tmp_path))
    assert data_dir_default() == first
    assert os.path.isabs(first)
