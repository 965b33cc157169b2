"""HTTPS through Shoal's balancer against plain HTTP through it, and against nginx and Caddy
terminating TLS in front of the same replicas, in one run, driven by wrk.

    python -m tests.benchmarks.bench_https [--duration 10] [--connections 50] [--rounds 2]

Replicas: three nginx ``return 200`` servers (one worker). Contenders, each proxying to all
three with keep-alive upstream connections: Shoal's balancer (one process; its plain
``--listen`` and its ``--tls-listen``, the certificate from secrets through a real
controller, so the same path a route's certificate takes), Debian's nginx (one worker,
``ssl``) and Debian's Caddy (``GOMAXPROCS=1``, a static certificate, ``reverse_proxy``).
Every TLS contender serves the same ECDSA P-256 certificate for ``localhost`` (wrk sends
the URL's host as SNI), TLS 1.3 as negotiated by wrk's OpenSSL.

For each: keep-alive full load (req/s, p50/p99, CPU per request of the proxy's processes
from /proc: robust to noisy neighbours), new connections (``Connection: close``: one TCP
and TLS handshake per request), and latency at half of its keep-alive rate next to the
replicas hit directly at that rate (the added p99). Figures are printed, nothing asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from cryptography import x509  # noqa: E402
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402

from core.bus import connect_bus  # noqa: E402
from core.channels import HEALTH  # noqa: E402
from core.config import BrokerURL  # noqa: E402
from core.state import AppHealth, ReplicaHealth  # noqa: E402
from core.topics import Topics  # noqa: E402
from tests.benchmarks.bench_balancer import (  # noqa: E402
    MOSQUITTO,
    NGINX,
    backend_conf,
    half_load,
    nginx_conf,
    stop_all,
    tree_cpu,
    wait_routed,
    wrk,
)
from tests.support.net import free_port, wait_port  # noqa: E402

CADDY = shutil.which("caddy") or "/usr/bin/caddy"
HOST = "localhost"
PREFIX = "benchtls"


def certificate(workdir: Path) -> tuple[Path, Path]:
    """A self-signed ECDSA P-256 certificate for ``localhost`` (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    crt, pem = workdir / "tls.crt", workdir / "tls.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return crt, pem


def nginx_tls_conf(workdir: Path, listen: int, ports: list[int], crt: Path, key: Path) -> str:
    upstream = "\n".join(f"server 127.0.0.1:{p};" for p in ports)
    return nginx_conf(
        workdir,
        f"""
    upstream backends {{ {upstream} keepalive 128; }}
    server {{
        listen 127.0.0.1:{listen} ssl;
        server_name {HOST};
        ssl_certificate {crt};
        ssl_certificate_key {key};
        ssl_protocols TLSv1.2 TLSv1.3;
        ssl_session_cache off;
        location / {{
            proxy_pass http://backends;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        }}
    }}""",
    )


def caddyfile(workdir: Path, listen: int, ports: list[int], crt: Path, key: Path) -> str:
    upstreams = " ".join(f"127.0.0.1:{p}" for p in ports)
    return f"""{{
    admin off
    auto_https off
    storage file_system {workdir}/caddy
}}
https://{HOST}:{listen} {{
    bind 127.0.0.1
    tls {crt} {key}
    reverse_proxy {upstreams} {{
        lb_policy round_robin
    }}
}}
"""


SPEC = f"""
name: bench
image: shoal-test/echo:v1
replicas: 3
ports: {{http: 80}}
route: {{host: {HOST}, port: http, tls: {{cert: bench-cert, key: bench-key}}}}
"""


async def publish_health(broker: str, ports: list[int]) -> None:
    """What the health service would say: the three replicas, ready."""
    bus = connect_bus(BrokerURL.parse(broker), Topics(PREFIX), client_id="bench-health")
    task = asyncio.create_task(bus.run())
    try:
        await bus.wait_connected(10)
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
        await bus.publish(HEALTH, health)
    finally:
        bus.close()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def shoal_cli(broker: str, *args: str) -> None:
    env = {**os.environ, "SHOAL_BROKER": broker, "SHOAL_PREFIX": PREFIX}
    subprocess.run(
        [sys.executable, "-m", "services.cli", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=60,
    )


def wait_https(port: int, timeout: float = 30) -> None:
    """Until the TLS listener serves the route (its certificate is loaded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", f"https://{HOST}:{port}/"],
            capture_output=True,
            text=True,
        )
        if done.stdout == "200":
            return
        time.sleep(0.2)
    raise TimeoutError(f"nothing serves https://{HOST}:{port}/")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved; best kept")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="shoal-bench-https-"))
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(
        argv: list[str], name: str, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        log = (workdir / f"{name}.log").open("wb")
        p = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
            env={**os.environ, **(env or {})},
        )
        procs.append(p)
        return p

    try:
        crt, key = certificate(workdir)
        ports = [free_port() for _ in range(3)]
        (workdir / "backends.conf").write_text(backend_conf(workdir, ports))
        spawn(
            [NGINX, "-c", str(workdir / "backends.conf"), "-e", str(workdir / "b.err")], "backends"
        )
        nginx_port = free_port()
        (workdir / "nginx.conf").write_text(nginx_tls_conf(workdir, nginx_port, ports, crt, key))
        nginx = spawn(
            [NGINX, "-c", str(workdir / "nginx.conf"), "-e", str(workdir / "n.err")], "nginx"
        )
        caddy_port = free_port()
        (workdir / "Caddyfile").write_text(caddyfile(workdir, caddy_port, ports, crt, key))
        caddy = spawn(
            [CADDY, "run", "--config", str(workdir / "Caddyfile"), "--adapter", "caddyfile"],
            "caddy",
            env={"GOMAXPROCS": "1", "HOME": str(workdir), "XDG_DATA_HOME": str(workdir)},
        )
        broker_port = free_port()
        (workdir / "mosquitto.conf").write_text(
            f"listener {broker_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
        )
        spawn([MOSQUITTO, "-c", str(workdir / "mosquitto.conf")], "mosquitto")
        for port in (*ports, nginx_port, caddy_port, broker_port):
            wait_port("127.0.0.1", port, 20)
        broker = f"mqtt://127.0.0.1:{broker_port}"
        python = [sys.executable, "-m"]
        common = ["--broker", broker, "--prefix", PREFIX, "--log-level", "warning"]
        spawn(
            [*python, "services.controller", *common, "--data-dir", str(workdir / "db")],
            "controller",
        )
        plain, tls, admin = free_port(), free_port(), free_port()
        shoal = spawn(
            [
                *python, "services.balancer", *common,
                "--listen", f"127.0.0.1:{plain}",
                "--tls-listen", f"127.0.0.1:{tls}",
                "--admin", f"127.0.0.1:{admin}",
            ],
            "shoal",
        )  # fmt: skip
        wait_port("127.0.0.1", plain, 20)
        shoal_cli(broker, "secret", "create", "bench-cert", "--from-file", str(crt))
        shoal_cli(broker, "secret", "create", "bench-key", "--from-file", str(key))
        (workdir / "bench.yaml").write_text(SPEC)
        shoal_cli(broker, "apply", "-f", str(workdir / "bench.yaml"))
        asyncio.run(publish_health(broker, ports))
        wait_routed(admin, 3)
        wait_https(tls)
        wait_https(nginx_port)
        wait_https(caddy_port)

        contenders = [
            ("shoal http", f"http://{HOST}:{plain}/", shoal.pid),
            ("shoal https", f"https://{HOST}:{tls}/", shoal.pid),
            ("nginx https", f"https://{HOST}:{nginx_port}/", nginx.pid),
            ("caddy https", f"https://{HOST}:{caddy_port}/", caddy.pid),
        ]
        print(
            f"wrk -t1 -c{args.connections} -d{args.duration}s; 3 nginx replicas; one proxy "
            f"process each (Caddy GOMAXPROCS=1); {os.cpu_count()} cores shared by wrk, "
            f"replicas and proxy; best of {args.rounds} interleaved rounds; "
            f"load average {os.getloadavg()[0]:.1f}"
        )
        keep: dict[str, dict[str, float]] = {}
        fresh: dict[str, dict[str, float]] = {}
        close = workdir / "close.lua"
        close.write_text('wrk.headers["Connection"] = "close"\n')
        for _label, url, _pid in contenders:
            wrk(url, 2, args.connections, None, workdir)  # warm up pools and code paths
        for _round in range(args.rounds):  # interleaved; the best round of each is kept
            for label, url, pid in contenders:
                cpu = tree_cpu(pid)
                r = wrk(url, args.duration, args.connections, None, workdir)
                r["cpu_us"] = (tree_cpu(pid) - cpu) * 1e6 / max(1.0, r["rps"] * args.duration)
                if label not in keep or r["rps"] > keep[label]["rps"]:
                    keep[label] = r
                cpu = tree_cpu(pid)
                f = new_connections(url, args.duration, args.connections, close)
                f["cpu_us"] = (tree_cpu(pid) - cpu) * 1e6 / max(1.0, f["rps"] * args.duration)
                if label not in fresh or f["rps"] > fresh[label]["rps"]:
                    fresh[label] = f
        base = keep["shoal http"]
        head = (
            f"{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'vs http':>9}{'errors':>8}{'CPU us/req':>12}"
        )
        print(f"\n{'keep-alive, full load':<24}{head}")
        for label, r in keep.items():
            print(
                f"{label:<24}{r['rps']:>10.0f}{r.get('p50', 0):>9.2f}{r.get('p99', 0):>9.2f}"
                f"{r['rps'] / base['rps']:>8.0%}{r['errors']:>8.0f}{r['cpu_us']:>12.1f}"
            )
        print(f"\n{'new connection each':<24}{head}")
        base = fresh["shoal http"]
        for label, r in fresh.items():
            print(
                f"{label:<24}{r['rps']:>10.0f}{r.get('p50', 0):>9.2f}{r.get('p99', 0):>9.2f}"
                f"{r['rps'] / base['rps']:>8.0%}{r['errors']:>8.0f}{r['cpu_us']:>12.1f}"
            )
        direct = f"http://127.0.0.1:{ports[0]}/"
        half_load(
            "keep-alive, half load",
            24,
            contenders,
            keep,
            direct,
            args.duration,
            args.connections,
            workdir,
        )
    finally:
        stop_all(procs, workdir)


def new_connections(url: str, duration: int, connections: int, script: Path) -> dict[str, float]:
    """wrk with ``Connection: close``: every request opens (and handshakes) a connection."""
    from tests.benchmarks.bench_balancer import parse_wrk

    argv = ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script)]
    out = subprocess.run([*argv, url], capture_output=True, text=True, check=True).stdout
    return parse_wrk(out)


if __name__ == "__main__":
    main()
