"""The shape core/README.md fixes, checked: pure logic modules do no I/O, and services share
nothing but the bus (no service imports another's modules)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
IO_LIBRARIES = {"aiomqtt", "aiodocker", "aiohttp", "paho", "docker", "core.bus", "core.service"}

#: The pure core of each service: plain functions over models, unit-tested without I/O.
PURE_MODULES = [
    "core/spec.py",
    "core/state.py",
    "core/commands.py",
    "core/codec.py",
    "core/topics.py",
    "core/channels.py",
    "core/keys.py",
    "core/view.py",
    "core/units.py",
    "core/spec_yaml.py",
    "core/bounds.py",
    "core/election.py",
    "core/probes.py",
    "core/cluster_state.py",
    "services/controller/apps.py",
    "services/controller/rollout.py",
    "services/controller/diff.py",
    "services/controller/store.py",
    "services/scheduler/model.py",
    "services/scheduler/checks.py",
    "services/scheduler/scorers.py",
    "services/scheduler/placement.py",
    "services/scheduler/cluster.py",
    "services/agent/containers.py",
    "services/agent/plan.py",
    "services/agent/registry.py",
    "services/agent/stats.py",
    "services/agent/probes.py",
    "services/health/logic.py",
    "services/balancer/routes.py",
    "services/balancer/algorithms.py",
    "services/balancer/headers.py",
    "services/balancer/stats.py",
    "services/balancer/policy.py",
    "services/scaler/decide.py",
    "services/scaler/metrics.py",
    "services/provisioner/decide.py",
    "services/provisioner/demand.py",
]


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


@pytest.mark.parametrize("module", PURE_MODULES)
def test_logic_modules_do_no_io(module: str) -> None:
    imported = imports_of(ROOT / module)
    bad = {n for n in imported if n in IO_LIBRARIES or n.split(".")[0] in IO_LIBRARIES}
    assert not bad, f"{module} imports {sorted(bad)}"


@pytest.mark.parametrize(
    "package", sorted(p.name for p in SERVICES.iterdir() if (p / "__init__.py").exists())
)
def test_services_never_import_each_other(package: str) -> None:
    for path in (SERVICES / package).rglob("*.py"):
        for name in imports_of(path):
            parts = name.split(".")
            if parts[0] == "services" and len(parts) > 1 and parts[1] != package:
                # The CLI may import services' command modules to run them (`shoal run`).
                allowed = package == "cli" and name.endswith(".command")
                assert allowed, f"{path.relative_to(ROOT)} imports {name}: use the bus"


def _strings(path: Path) -> list[tuple[int, str]]:
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(path.read_text())):
        text = node.value if isinstance(node, ast.Constant) else None
        # prose (docstrings, messages) aside: a topic has no spaces
        if isinstance(text, str) and not any(c.isspace() for c in text):
            found.append((node.lineno, text))
    return found


@pytest.mark.parametrize(
    "package", sorted(p.name for p in SERVICES.iterdir() if (p / "__init__.py").exists())
)
def test_topics_are_spelled_only_by_the_contract(package: str) -> None:
    """Services name topics through ``core.channels``; a topic written by hand (or a raw
    publish) would bypass the kind, the key check and the version-skew rules."""
    from core.channels import CHANNELS, COMMANDS

    heads = {c.path.split("/")[0] for c in CHANNELS} | {"cmd", "reply"}
    for path in (SERVICES / package).rglob("*.py"):
        for line, text in _strings(path):
            spelled = [h for h in heads if f"/{h}/" in text or text.startswith(f"{h}/")]
            assert not spelled, f"{path.relative_to(ROOT)}:{line} spells a topic: {text!r}"
        source = path.read_text()
        for raw in ("publish_raw(", "request_raw(", "clear_raw("):
            assert raw not in source, f"{path.relative_to(ROOT)} publishes around the contract"
    assert COMMANDS
