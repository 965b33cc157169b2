"""Named contexts: the config file, which settings win, and ``shoal config ...``."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from core.config import DEFAULT_BROKER, BrokerURL, ConfigError
from services.cli.client import ClientOptions, resolve_options
from services.cli.contexts import (
    CliConfig,
    Context,
    parse_config,
    render_config,
    select_context,
    with_credentials,
)
from services.cli.main import cli

CONFIG = """
current-context: prod
contexts:
  prod: {broker: "mqtts://broker.example:8883", prefix: live, credentials: CREDS}
  lab: {broker: "mqtt://10.0.0.5"}
"""


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    creds = tmp_path / "creds"
    creds.write_text("\nops:s3cr:et\n")
    path = tmp_path / "config.yaml"
    path.write_text(CONFIG.replace("CREDS", str(creds)))
    monkeypatch.setenv("SHOAL_CONFIG", str(path))
    return path


def test_round_trip() -> None:
    cfg = parse_config(CONFIG, "x")
    assert cfg.current == "prod"
    assert cfg.contexts["lab"] == Context(broker="mqtt://10.0.0.5")
    assert parse_config(render_config(cfg), "y") == cfg
    assert parse_config("", "empty") == CliConfig()


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[1, 2]", "expected a mapping"),
        ("contexts: [a]", "contexts must map names"),
        ("contexts: {a: 1}", "context 'a' must be a mapping"),
        ("contexts: {a: {brokr: x}}", "unknown keys ['brokr']"),
        ("contexts: {a: {prefix: 3}}", "values must be strings"),
        ("current-context: [a]", "current-context must be a name"),
        ("contexts: {a: [}", "not YAML"),
    ],
)
def test_bad_config_files_say_what_is_wrong(text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error.replace("[", r"\[").replace("]", r"\]")):
        parse_config(text, "cfg")


def test_selection() -> None:
    cfg = parse_config(CONFIG, "x")
    assert select_context(cfg, None)[0] == "prod"
    assert select_context(cfg, "lab") == ("lab", Context(broker="mqtt://10.0.0.5"))
    assert select_context(CliConfig(), None) == (None, Context())
    with pytest.raises(ConfigError, match=r"no context 'qa' .* \(known: lab, prod\)"):
        select_context(cfg, "qa")


def test_explicit_options_win_over_the_context(config_file: Path) -> None:
    creds = str(config_file.parent / "creds")
    assert resolve_options(None, None, 5.0, None) == ClientOptions(
        "mqtts://broker.example:8883", "live", 5.0, creds
    )
    assert resolve_options("mqtt://h", None, 5.0, None).broker == "mqtt://h"
    assert resolve_options(None, "p", 5.0, "lab") == ClientOptions(
        "mqtt://10.0.0.5", "p", 5.0, None
    )
    with pytest.raises(click.BadParameter):
        resolve_options(None, None, 5.0, "qa")


def test_no_config_means_the_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SHOAL_CONFIG", str(tmp_path / "missing.yaml"))
    assert resolve_options(None, None, 1.0, None) == ClientOptions(DEFAULT_BROKER, "shoal", 1.0)


def test_credentials_file(tmp_path: Path) -> None:
    url = BrokerURL.parse("mqtt://h")
    assert with_credentials(url, None) is url
    good = tmp_path / "good"
    good.write_text("ops:pa:ss\n")
    assert (
        with_credentials(url, str(good)).username,
        with_credentials(url, str(good)).password,
    ) == (
        "ops",
        "pa:ss",
    )
    bad = tmp_path / "bad"
    bad.write_text("no colon\n")
    with pytest.raises(ConfigError, match="expected one line USERNAME:PASSWORD"):
        with_credentials(url, str(bad))
    with pytest.raises(ConfigError, match="credentials file"):
        with_credentials(url, str(tmp_path / "absent"))


def test_config_commands(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.yaml"
    run = CliRunner(env={"SHOAL_CONFIG": str(path)}).invoke
    assert run(cli, ["config", "current-context"]).exit_code == 1
    created = run(cli, ["config", "set-context", "lab", "--broker", "mqtt://10.0.0.5"])
    assert (created.exit_code, created.output) == (0, 'context "lab" created\n')
    modified = run(cli, ["config", "set-context", "lab", "--prefix", "lab"])
    assert modified.output == 'context "lab" modified\n'
    assert run(cli, ["config", "use-context", "qa"]).exit_code == 1
    assert run(cli, ["config", "use-context", "lab"]).output == 'switched to context "lab"\n'
    assert run(cli, ["config", "current-context"]).output == "lab\n"
    listing = run(cli, ["config", "get-contexts"]).output.splitlines()
    assert listing[1].split() == ["*", "lab", "mqtt://10.0.0.5", "lab", "-"]
    assert parse_config(path.read_text(), "f").contexts["lab"] == Context("mqtt://10.0.0.5", "lab")
    assert path.stat().st_mode & 0o077 == 0
    bad = run(cli, ["config", "set-context", "x", "--broker", "http://h"])
    assert bad.exit_code == 2
    assert run(cli, ["config", "delete-context", "lab"]).exit_code == 0
    assert parse_config(path.read_text(), "f") == CliConfig()


def test_help_names_environment_variables() -> None:
    out = CliRunner().invoke(cli, ["get", "--help"], terminal_width=200).output
    for var in ("SHOAL_BROKER", "SHOAL_PREFIX", "SHOAL_TIMEOUT", "SHOAL_CONTEXT"):
        assert f"env var: {var}" in out
