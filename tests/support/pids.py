"""Find a test's own processes through /proc: by an environment entry unique to the test
(its topic prefix), never by a name pattern that could match someone else's."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

PROC = Path("/proc")


def alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped is not)."""
    try:
        stat = (PROC / str(pid) / "stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def module_of(argv: list[str]) -> str:
    """``python -m M ...`` -> ``M``; ``python -m core.lifeline PID M ...`` -> ``M``."""
    if "-m" not in argv:
        return argv[0] if argv else ""
    i = argv.index("-m")
    module = argv[i + 1] if len(argv) > i + 1 else ""
    if module == "core.lifeline" and len(argv) > i + 3:
        return argv[i + 3]
    return module


def with_env(key: str, value: str) -> dict[int, str]:
    """Live processes whose environment has ``key=value``: pid -> module they run."""
    wanted = f"{key}={value}".encode()
    found: dict[int, str] = {}
    for entry in PROC.iterdir():
        if not entry.name.isdigit():
            continue
        pid = int(entry.name)
        if pid == os.getpid():
            continue
        with contextlib.suppress(OSError):
            if wanted not in (entry / "environ").read_bytes().split(b"\0"):
                continue
            argv = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if alive(pid):
                found[pid] = module_of([a for a in argv if a])
    return found


def children(pid: int) -> list[int]:
    """Direct children of ``pid`` (Linux ``/proc/<pid>/task/*/children``)."""
    out: list[int] = []
    for task in (PROC / str(pid) / "task").glob("*"):
        with contextlib.suppress(OSError):
            out += [int(c) for c in (task / "children").read_text().split()]
    return out
