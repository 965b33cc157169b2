"""The scaler's logic modules import no I/O library (DESIGN: pure core, thin I/O shell)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[3] / "services" / "scaler"
FORBIDDEN = {"aiomqtt", "aiodocker", "aiohttp", "paho", "asyncio", "time"}


@pytest.mark.parametrize("module", ["decide.py", "metrics.py"])
def test_logic_module_imports_no_io(module: str) -> None:
    tree = ast.parse((PACKAGE / module).read_text())
    imported: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module.split(".")[0])
    assert not imported & FORBIDDEN
