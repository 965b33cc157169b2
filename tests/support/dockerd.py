"""The machine's Docker engine, stopped and started again exactly as it was started (same
command line, same log file): for the engine-restart test and the chaos benchmark. Stopping
it kills every container on the engine, so callers run alone."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

PID_FILE = Path("/var/run/docker.pid")


def engine_answers() -> bool:
    return subprocess.run(["docker", "info"], capture_output=True, timeout=20).returncode == 0


def wait(predicate: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not within {timeout}s")


def can_restart_engine() -> bool:
    return os.geteuid() == 0 and PID_FILE.exists()


class Dockerd:
    """The running dockerd: how it was started, so it can be started the same way."""

    def __init__(self) -> None:
        self.pid = int(PID_FILE.read_text().strip())
        raw = Path(f"/proc/{self.pid}/cmdline").read_bytes().rstrip(b"\0")
        self.argv_text = [a.decode() for a in raw.split(b"\0")]
        try:
            self.log = os.readlink(f"/proc/{self.pid}/fd/1")
        except OSError:
            self.log = "/var/log/dockerd.log"
        if not self.log.startswith("/") or self.log.startswith(("/dev/pts", "pipe:", "socket:")):
            self.log = "/var/log/dockerd.log"

    def stop(self) -> None:
        os.kill(self.pid, signal.SIGTERM)
        wait(lambda: not Path(f"/proc/{self.pid}").exists(), 60, "dockerd exit")

    def start(self) -> None:
        # (nohup dockerd >> LOG 2>&1 &): detached, reparented, outlives the test run.
        subprocess.run(
            ["sh", "-c", 'nohup "$@" >> "$LOG" 2>&1 < /dev/null &', "sh", *self.argv_text],
            env={**os.environ, "LOG": self.log},
            check=True,
            start_new_session=True,  # not in the test's process group: outlives pytest
        )
        wait(engine_answers, 60, "dockerd answering")
