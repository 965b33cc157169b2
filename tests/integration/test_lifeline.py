"""`core.lifeline`: a child started through it dies with its parent, however the parent
dies, and refuses to run for a parent that is already gone."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.support import pids
from tests.support.cluster import wait_for
from tests.support.procs import ROOT

pytestmark = pytest.mark.integration

# a parent that starts one child through the lifeline (a server that never exits by itself)
PARENT = """
import os, subprocess, sys, time
stdin = subprocess.PIPE if sys.argv[1] == "pipe" else subprocess.DEVNULL
child = subprocess.Popen(
    [sys.executable, "-m", "core.lifeline", str(os.getpid()), "http.server", "0",
     "--bind", "127.0.0.1"],
    stdin=stdin, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
print(child.pid, flush=True)
time.sleep(600)
"""


@contextlib.contextmanager
def parent_of_one(stdin: str) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """The parent process and its child's pid; both gone afterwards."""
    with subprocess.Popen(
        [sys.executable, "-c", PARENT, stdin], cwd=ROOT, stdout=subprocess.PIPE, text=True
    ) as parent:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        try:
            yield parent, child
        finally:
            parent.kill()
            parent.wait(10)
            if pids.alive(child):
                os.kill(child, signal.SIGKILL)


def test_the_child_dies_with_a_sigkilled_parent() -> None:
    with parent_of_one("pipe") as (parent, child):
        wait_for(lambda: pids.module_of(cmdline(child)) == "http.server", 20)
        assert pids.alive(child)
        parent.kill()
        parent.wait(10)
        wait_for(lambda: not pids.alive(child), 30, message="the child gone")


def test_a_closed_lifeline_stops_the_child() -> None:
    with parent_of_one("closed") as (parent, child):  # its stdin is at EOF from the start
        wait_for(lambda: not pids.alive(child), 30, message="the child stopped")
        assert parent.poll() is None  # the parent itself is fine: only the pipe said stop


def test_a_child_of_a_parent_already_gone_does_not_run() -> None:
    not_my_parent = os.getpid() + 1_000_000  # no such process is our parent
    result = subprocess.run(
        [sys.executable, "-m", "core.lifeline", str(not_my_parent), "http.server", "0"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        capture_output=True,
        timeout=30,
    )
    assert result.returncode == 1
    assert b"Serving" not in result.stdout


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a for a in f.read().decode().split("\0") if a]
    except OSError:
        return []
