"""``shoal up``: a whole single-node cluster in the foreground.

Starts the embedded broker when nothing listens at ``--broker``, then every service as its
own process (exactly what ``shoal run <service>`` runs), restarts any that dies (with
backoff), and on Ctrl-C / SIGTERM stops them in reverse order. Services still talk only over
the broker: this is a convenience supervisor, not a shortcut.

Every service dies with ``shoal up``, even when ``shoal up`` is SIGKILLed: each is started
through ``core.lifeline`` (parent-death signal, parent pid check, and a lifeline pipe on its
stdin whose EOF stops it), so a second ``shoal up`` never finds the first one's services.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from core.backoff import Backoff
from core.config import DEFAULT_BROKER, BrokerURL, ConfigError
from core.options import data_dir_default
from services.cli.client import err_console


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Child:
    name: str
    module: str
    args: list[str]
    env: dict[str, str] = field(default_factory=dict)  # added to ours (secrets go here)
    proc: asyncio.subprocess.Process | None = None
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.5, cap=10.0))
    started: float = 0.0

    @property
    def argv(self) -> list[str]:
        """``python -m core.lifeline <our pid> <module> <args>``: it dies with us."""
        return [sys.executable, "-m", "core.lifeline", str(os.getpid()), self.module, *self.args]

    async def start(self) -> None:
        self.started = time.monotonic()
        # Forked from the event loop's (main) thread: the parent-death signal follows the
        # thread that forked. Its own session: a terminal's Ctrl-C reaches us alone, and
        # we stop the services in order. stdin is the lifeline pipe (we never write to it).
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv,
            stdin=asyncio.subprocess.PIPE,
            start_new_session=True,
            env={**os.environ, **self.env} if self.env else None,
        )
        err_console.print(f"shoal: {self.name} started (pid {self.proc.pid})", highlight=False)

    async def stop(self, grace: float = 15.0) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await proc.wait()
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


class Supervisor:
    def __init__(self, children: list[Child]) -> None:
        self.children = children
        self._stopping = asyncio.Event()

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        for child in self.children:
            await child.start()
            if child.name == "broker":
                await self._wait_broker(child)
        watchers = [
            asyncio.create_task(self._watch(c), name=f"watch-{c.name}") for c in self.children
        ]
        await self._stopping.wait()
        for w in watchers:
            w.cancel()
        err_console.print("shoal: stopping services...")
        for child in reversed(self.children):
            await child.stop()

    async def _wait_broker(self, child: Child) -> None:
        host, port = child.args[-1].rsplit(":", 1)
        for _ in range(100):
            if _listening(host, int(port)):
                return
            await asyncio.sleep(0.1)
        raise click.ClickException(f"the embedded broker did not start on {host}:{port}")

    async def _watch(self, child: Child) -> None:
        while True:
            assert child.proc is not None
            code = await child.proc.wait()
            if child.proc.stdin is not None:
                child.proc.stdin.close()  # its lifeline: the next start gets a new one
            if self._stopping.is_set():
                return
            if time.monotonic() - child.started > 30:
                child.backoff.reset()
            delay = child.backoff.next()
            err_console.print(
                f"shoal: {child.name} exited with code {code}; restarting in {delay:.1f}s",
                highlight=False,
            )
            await asyncio.sleep(delay)
            await child.start()


def mesh_wanted(no_mesh: bool, euid: int) -> tuple[bool, str]:
    """Whether ``shoal up`` runs the node's mesh (app names for containers), and a note
    for the banner when it does not. The mesh adds addresses to bridges and binds port 53
    on them: it needs root."""
    if no_mesh:
        return False, "\n  mesh: off (--no-mesh): containers cannot reach apps by name"
    if euid != 0:
        return False, (
            "\n  mesh: off (it needs root): containers cannot reach apps by name; run "
            "shoal up as root for names (db, api.prod)"
        )
    return True, ""


def _has_service(name: str) -> bool:
    return importlib.util.find_spec(f"services.{name}.command") is not None


@click.command()
@click.option(
    "--broker",
    envvar="SHOAL_BROKER",
    default=DEFAULT_BROKER,
    show_default=True,
    help="broker URL; an embedded broker is started there if nothing listens",
)
@click.option("--prefix", envvar="SHOAL_PREFIX", default="shoal", show_default=True)
@click.option(
    "--listen",
    default="127.0.0.1:8080",
    show_default=True,
    help="balancer address for user traffic",
)
@click.option(
    "--admin", default="127.0.0.1:9090", show_default=True, help="balancer admin address (/metrics)"
)
@click.option(
    "--dashboard",
    default="127.0.0.1:8081",
    show_default=True,
    help="web dashboard address (HOST:PORT)",
)
@click.option(
    "--tls-listen",
    default=None,
    metavar="HOST:PORT",
    help="balancer HTTPS address for routes with tls (certificates from secrets, by SNI)",
)
@click.option(
    "--data-dir",
    default=data_dir_default,
    show_default="$SHOAL_DATA_DIR, else /var/lib/shoal as root, else $XDG_STATE_HOME/shoal",
    help="where the controller keeps desired state and history",
)
@click.option(
    "--node-id",
    default=lambda: socket.gethostname().split(".")[0],
    show_default="host name",
    help="id of the local node",
)
@click.option(
    "--address",
    default="127.0.0.1",
    show_default=True,
    help="advertise address of the local node (replica ports are published there)",
)
@click.option("--labels", default="", help="node labels k=v,k=v")
@click.option(
    "--policy",
    default=None,
    type=click.Path(exists=True, dir_okay=False, resolve_path=True),
    help="the controller's admission policy (YAML, see configs/policy.yaml); without it, "
    "privileged mode, added capabilities, host bind mounts and the Docker socket are refused",
)
@click.option("--no-agent", is_flag=True, help="do not run a local agent (control plane only)")
@click.option(
    "--no-mesh",
    is_flag=True,
    help="do not run the local mesh (app names and VIPs for containers; needs root)",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--log-format", default="console", show_default=True, type=click.Choice(["console", "json"])
)
def up(
    broker: str,
    prefix: str,
    listen: str,
    admin: str,
    dashboard: str,
    tls_listen: str | None,
    data_dir: str,
    node_id: str,
    address: str,
    labels: str,
    policy: str | None,
    no_agent: bool,
    no_mesh: bool,
    log_level: str,
    log_format: str,
) -> None:
    """Run a whole cluster on this machine in the foreground (Ctrl-C stops it)."""
    try:
        url = BrokerURL.parse(broker)
    except ConfigError as err:
        raise click.BadParameter(str(err), param_hint="--broker") from err
    # The broker URL (it may hold a password) reaches the services through their
    # environment, never their command line, where ``ps`` shows it to every user.
    secret_env = {"SHOAL_BROKER": broker}
    common = [
        "--prefix",
        prefix,
        "--log-level",
        log_level,
        "--log-format",
        log_format,
    ]
    children: list[Child] = []
    if not _listening(url.host, url.port):
        if url.host not in LOOPBACK or url.tls:
            raise click.ClickException(
                f"no broker answers at {url}; the embedded broker starts only on a loopback "
                "mqtt:// address (127.0.0.1, ::1, localhost): it has no authentication or "
                "TLS, so nothing beyond this machine may reach it. For other machines run "
                "mosquitto with TLS and the generated ACL (README: running securely)."
            )
        children.append(
            Child(
                "broker",
                "services.broker",
                ["--log-level", log_level, "--listen", f"{url.host}:{url.port}"],
            )
        )
    Path(data_dir).mkdir(mode=0o700, parents=True, exist_ok=True)  # the store: private
    plan: list[tuple[str, list[str]]] = [
        ("controller", ["--data-dir", data_dir, *(["--policy", policy] if policy else [])]),
        ("scheduler", []),
        ("health", []),
        (
            "balancer",
            [
                "--listen",
                listen,
                "--admin",
                admin,
                *(["--tls-listen", tls_listen] if tls_listen else []),
            ],
        ),
        ("scaler", []),
        ("dashboard", ["--listen", dashboard]),
    ]
    mesh_note = ""
    if not no_agent:
        agent_args = ["--node-id", node_id, "--address", address]
        if labels:
            agent_args += ["--labels", labels]
        mesh, mesh_note = mesh_wanted(no_mesh, os.geteuid())
        if mesh:
            agent_args.append("--mesh")
        plan.insert(2, ("agent", agent_args))
        if mesh:
            plan.insert(2, ("mesh", ["--node-id", node_id]))
    for name, args in plan:
        if _has_service(name):
            children.append(Child(name, f"services.{name}", [*common, *args], env=secret_env))
    names = ", ".join(c.name for c in children)
    err_console.print(
        f"[bold]shoal up[/bold]: broker {url} · balancer http://{listen} · data {data_dir}\n"
        f"  dashboard: http://{dashboard}/\n"
        f"  services: {names}{mesh_note}\n  try: shoal apply -f configs/demo.yaml --wait",
        highlight=False,
    )
    os.environ.setdefault("PYTHONUNBUFFERED", "1")

    async def main() -> None:
        supervisor = Supervisor(children)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, supervisor.stop)
        await supervisor.run()

    asyncio.run(main())


COMMANDS = [up]
