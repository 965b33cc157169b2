"""The placement logic is pure: no broker, Docker or HTTP client anywhere in it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import services.scheduler

PURE = ["model", "checks", "scorers", "placement", "cluster"]
FORBIDDEN = {"aiomqtt", "aiodocker", "aiohttp", "asyncio", "core.bus", "core.service", "time"}


@pytest.mark.parametrize("module", PURE)
def test_logic_module_imports_no_io(module: str) -> None:
    path = Path(services.scheduler.__file__).parent / f"{module}.py"
    tree = ast.parse(path.read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
    bad = {name for name in imported if name in FORBIDDEN or name.split(".")[0] in FORBIDDEN}
    assert not bad, f"{module} imports {bad}"
