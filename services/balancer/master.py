"""The balancer master: owns the listening sockets, runs the workers, restarts any that dies.

A worker (``services.balancer.worker``) is the whole balancer service: bus views, route
table, both listeners, metrics. The master is deliberately tiny so that it does not crash:
no bus, no asyncio, no HTTP; it binds the sockets, forks workers that inherit them, waits
for signals and exits, and restarts a dead worker (at once after a worker that ran for a
while, with backoff when it crash-loops).

Because the master holds the listening socket, the kernel keeps accepting connections into
its queue while a worker is dead; the next worker (or a sibling: all workers accept from
the same socket, as nginx workers do) takes them. A ``kill -9`` of a worker costs only the
connections that worker had accepted.

Each worker gets its launch spec (config, options, slot, inherited fds) pickled on its
stdin, and then keeps that pipe as its lifeline: if the master dies, even by SIGKILL, the
worker sees EOF (and, on Linux, a parent-death signal) and stops (``core.lifeline``).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from core.backoff import Backoff
from core.logs import get_logger

if TYPE_CHECKING:
    from core.config import ServiceConfig
    from services.balancer.service import BalancerOptions

#: a worker that ran this long is restarted at once; a quicker death backs off
STEADY_SECONDS = 5.0
STOP_GRACE = 30.0
LISTEN_BACKLOG = 2048


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """What a worker needs, sent on its stdin (the fds are inherited, same numbers)."""

    config: ServiceConfig
    options: BalancerOptions
    slot: int
    listen_fd: int
    admin_fd: int | None
    tls_fd: int | None = None


def restart_delay(uptime: float, backoff: Backoff, steady: float = STEADY_SECONDS) -> float:
    """Seconds to wait before replacing a worker that died after ``uptime`` seconds: none
    after a steady run or a first quick death, then growing while it keeps dying young."""
    if uptime >= steady:
        backoff.reset()
    first = backoff.attempts == 0
    delay = backoff.next()
    return 0.0 if first else delay


def worker_metrics(listen: tuple[str, int] | None, slot: int) -> tuple[str, int] | None:
    """Where worker ``slot`` serves its own ``/metrics``: a fixed ``--metrics`` port is the
    first worker's, the next ones take the ports after it (each worker is its own scrape
    target); port 0 stays 0 (any free port, announced in presence)."""
    if listen is None or listen[1] == 0:
        return listen
    return (listen[0], listen[1] + slot)


def worker_instance(instance: str, slot: int, workers: int) -> str:
    """The bus instance of worker ``slot``: the balancer's own when it is alone."""
    return instance if workers == 1 else f"{instance}-w{slot}"


def encode_spec(spec: WorkerSpec) -> bytes:
    payload = pickle.dumps(spec)
    return struct.pack(">I", len(payload)) + payload


def read_spec(fd: int) -> WorkerSpec:
    """Read one ``encode_spec`` frame from ``fd`` (the worker's stdin)."""
    (size,) = struct.unpack(">I", _read_exactly(fd, 4))
    spec = pickle.loads(_read_exactly(fd, size))
    if not isinstance(spec, WorkerSpec):
        raise ValueError("not a balancer worker spec")
    return spec


def _read_exactly(fd: int, size: int) -> bytes:
    chunks: list[bytes] = []
    while size:
        chunk = os.read(fd, size)
        if not chunk:
            raise EOFError("the master closed the pipe before the spec was read")
        chunks.append(chunk)
        size -= len(chunk)
    return b"".join(chunks)


def bind(
    address: tuple[str, int], *, reuse_port: bool, backlog: int = LISTEN_BACKLOG
) -> socket.socket:
    host, port = address
    family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0][0]
    return socket.create_server((host, port), family=family, backlog=backlog, reuse_port=reuse_port)


@dataclass
class Slot:
    index: int
    admin: socket.socket | None
    proc: subprocess.Popen[bytes] | None = None
    started: float = 0.0
    restart_at: float | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.5, cap=10.0))


class Master:
    def __init__(self, config: ServiceConfig, options: BalancerOptions, workers: int) -> None:
        self.config = config
        self.options = options
        self.workers = workers
        self.log = get_logger("shoal.balancer.master").bind(instance=config.instance)
        self.listen: socket.socket | None = None
        self.tls: socket.socket | None = None
        self.slots: list[Slot] = []
        self._stop_signal: int | None = None

    # -- sockets --------------------------------------------------------------------

    def bind(self) -> None:
        """Bind every listener before any worker starts (a bad address fails here, once)."""
        self.listen = bind(self.options.listen, reuse_port=self.options.reuse_port)
        if self.options.tls_listen is not None:
            self.tls = bind(self.options.tls_listen, reuse_port=self.options.reuse_port)
        for i in range(self.workers):
            admin = None
            if self.options.admin is not None:
                host, port = self.options.admin
                admin = bind((host, port + i), reuse_port=self.options.reuse_port, backlog=128)
            self.slots.append(Slot(i, admin))

    def close(self) -> None:
        for sock in [self.listen, self.tls, *(s.admin for s in self.slots)]:
            if sock is not None:
                sock.close()

    # -- workers --------------------------------------------------------------------

    def spawn(self, slot: Slot) -> None:
        import dataclasses

        assert self.listen is not None
        config = dataclasses.replace(
            self.config,
            instance=worker_instance(self.config.instance, slot.index, self.workers),
            metrics=worker_metrics(self.config.metrics, slot.index),
        )
        spec = WorkerSpec(
            config=config,
            options=self.options,
            slot=slot.index,
            listen_fd=self.listen.fileno(),
            admin_fd=slot.admin.fileno() if slot.admin is not None else None,
            tls_fd=self.tls.fileno() if self.tls is not None else None,
        )
        fds = [spec.listen_fd] + [fd for fd in (spec.admin_fd, spec.tls_fd) if fd is not None]
        # forked from this (main, only) thread: the worker's parent-death signal holds
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "services.balancer.worker",
                "--master",
                str(os.getpid()),
                "--slot",
                str(slot.index),
            ],
            stdin=subprocess.PIPE,
            pass_fds=fds,
            start_new_session=True,
        )
        slot.proc, slot.started, slot.restart_at = proc, time.monotonic(), None
        assert proc.stdin is not None
        try:
            proc.stdin.write(encode_spec(spec))
            proc.stdin.flush()  # the pipe stays open: it is the worker's lifeline
        except BrokenPipeError:
            pass  # it died at once: reaped and restarted like any other death
        self.log.info("balancer worker started", slot=slot.index, pid=proc.pid)

    def reap(self, slot: Slot, now: float) -> None:
        proc = slot.proc
        if proc is None or proc.poll() is None:
            return
        slot.proc = None
        if proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
        if self._stop_signal is not None:
            return
        delay = restart_delay(now - slot.started, slot.backoff)
        slot.restart_at = now + delay
        code = proc.returncode
        how = f"signal {-code}" if code < 0 else f"code {code}"
        self.log.warning(
            "balancer worker died; restarting",
            slot=slot.index,
            pid=proc.pid,
            exit=how,
            delay=round(delay, 2),
        )

    # -- the loop -------------------------------------------------------------------

    def _on_signal(self, signum: int, _: Any) -> None:
        if self._stop_signal is None:
            self._stop_signal = signum

    def run(self) -> int:
        """Serve until SIGTERM/SIGINT, then stop the workers; returns the exit code."""
        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        try:
            for slot in self.slots:
                self.spawn(slot)
            while self._stop_signal is None:
                now = time.monotonic()
                pending = [s.restart_at for s in self.slots if s.restart_at is not None]
                timeout = max(0.0, min(pending) - now) if pending else 1.0
                with contextlib.suppress(InterruptedError):
                    select.select([wake_r], [], [], timeout)
                with contextlib.suppress(BlockingIOError):
                    while os.read(wake_r, 256):
                        pass
                now = time.monotonic()
                for slot in self.slots:
                    self.reap(slot, now)
                    if (
                        self._stop_signal is None
                        and slot.restart_at is not None
                        and slot.restart_at <= now
                    ):
                        self.spawn(slot)
            return self.stop(self._stop_signal)
        finally:
            signal.set_wakeup_fd(-1)
            os.close(wake_r)
            os.close(wake_w)
            self.close()

    def stop(self, signum: int, grace: float = STOP_GRACE) -> int:
        """Pass the stop on to every worker; SIGKILL what is left after ``grace``."""
        procs = [s.proc for s in self.slots if s.proc is not None]
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signum)
        deadline = time.monotonic() + grace
        code = 0
        for proc in procs:
            try:
                proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self.log.warning("balancer worker did not stop; killing it", pid=proc.pid)
                proc.kill()
                proc.wait()
            code = code or (0 if proc.returncode == 0 else 1)
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
        self.log.info("balancer stopped", workers=len(procs))
        return code


def run_master(config: ServiceConfig, options: BalancerOptions, workers: int) -> None:
    """``shoal run balancer``: bind, supervise, exit with the workers' verdict."""
    from core.logs import setup_logging

    setup_logging(config.log_level, config.log_format, service="balancer")
    master = Master(config, options, workers)
    try:
        master.bind()
    except OSError as err:
        master.close()
        sys.exit(f"balancer: cannot listen: {err}")
    sys.exit(master.run())
