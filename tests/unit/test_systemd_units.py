"""The systemd units and environment files in configs/systemd: one unit per service, each
running ``shoal run <service>`` with its settings from /etc/shoal/, every variable the env
files set is one the service reads, the extra arguments parse, and systemd itself accepts
the units (``systemd-analyze verify``, where it exists)."""

from __future__ import annotations

import configparser
import importlib
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from services.cli.main import SERVICES

UNITS = Path(__file__).resolve().parents[2] / "configs" / "systemd"
RUN_BY_SYSTEMD = [s for s in SERVICES if s != "broker"]  # the broker is mosquitto's own unit


def unit(service: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / f"shoal-{service}.service").read_text())
    return parser


def env_file(name: str) -> dict[str, str]:
    values = {}
    for line in (UNITS / "env" / f"{name}.env").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def command(service: str) -> click.Command:
    cmd: click.Command = importlib.import_module(f"services.{service}.command").command
    return cmd


def envvars(cmd: click.Command) -> set[str]:
    return {p.envvar for p in cmd.params if isinstance(p.envvar, str)}


@pytest.mark.parametrize("service", RUN_BY_SYSTEMD)
def test_a_unit_per_service_with_its_settings_from_etc_shoal(service: str) -> None:
    u = unit(service)
    exec_start = u["Service"]["ExecStart"]
    assert exec_start == f"/opt/shoal/bin/shoal run {service} $SHOAL_ARGS"
    files = (UNITS / f"shoal-{service}.service").read_text()
    assert "EnvironmentFile=/etc/shoal/shoal.env\n" in files
    assert f"EnvironmentFile=-/etc/shoal/{service}.env\n" in files
    assert u["Service"]["Restart"] == "always"
    assert u["Service"]["User"] == "shoal"
    assert u["Service"]["NoNewPrivileges"] == "yes"
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_only_the_controller_keeps_state_in_var_lib_shoal() -> None:
    assert unit("controller")["Service"]["StateDirectory"] == "shoal"
    assert env_file("controller")["SHOAL_DATA_DIR"] == "/var/lib/shoal"
    others = [s for s in RUN_BY_SYSTEMD if "StateDirectory" in unit(s)["Service"]]
    assert others == ["controller"]


def test_only_the_agent_and_the_mesh_get_the_docker_socket() -> None:
    groups = {s: unit(s)["Service"].get("SupplementaryGroups") for s in RUN_BY_SYSTEMD}
    assert {s: g for s, g in groups.items() if g} == {"agent": "docker", "mesh": "docker"}


@pytest.mark.parametrize("service", RUN_BY_SYSTEMD)
def test_every_variable_set_is_read_and_the_arguments_parse(
    service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cmd = command(service)
    common, own = env_file("shoal"), env_file(service)
    unknown = (set(common) | set(own)) - envvars(cmd) - {"SHOAL_ARGS"}
    assert not unknown, f"{service} does not read {sorted(unknown)}"
    for key, value in {**common, **own}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("SHOAL_POLICY", str(UNITS.parent / "policy.yaml"))
    ctx = cmd.make_context(service, shlex.split(own.get("SHOAL_ARGS", "")))
    assert ctx.params  # parsed: every option known, every required one given


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze")
def test_systemd_accepts_the_units(tmp_path: Path) -> None:
    shoal = shutil.which("shoal") or "/bin/true"
    for path in UNITS.glob("*.service"):
        (tmp_path / path.name).write_text(path.read_text().replace("/opt/shoal/bin/shoal", shoal))
    out = subprocess.run(
        ["systemd-analyze", "verify", *sorted(str(p) for p in tmp_path.glob("*.service"))],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 0, out.stderr
    assert out.stderr == "", out.stderr
