"""Shoal's balancer against nginx, in front of the same fast backends, driven by wrk.

    python tests/benchmarks/bench_balancer.py [--duration 10] [--connections 50]

Backends: three nginx ``return 200`` servers (one nginx worker), so the proxy is the
bottleneck. Contenders: nginx (Debian's, one worker, keep-alive upstream pool) and Shoal's
balancer (one process, and ``--workers 2``), fed by a real mosquitto with the retained
state a controller and a health monitor would publish. For each: full-load requests/s and
p50/p99, then latency at half of that rate (wrk's per-connection ``delay()``), compared
with the backends hit directly at the same rate: the added p99.

Figures are printed; nothing is asserted (performance is not a unit test). On a shared
machine req/s swing with the neighbours' load; the CPU time each proxy's processes spent
per request (from /proc) does not, and ``req/s/core`` = 1e6 / that is the throughput one
core would give.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
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

from core.bus import connect_bus  # noqa: E402
from core.channels import APPS, HEALTH  # noqa: E402
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
    url: str, duration: int, connections: int, delay_ms: float | None, workdir: Path
) -> dict[str, float]:
    args = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency"]
    if delay_ms is not None:
        script = workdir / f"delay-{delay_ms:.3f}.lua"
        script.write_text(f"function delay() return {delay_ms:.3f} end\n")
        args += ["-s", str(script)]
    out = subprocess.run([*args, url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


def at_rate(
    url: str, duration: int, connections: int, rate: float, workdir: Path
) -> dict[str, float]:
    """wrk paced to about ``rate`` requests/s: each connection waits ``delay`` between its
    requests; one short calibration run accounts for the time a request itself takes."""
    cycle_ms = connections * 1000.0 / rate  # per connection, between request starts
    probe = wrk(url, 2, connections, cycle_ms, workdir)
    service_ms = max(0.0, connections * 1000.0 / max(probe["rps"], 1.0) - cycle_ms)
    return wrk(url, duration, connections, max(0.0, cycle_ms - service_ms), workdir)


def half_load(
    title: str,
    width: int,
    contenders: list[tuple[str, str, int]],
    results: dict[str, dict[str, float]],
    direct: str,
    duration: int,
    connections: int,
    workdir: Path,
) -> None:
    """Each contender at half the rate it reached, beside the direct replica at the same
    rate in the same moment: the p99 the proxy adds."""
    head = f"{'rate':>10}{'p50 ms':>9}{'p99 ms':>9}{'direct p99':>12}{'added p99':>11}"
    print(f"\n{title:<{width}}{head}")
    for label, url, _pid in contenders:
        rate = results[label]["rps"] / 2
        half = at_rate(url, duration, connections, rate, workdir)
        ref = at_rate(direct, duration, connections, rate, workdir)
        p50, p99, ref99 = half.get("p50", 0), half.get("p99", 0), ref.get("p99", 0)
        print(
            f"{label:<{width}}{half['rps']:>10.0f}{p50:>9.2f}{p99:>9.2f}"
            f"{ref99:>12.2f}{p99 - ref99:>11.2f}"
        )


def stop_all(procs: list[subprocess.Popen[bytes]], workdir: Path) -> None:
    """Terminate what a benchmark started (newest first), kill what lingers, drop its files."""
    for p in reversed(procs):
        with contextlib.suppress(ProcessLookupError):
            p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    shutil.rmtree(workdir, ignore_errors=True)


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by ``pid`` and all its descendants."""
    table: dict[int, tuple[int, int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        table[int(entry)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        if p in table:
            total += table[p][1]
            stack.extend(c for c, (parent, _) in table.items() if parent == p)
    return total / os.sysconf("SC_CLK_TCK")


async def publish_state(broker: str, prefix: str, ports: list[int]) -> None:
    bus = connect_bus(BrokerURL.parse(broker), Topics(prefix), client_id=f"bench-{prefix}")
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
        await bus.publish(APPS, app)
        await bus.publish(HEALTH, health)
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
        nginx = spawn(
            [NGINX, "-c", str(workdir / "proxy.conf"), "-e", str(workdir / "p.err")], "nginx"
        )
        broker_port = free_port()
        (workdir / "mosquitto.conf").write_text(
            f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        spawn([MOSQUITTO, "-c", str(workdir / "mosquitto.conf")], "mosquitto")
        for port in (*ports, nginx_port, broker_port):
            wait_port("127.0.0.1", port, 10)
        broker = f"mqtt://127.0.0.1:{broker_port}"
        asyncio.run(publish_state(broker, "bench", ports))

        contenders: list[tuple[str, str, int]] = [
            ("nginx (1 worker)", f"http://127.0.0.1:{nginx_port}/", nginx.pid)
        ]
        variants = [("shoal (1 process)", 1)] + (
            [] if args.skip_workers else [("shoal --workers 2", 2)]
        )
        for label, workers in variants:
            port, admin = free_port(), free_port()
            shoal = spawn(
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
            contenders.append((label, f"http://127.0.0.1:{port}/", shoal.pid))

        direct = f"http://127.0.0.1:{ports[0]}/"
        print(
            f"wrk -t1 -c{args.connections} -d{args.duration}s; 3 nginx backends;"
            f" {os.cpu_count()} cores shared by wrk, backends and proxy;"
            f" load average {os.getloadavg()[0]:.1f}"
        )
        results: dict[str, dict[str, float]] = {}
        for label, url, pid in contenders:
            wrk(url, 2, args.connections, None, workdir)  # warm up pools
            cpu = tree_cpu(pid)
            results[label] = r = wrk(url, args.duration, args.connections, None, workdir)
            # CPU per request of the proxy's processes: robust to noisy neighbours
            r["cpu_us"] = (tree_cpu(pid) - cpu) * 1e6 / max(1.0, r["rps"] * args.duration)
        base = results["nginx (1 worker)"]
        head = (
            f"{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs nginx':>10}{'errors':>8}"
            f"{'CPU us/req':>12}{'req/s/core':>12}{'vs nginx':>10}"
        )
        print(f"\n{'full load':<22}{head}")
        for label, r in results.items():
            print(
                f"{label:<22}{r['rps']:>10.0f}{r.get('p50', 0):>9.2f}{r.get('p99', 0):>9.2f}"
                f"{r['rps'] / base['rps']:>9.0%}{r['errors']:>8.0f}"
                f"{r['cpu_us']:>12.1f}{1e6 / r['cpu_us']:>12.0f}"
                f"{base['cpu_us'] / r['cpu_us']:>9.0%}"
            )
        half_load(
            "half load", 22, contenders, results, direct, args.duration, args.connections, workdir
        )
    finally:
        stop_all(procs, workdir)


if __name__ == "__main__":
    main()
