from __future__ import annotations

import random
import socket
import time

# Below Linux's ephemeral range (32768-60999), which the kernel and Docker's published
# ephemeral host ports draw from: a port chosen here is not taken between choice and bind
# by an outgoing connection or by a replica's published port.
_PORTS = range(20000, 32000)


def free_port(host: str = "127.0.0.1") -> int:
    for _ in range(200):
        port = random.choice(_PORTS)
        with socket.socket() as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in 20000-32000")


def wait_port(host: str, port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout}s")
