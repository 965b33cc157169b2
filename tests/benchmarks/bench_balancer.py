"""Shoal's balancer against nginx, in front of the same fast backends, driven by wrk.

    python tests/benchmarks/bench_balancer.py [--duration 10] [--connections 50]

Backends: three nginx ``return 200`` servers (one nginx worker), so the proxy is the
bottleneck. Contenders: nginx (Debian's, one worker, keep-alive upstream pool) and Shoal's
balancer (one process, and ``--workers 2``), fed by a real mosquitto with the retained
state a controller and a health monitor would publish. For each: full-load requests/s and
p50/p99, then latency at half of that rate (wrk's per-connection ``delay()``), compared
with the backends hit directly at the same rate: the added p99.

Figures are printed; nothing is asserted (performance is not a unit test).
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
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from core.bus import Bus  # noqa: E402
from core.config import BrokerURL  # noqa: E402
from core.spec import AppSpec  # noqa: E402
from core.state import AppHealth, AppState, AppVersion, ReplicaHealth  # noqa: E402
from core.topics import Topics  # noqa: E402
from tests.support.net import free_port, wait_port  # noqa: E402

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def nginx_conf(workdir: Path, body: str) -> str:
    return f"""
worker_processes 1;
daemon off;
master_process on;
pid {workdir}/nginx-{id(body)}.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 4096; multi_accept on; }}
http {{
    access_log off;
    client_body_temp_path {workdir}/body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    keepalive_requests 1000000;
    {body}
}}
"""


def backend_conf(workdir: Path, ports: list[int]) -> str:
    servers = "\n".join(
        f'server {{ listen 127.0.0.1:{p}; location / {{ return 200 "hello from {p}\\n"; }} }}'
        for p in ports
    )
    return nginx_conf(workdir, servers)


def proxy_conf(workdir: Path, listen: int, ports: list[int]) -> str:
    upstream = "\n".join(f"server 127.0.0.1:{p};" for p in ports)
    return nginx_conf(
        workdir,
        f"""
    upstream backends {{ {upstream} keepalive 128; }}
    server {{
        listen 127.0.0.1:{listen};
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}""",
    )


UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def parse_wrk(out: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    result = {"rps": rps}
    for pct in ("50", "99"):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        if m:
            result[f"p{pct}"] = float(m.group(1)) * UNITS[m.group(2)]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result["errors"] = float(errors.group(1)) if errors else 0.0
    if sock:
        result["errors"] += sum(float(x) for x in sock.groups())
    return result


def wrk(
    url: str, duration: int, connections: int, rate: float | None, workdir: Path
) -> dict[str, float]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if rate:
        # each connection waits so that all together send ``rate`` requests/s
        delay_ms = connections * 1000.0 / rate
        script = workdir / f"delay-{int(rate)}.lua"
        script.write_text(f"function delay() return {delay_ms:.3f} end\n")
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


async def publish_state(broker: str, prefix: str, ports: list[int]) -> None:
    topics = Topics(prefix)
    bus = Bus(BrokerURL.parse(broker), topics, client_id=f"bench-{prefix}")
    task = asyncio.create_task(bus.run())
    try:
        await bus.wait_connected(10)
        spec = AppSpec.model_validate(
            {"name": "bench", "image": "x", "ports": {"http": 80}, "route": {"port": "http"}}
        )
        app = AppState(
            namespace="default",
            name="bench",
            revision=1,
            generation=1,
            spec=spec,
            replicas=len(ports),
            versions=[AppVersion(revision=1, spec=spec, replicas=len(ports))],
        )
        health = AppHealth(
            namespace="default",
            name="bench",
            replicas=[
                ReplicaHealth(
                    id=f"default.bench.{i:08x}",
                    revision=1,
                    node="n1",
                    endpoint=f"127.0.0.1:{p}",
                    ready=True,
                )
                for i, p in enumerate(ports)
            ],
        )
        await bus.publish(topics.app("default", "bench"), "app", app, retain=True)
        await bus.publish(topics.health("default", "bench"), "health", health, retain=True)
    finally:
        bus.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def wait_routed(admin: int, n: int, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError, ValueError):
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/routes", timeout=1) as r:
                data = json.loads(r.read())
            if len(data.get("default/bench", {}).get("backends", [])) == n:
                return
        time.sleep(0.1)
    raise TimeoutError("the balancer did not route the bench app")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--skip-workers", action="store_true", help="skip the --workers 2 run")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="shoal-bench-"))
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(argv: list[str], name: str) -> subprocess.Popen[bytes]:
        log = (workdir / f"{name}.log").open("wb")
        p = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True
        )
        procs.append(p)
        return p

    try:
        ports = [free_port() for _ in range(3)]
        (workdir / "backends.conf").write_text(backend_conf(workdir, ports))
        spawn(
            [NGINX, "-c", str(workdir / "backends.conf"), "-e", str(workdir / "b.err")], "backends"
        )
        nginx_port = free_port()
        (workdir / "proxy.conf").write_text(proxy_conf(workdir, nginx_port, ports))
        spawn([NGINX, "-c", str(workdir / "proxy.conf"), "-e", str(workdir / "p.err")], "nginx")
        broker_port = free_port()
        (workdir / "mosquitto.conf").write_text(
            f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        spawn([MOSQUITTO, "-c", str(workdir / "mosquitto.conf")], "mosquitto")
        for p in (*ports, nginx_port, broker_port):
            wait_port("127.0.0.1", p, 10)
        broker = f"mqtt://127.0.0.1:{broker_port}"
        asyncio.run(publish_state(broker, "bench", ports))

        contenders: list[tuple[str, str]] = [
            ("nginx (1 worker)", f"http://127.0.0.1:{nginx_port}/")
        ]
        variants = [("shoal (1 process)", 1)] + (
            [] if args.skip_workers else [("shoal --workers 2", 2)]
        )
        for label, workers in variants:
            port, admin = free_port(), free_port()
            spawn(
                [
                    sys.executable,
                    "-m",
                    "services.balancer",
                    "--broker",
                    broker,
                    "--prefix",
                    "bench",
                    "--listen",
                    f"127.0.0.1:{port}",
                    "--admin",
                    f"127.0.0.1:{admin}",
                    "--workers",
                    str(workers),
                    "--log-level",
                    "warning",
                ],
                f"shoal-{workers}",
            )
            wait_port("127.0.0.1", port, 20)
            for w in range(workers):
                wait_routed(admin + w, 3)
            contenders.append((label, f"http://127.0.0.1:{port}/"))

        direct = f"http://127.0.0.1:{ports[0]}/"
        print(
            f"wrk -t1 -c{args.connections} -d{args.duration}s; 3 nginx backends; machine: 2 cores shared by all"
        )
        results: dict[str, dict[str, float]] = {}
        for label, url in contenders:
            wrk(url, 2, args.connections, None, workdir)  # warm up pools
            results[label] = wrk(url, args.duration, args.connections, None, workdir)
        base = results["nginx (1 worker)"]["rps"]
        print(
            f"\n{'full load':<22}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs nginx':>10}{'errors':>8}"
        )
        for label, r in results.items():
            print(
                f"{label:<22}{r['rps']:>10.0f}{r.get('p50', 0):>9.2f}{r.get('p99', 0):>9.2f}"
                f"{r['rps'] / base:>9.0%}{r['errors']:>8.0f}"
            )
        print(
            f"\n{'half load':<22}{'rate':>10}{'p50 ms':>9}{'p99 ms':>9}{'direct p99':>12}{'added p99':>11}"
        )
        for label, url in contenders:
            rate = results[label]["rps"] / 2
            half = wrk(url, args.duration, args.connections, rate, workdir)
            ref = wrk(direct, args.duration, args.connections, rate, workdir)
            print(
                f"{label:<22}{half['rps']:>10.0f}{half.get('p50', 0):>9.2f}{half.get('p99', 0):>9.2f}"
                f"{ref.get('p99', 0):>12.2f}{half.get('p99', 0) - ref.get('p99', 0):>11.2f}"
            )
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
