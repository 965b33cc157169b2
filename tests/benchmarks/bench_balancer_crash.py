"""Requests failed when a proxy process is `kill -9`ed under load, driven by wrk.

    python -m tests.benchmarks.bench_balancer_crash [--duration 8] [--connections 50]

Three nginx ``return 200`` backends, a real mosquitto with the retained routes, and wrk
(``--timeout 10s``) through the proxy; ``--duration / 3`` seconds in, one process is killed:

- Shoal's balancer worker (the default configuration: a master owning the socket and one
  worker): the master starts a new worker; connections queue in the kernel meanwhile.
- Shoal's balancer as it was before the master (the listening process itself killed, and
  restarted 0.5 s later as ``shoal up`` restarts a service): emulated by killing the master
  and its worker, and starting a new balancer.
- An nginx worker (nginx's master forks a new one): the reference.

Printed: requests completed, requests failed (wrk's socket errors and non-2xx), and the
connections wrk had open (the most that could be in flight on the killed process).
Nothing is asserted; the tests assert the bound (tests/integration/test_balancer_worker_kill.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from tests.benchmarks.bench_balancer import (  # noqa: E402
    MOSQUITTO,
    NGINX,
    backend_conf,
    proxy_conf,
    publish_state,
    wait_routed,
)
from tests.support.net import free_port, wait_port  # noqa: E402
from tests.support.pids import children  # noqa: E402


def wrk_counts(out: str) -> tuple[int, int]:
    """(requests completed, requests failed) from wrk's report."""
    done = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    failed = 0
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    if sock:
        failed += sum(int(x) for x in sock.groups())
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        failed += int(non2xx.group(1))
    return done, failed


def under_load(url: str, duration: int, connections: int, fault: object) -> tuple[int, int]:
    """Run wrk for ``duration`` s and call ``fault()`` a third of the way in."""
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--timeout", "10s", url]
    timer = threading.Timer(duration / 3, fault)  # type: ignore[arg-type]
    timer.start()
    try:
        out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
    finally:
        timer.cancel()
    return wrk_counts(out)


def healthz(admin: int) -> dict[str, object]:
    with urllib.request.urlopen(f"http://127.0.0.1:{admin}/healthz", timeout=10) as r:
        data: dict[str, object] = json.loads(r.read())
    return data


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=8)
    parser.add_argument("--connections", type=int, default=50)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="shoal-bench-crash-"))
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(argv: list[str], name: str) -> subprocess.Popen[bytes]:
        log = (workdir / f"{name}.log").open("ab")
        p = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        procs.append(p)
        return p

    try:
        ports = [free_port() for _ in range(3)]
        (workdir / "backends.conf").write_text(backend_conf(workdir, ports))
        spawn([NGINX, "-c", str(workdir / "backends.conf"), "-e", str(workdir / "b.err")], "b")
        nginx_port = free_port()
        (workdir / "proxy.conf").write_text(proxy_conf(workdir, nginx_port, ports))
        nginx = spawn([NGINX, "-c", str(workdir / "proxy.conf"), "-e", str(workdir / "p.err")], "n")
        broker_port = free_port()
        (workdir / "mosquitto.conf").write_text(
            f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "set_tcp_nodelay true\n"
        )
        spawn([MOSQUITTO, "-c", str(workdir / "mosquitto.conf")], "mosquitto")
        for port in (*ports, nginx_port, broker_port):
            wait_port("127.0.0.1", port, 10)
        broker = f"mqtt://127.0.0.1:{broker_port}"
        asyncio.run(publish_state(broker, "bench", ports))
        port, admin = free_port(), free_port()

        def balancer() -> subprocess.Popen[bytes]:
            argv = [sys.executable, "-m", "services.balancer", "--broker", broker]
            argv += ["--prefix", "bench", "--listen", f"127.0.0.1:{port}"]
            argv += ["--admin", f"127.0.0.1:{admin}", "--log-level", "warning"]
            return spawn(argv, "balancer")

        lb = [balancer()]
        wait_port("127.0.0.1", port, 20)
        wait_routed(admin, 3)
        url = f"http://127.0.0.1:{port}/"
        subprocess.run(["wrk", "-t1", "-c10", "-d2s", url], capture_output=True, check=True)

        rows: list[tuple[str, int, int]] = []
        worker = int(str(healthz(admin)["pid"]))
        done, failed = under_load(
            url,
            args.duration,
            args.connections,
            lambda: subprocess.run(["kill", "-9", str(worker)]),
        )
        rows.append(("shoal worker (master keeps the socket)", done, failed))
        wait_routed(admin, 3)

        def kill_whole_balancer() -> None:
            whole = lb[0]
            for pid in [whole.pid, *children(whole.pid)]:
                subprocess.run(["kill", "-9", str(pid)])
            whole.wait()
            time.sleep(0.5)  # shoal up's first restart delay
            lb[0] = balancer()

        done, failed = under_load(url, args.duration, args.connections, kill_whole_balancer)
        rows.append(("shoal, listening process (before)", done, failed))
        wait_routed(admin, 3)

        nginx_url = f"http://127.0.0.1:{nginx_port}/"
        subprocess.run(["wrk", "-t1", "-c10", "-d2s", nginx_url], capture_output=True, check=True)

        def kill_nginx_worker() -> None:
            for pid in children(nginx.pid):
                subprocess.run(["kill", "-9", str(pid)])

        done, failed = under_load(nginx_url, args.duration, args.connections, kill_nginx_worker)
        rows.append(("nginx worker (reference)", done, failed))

        print(
            f"kill -9 under wrk -t1 -c{args.connections} -d{args.duration}s --timeout 10s;"
            " 3 nginx backends"
        )
        print(f"{'process killed':<42}{'completed':>11}{'failed':>8}{'in flight at most':>19}")
        for label, done, failed in rows:
            print(f"{label:<42}{done:>11}{failed:>8}{args.connections:>19}")
    finally:
        for p in reversed(procs):
            with contextlib.suppress(ProcessLookupError):
                p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
