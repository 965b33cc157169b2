"""Start Shoal services (and brokers) as real processes, and always clean them up."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.net import free_port, wait_port

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Proc:
    """A child process whose output goes to a log file (read it on failure)."""

    name: str
    argv: list[str]
    log_path: Path
    popen: subprocess.Popen[bytes] | None = None
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> Proc:
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            self.argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env},
            start_new_session=True,
        )
        log.close()
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.popen is None:
            return None
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        return self.popen.returncode

    def kill(self) -> None:
        """``kill -9``: no goodbye, the broker publishes the last will."""
        if self.popen is not None and self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)

    def output(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""


class ProcGroup:
    """Every process a test starts; ``close`` stops them all (reverse order)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.procs: list[Proc] = []

    def spawn(self, name: str, argv: Sequence[str], env: dict[str, str] | None = None) -> Proc:
        proc = Proc(name, list(argv), self.workdir / f"{name}-{len(self.procs)}.log", env=env or {})
        self.procs.append(proc.start())
        return proc

    def service(
        self,
        service: str,
        broker: str,
        *args: str,
        prefix: str = "shoal",
        name: str | None = None,
        env: dict[str, str] | None = None,
    ) -> Proc:
        """``python -m services.<service> --broker URL --prefix P ARGS`` (``env``: added to
        the environment, for what must not be on a command line)."""
        argv = [
            sys.executable,
            "-m",
            f"services.{service}",
            "--broker",
            broker,
            "--prefix",
            prefix,
            "--log-level",
            "debug",
            *args,
        ]
        return self.spawn(name or service, argv, env=env)

    def close(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()

    def dump(self) -> str:
        return "\n".join(
            f"===== {p.name} ({p.log_path.name})\n{p.output()[-6000:]}" for p in self.procs
        )


@dataclass
class Broker:
    kind: str
    host: str
    port: int
    proc: Proc

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"

    def restart(self) -> None:
        self.proc.stop()
        self.proc.start()
        wait_port(self.host, self.port)


def start_broker(
    group: ProcGroup, kind: str, port: int | None = None, *, conf_lines: Sequence[str] = ()
) -> Broker:
    """Start mosquitto or the embedded (amqtt) broker on a free loopback port;
    ``conf_lines`` are added to mosquitto's configuration (``message_size_limit 1048576``)."""
    port = port or free_port()
    if kind == "mosquitto":
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = group.workdir / f"mosquitto-{port}.conf"
        conf.write_text(
            f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            # small request/reply packets must not wait for delayed ACKs (~40 ms each)
            "set_tcp_nodelay true\n" + "".join(f"{line}\n" for line in conf_lines)
        )
        proc = group.spawn(f"mosquitto-{port}", [exe, "-c", str(conf)])
    elif kind == "embedded":
        proc = group.spawn(
            f"amqtt-{port}",
            [sys.executable, "-m", "services.broker", "--listen", f"127.0.0.1:{port}"],
        )
    else:
        raise ValueError(kind)
    wait_port("127.0.0.1", port, timeout=15)
    return Broker(kind, "127.0.0.1", port, proc)


@contextmanager
def proc_group(prefix: str = "shoal-test-") -> Iterator[ProcGroup]:
    workdir = Path(tempfile.mkdtemp(prefix=prefix))
    group = ProcGroup(workdir)
    try:
        yield group
    finally:
        group.close()
        # Logs of a failed test are printed by the `procs` fixture before this point.
        if not os.environ.get("SHOAL_KEEP_TEST_DIRS"):
            shutil.rmtree(workdir, ignore_errors=True)


def wait_until(
    predicate: object, timeout: float = 10.0, interval: float = 0.1, message: str = "condition"
) -> None:
    """Poll a zero-argument callable until it returns truthy (sync tests)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(interval)
    raise TimeoutError(f"{message} not met within {timeout}s")
