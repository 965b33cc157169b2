"""The controller's logic modules import no network or Docker library."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import services.controller

PACKAGE = Path(services.controller.__file__).parent
FORBIDDEN = {"aiomqtt", "aiodocker", "aiohttp", "paho", "core.bus", "core.service"}


@pytest.mark.parametrize("module", ["apps.py", "rollout.py", "diff.py", "store.py"])
def test_logic_modules_do_no_network_io(module: str) -> None:
    tree = ast.parse((PACKAGE / module).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    bad = {name for name in imported if name.split(".")[0] in FORBIDDEN or name in FORBIDDEN}
    assert not bad, f"{module} imports {bad}"
