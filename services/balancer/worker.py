"""A balancer worker: ``python -m services.balancer.worker --master PID --slot I``.

Started by the master (``master.py``) only. It binds itself to the master (parent-death
signal and pid check), reads its ``WorkerSpec`` from stdin, keeps stdin as its lifeline
(EOF: the master is gone, stop), and runs the balancer service on the sockets it
inherited.
"""

from __future__ import annotations

import argparse
import socket

from core.config import ServiceConfig
from core.lifeline import bind_to_parent, watch_pipe
from core.service import run_service
from services.balancer.master import read_spec
from services.balancer.service import BalancerService, Listeners


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="services.balancer.worker")
    parser.add_argument("--master", type=int, required=True)
    parser.add_argument("--slot", type=int, required=True)
    args = parser.parse_args(argv)
    bind_to_parent(args.master, pipe_fd=None)
    spec = read_spec(0)
    watch_pipe(0)
    listeners = Listeners(
        listen=socket.socket(fileno=spec.listen_fd),
        admin=socket.socket(fileno=spec.admin_fd) if spec.admin_fd is not None else None,
        slot=spec.slot,
        tls=socket.socket(fileno=spec.tls_fd) if spec.tls_fd is not None else None,
    )

    class Worker(BalancerService):
        def __init__(self, cfg: ServiceConfig) -> None:
            super().__init__(cfg, spec.options, listeners)

    run_service(Worker, spec.config)


if __name__ == "__main__":
    main()
