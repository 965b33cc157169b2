"""A whole Shoal cluster of real processes for e2e tests, under a unique topic prefix.

Every container the cluster's agents create carries ``shoal.prefix=<prefix>``; ``close``
removes exactly those, so tests never touch anything else on the engine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.auth import Identities
from tests.support.net import free_port, wait_port
from tests.support.procs import Broker, Proc, ProcGroup


@dataclass
class HttpResult:
    status: int
    body: str
    headers: dict[str, str] = field(default_factory=dict)


def http_get(url: str, host: str | None = None, timeout: float = 5.0) -> HttpResult:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return HttpResult(resp.status, resp.read().decode(errors="replace"), dict(resp.headers))
    except urllib.error.HTTPError as err:
        return HttpResult(err.code, err.read().decode(errors="replace"), dict(err.headers))


class Cluster:
    """With ``identities`` (``tests.support.auth``) every service, agent and the CLI
    connects with its own credentials, and the controller and scheduler authorise
    (``--auth``); the CLI acts as ``cli_user`` (an admin by default)."""

    def __init__(
        self,
        procs: ProcGroup,
        broker: Broker,
        prefix: str | None = None,
        identities: Identities | None = None,
    ) -> None:
        self.procs = procs
        self.broker = broker
        self.identities = identities
        self.cli_user = "ops"
        self.prefix = prefix or (identities.prefix if identities else f"e2e{uuid.uuid4().hex[:8]}")
        self.data_dir = procs.workdir / "data"
        self.listen_port = free_port()
        self.admin_port = free_port()
        self.services: dict[str, Proc] = {}
        self.agents: dict[str, Proc] = {}

    def _as(self, user: str, *, authorises: bool = False) -> list[str]:
        """The options that make a service connect as ``user`` (and authorise)."""
        if self.identities is None:
            return []
        args = ["--broker-credentials", str(self.identities.credentials[user])]
        return [*args, "--auth", str(self.identities.file)] if authorises else args

    @property
    def lb_url(self) -> str:
        return f"http://127.0.0.1:{self.listen_port}"

    def start(
        self,
        agents: dict[str, str] | None = None,
        *,
        scaler: bool = False,
        scaler_args: Sequence[str] = (),
        balancer_args: Sequence[str] = (),
    ) -> Cluster:
        """Start the control plane and one agent per ``node id -> address``.

        ``scaler_args`` / ``balancer_args`` are extra options for those services (e.g. a
        short ``--scale-down-window`` or ``--hold-timeout``); ``scaler_args`` implies
        ``scaler``.
        """
        url = self.broker.url
        self.services["controller"] = self.procs.service(
            "controller",
            url,
            "--data-dir",
            str(self.data_dir),
            *self._as("controller", authorises=True),
            prefix=self.prefix,
        )
        self.services["scheduler"] = self.procs.service(
            "scheduler", url, *self._as("scheduler", authorises=True), prefix=self.prefix
        )
        self.services["health"] = self.procs.service(
            "health", url, *self._as("health"), prefix=self.prefix
        )
        self.services["balancer"] = self.procs.service(
            "balancer",
            url,
            *self._as("balancer"),
            "--listen",
            f"127.0.0.1:{self.listen_port}",
            "--admin",
            f"127.0.0.1:{self.admin_port}",
            *balancer_args,
            prefix=self.prefix,
        )
        if scaler or scaler_args:
            self.services["scaler"] = self.procs.service(
                "scaler", url, *self._as("scaler"), *scaler_args, prefix=self.prefix
            )
        for node, address in ({"node-1": "127.0.0.1"} if agents is None else agents).items():
            self.start_agent(node, address)
        wait_port("127.0.0.1", self.listen_port, timeout=20)
        return self

    def wait_serving(self, timeout: float = 30) -> None:
        """Until the controller answers commands (a dry-run apply gets its reply): a
        command published with no reply_to before then is lost, as on any MQTT bus."""
        probe = self.procs.workdir / "serving-probe.yaml"
        probe.write_text("name: serving-probe\nimage: shoal-test/echo:v1\n")
        wait_for(
            lambda: self.shoal("apply", "-f", str(probe), "--dry-run", check=False).returncode == 0,
            timeout,
            message="the controller answering",
        )

    def start_agent(self, node: str, address: str, *extra: str) -> Proc:
        proc = self.procs.service(
            "agent",
            self.broker.url,
            "--node-id",
            node,
            "--address",
            address,
            *self._as(f"agent-{node}"),
            *extra,
            prefix=self.prefix,
            name=f"agent-{node}",
        )
        self.agents[node] = proc
        return proc

    def start_mesh(self, node: str, *extra: str) -> Proc:
        """The node's mesh service (east-west names and relays); pair it with an agent
        started with ``--mesh``."""
        proc = self.procs.service(
            "mesh",
            self.broker.url,
            "--node-id",
            node,
            *extra,
            prefix=self.prefix,
            name=f"mesh-{node}",
        )
        self.services[f"mesh-{node}"] = proc
        return proc

    # -- the CLI, exactly as a user runs it --------------------------------------------
    def shoal(
        self, *args: str, check: bool = True, timeout: float = 180, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        argv = [sys.executable, "-m", "services.cli", *args]
        env_args = {"SHOAL_BROKER": self.broker.url, "SHOAL_PREFIX": self.prefix}
        if self.identities is not None:
            creds = self.identities.credentials[self.cli_user]
            env_args["SHOAL_BROKER_CREDENTIALS"] = str(creds)
        import os

        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, **env_args},
            input=stdin,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"shoal {' '.join(args)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}"
            )
        return result

    def apply_text(
        self, text: str, *args: str, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        path = self.procs.workdir / f"spec-{uuid.uuid4().hex[:6]}.yaml"
        path.write_text(text)
        return self.shoal("apply", "-f", str(path), *args, check=check)

    def get_json(self, what: str) -> list[dict[str, object]]:
        out = self.shoal("get", what, "-o", "json").stdout
        data: list[dict[str, object]] = json.loads(out)
        return data

    # -- Docker, limited to this cluster's containers ----------------------------------
    def containers(self, *, all_states: bool = False, app: str | None = None) -> list[str]:
        argv = ["docker", "ps", "-q", "--filter", f"label=shoal.prefix={self.prefix}"]
        if all_states:
            argv.insert(2, "-a")
        if app:
            argv += ["--filter", f"label=shoal.app={app}"]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
        return out.split()

    def close(self) -> None:
        self.procs.close()
        ids = self.containers(all_states=True)
        if ids:
            subprocess.run(["docker", "rm", "-f", *ids], capture_output=True)
        # The mesh's namespace networks (their bridges take the VIPs with them).
        networks = subprocess.run(
            ["docker", "network", "ls", "-q", "--filter", f"label=shoal.prefix={self.prefix}"],
            capture_output=True,
            text=True,
        ).stdout.split()
        if networks:
            subprocess.run(["docker", "network", "rm", *networks], capture_output=True)

    def get(self, path: str = "/", host: str | None = None, timeout: float = 5.0) -> HttpResult:
        return http_get(self.lb_url + path, host, timeout)


def wait_for(
    predicate: object, timeout: float = 30.0, interval: float = 0.2, message: str = "condition"
) -> object:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        last = predicate()  # type: ignore[operator]
        if last:
            return last
        time.sleep(interval)
    raise TimeoutError(f"{message} not met within {timeout}s (last: {last!r})")


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path
