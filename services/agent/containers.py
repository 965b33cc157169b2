"""What the agent asks Docker for and what it reads back: pure translation, no I/O.

- ``container_name`` / ``container_labels``: the naming conventions of core/README.md;
- ``volume_name``: a named volume is its namespace's (``<prefix>_<namespace>_<name>``);
- ``create_config``: an ``AppSpec`` replica as a Docker ``containers/create`` body, with
  the node's ``ContainerLimits`` (a pids limit and log size limits on every container);
- ``parse_container``: a ``containers/<id>/json`` (inspect) answer as a ``Container``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.mesh import NodeNetwork, attach
from core.spec import AppSpec, Mount
from core.state import AssignedReplica
from services.agent.secrets import SecretMounts

LABEL_MANAGED = "shoal.managed"
LABEL_PREFIX = "shoal.prefix"
LABEL_NODE = "shoal.node"
LABEL_REPLICA = "shoal.replica"
LABEL_NS = "shoal.ns"
LABEL_APP = "shoal.app"
LABEL_REVISION = "shoal.revision"
LABEL_DRAIN = "shoal.drain"
LABEL_GRACE = "shoal.grace"
LABEL_PORTS = "shoal.ports"
LABEL_VOLUME = "shoal.volume"


#: Docker's json-file ``max-size``: a number and a unit.
LOG_SIZE = re.compile(r"^[1-9][0-9]*[kmg]$")


@dataclass(frozen=True, slots=True)
class ContainerLimits:
    """What every container of a node gets, whatever its spec says (agent options).

    A pids limit (a fork bomb stops at it instead of exhausting the node's process table)
    and Docker's ``json-file`` log rotation (a chatty replica cannot fill the node's disk):
    at most ``log_max_files`` files of ``log_max_size`` each. The memory limit is always
    set too: it is the spec's request, or ``memory_limit`` when larger (``Resources``).
    """

    pids: int = 4096
    log_max_size: str = "10m"
    log_max_files: int = 3

    def __post_init__(self) -> None:
        if self.pids < 1:
            raise ValueError(f"pids limit {self.pids} must be at least 1")
        if self.log_max_files < 1:
            raise ValueError(f"log max files {self.log_max_files} must be at least 1")
        if not LOG_SIZE.match(self.log_max_size):
            raise ValueError(
                f"log max size {self.log_max_size!r} must be a number with k, m or g (e.g. 10m)"
            )


#: The node's defaults (``shoal run agent --pids-limit/--log-max-size/--log-max-files``).
DEFAULT_LIMITS = ContainerLimits()


def container_name(node: str, replica: str) -> str:
    return f"shoal.{node}.{replica}"


def owner_filters(prefix: str, node: str) -> list[str]:
    """Docker ``label`` filters selecting exactly this agent's containers."""
    return [f"{LABEL_MANAGED}=true", f"{LABEL_PREFIX}={prefix}", f"{LABEL_NODE}={node}"]


def volume_name(source: str, *, prefix: str, namespace: str) -> str:
    """The Docker volume behind a spec's named volume ``source``: ``<prefix>_<namespace>_<source>``
    (``shoal_prod_data``), as compose names volumes after their project. A named volume
    belongs to its namespace (and cluster): ``data`` of an app in ``test`` is never the
    ``data`` of an app in ``prod``, though apps of one namespace share it by name."""
    safe = re.sub(r"[^A-Za-z0-9_.-]", "-", prefix).lstrip("_.-") or "shoal"
    return f"{safe}_{namespace}_{source}"


def mount(m: Mount, *, prefix: str, namespace: str) -> dict[str, Any]:
    """One entry of ``HostConfig.Mounts``: a bind as given, a named volume scoped to the
    namespace and labelled (Docker applies the labels when the create makes the volume)."""
    if m.is_bind:
        return {"Type": "bind", "Source": m.source, "Target": m.target, "ReadOnly": m.read_only}
    return {
        "Type": "volume",
        "Source": volume_name(m.source, prefix=prefix, namespace=namespace),
        "Target": m.target,
        "ReadOnly": m.read_only,
        "VolumeOptions": {
            "Labels": {
                LABEL_MANAGED: "true",
                LABEL_PREFIX: prefix,
                LABEL_NS: namespace,
                LABEL_VOLUME: m.source,
            }
        },
    }


def container_labels(
    spec: AppSpec, replica: AssignedReplica, *, prefix: str, node: str
) -> dict[str, str]:
    labels = {f"user.{k}": v for k, v in spec.labels.items()}
    labels.update(
        {
            LABEL_MANAGED: "true",
            LABEL_PREFIX: prefix,
            LABEL_NODE: node,
            LABEL_REPLICA: replica.id,
            LABEL_NS: replica.namespace,
            LABEL_APP: replica.app,
            LABEL_REVISION: str(replica.revision),
            # What removal needs even after the spec left the assignment.
            LABEL_DRAIN: f"{spec.termination.drain:g}",
            LABEL_GRACE: f"{spec.termination.grace:g}",
            LABEL_PORTS: ",".join(f"{name}={port}" for name, port in spec.ports.items()),
        }
    )
    return labels


def create_config(
    spec: AppSpec,
    replica: AssignedReplica,
    *,
    prefix: str,
    node: str,
    address: str,
    limits: ContainerLimits = DEFAULT_LIMITS,
    secrets: SecretMounts = SecretMounts(),
    network: NodeNetwork | None = None,
) -> dict[str, Any]:
    """The body of ``POST /containers/create`` for one replica; ``secrets``: the files
    (in memory on the host) bound read-only and the env values of its secrets; on
    ``network``, the node mesh's network of its namespace, when the agent runs with
    ``--mesh``."""
    env = [f"{k}={v}" for k, v in spec.env.items()]
    env += [f"{k}={v}" for k, v in secrets.env]
    env += [
        f"SHOAL_REPLICA={replica.id}",
        f"SHOAL_APP={replica.app}",
        f"SHOAL_NAMESPACE={replica.namespace}",
        f"SHOAL_NODE={node}",
        f"SHOAL_REVISION={replica.revision}",
    ]
    security = spec.security
    memory_limit = spec.resources.memory_limit or spec.resources.memory
    host: dict[str, Any] = {
        "PortBindings": {
            f"{port}/tcp": [{"HostIp": address, "HostPort": ""}] for port in spec.ports.values()
        },
        # The cpu request is a weight, a hard quota only comes from cpu_limit (see Resources).
        "CpuShares": max(2, round(spec.resources.cpu * 1024)),
        "NanoCpus": round(spec.resources.cpu_limit * 1e9) if spec.resources.cpu_limit else 0,
        "Memory": memory_limit,
        "MemorySwap": memory_limit,  # no swap: the limit is the limit
        "PidsLimit": limits.pids,
        "LogConfig": {
            "Type": "json-file",
            "Config": {"max-size": limits.log_max_size, "max-file": str(limits.log_max_files)},
        },
        "RestartPolicy": {"Name": "no"},  # restarts are Shoal's
        "SecurityOpt": ["no-new-privileges:true"] if security.no_new_privileges else [],
        "ReadonlyRootfs": security.read_only_rootfs,
        "Privileged": security.privileged,
        "CapAdd": list(security.cap_add) or None,
        "CapDrop": list(security.cap_drop) or None,
        "Mounts": [mount(m, prefix=prefix, namespace=replica.namespace) for m in spec.volumes]
        + [
            {"Type": "bind", "Source": source, "Target": target, "ReadOnly": True}
            for source, target in secrets.files
        ],
    }
    config: dict[str, Any] = {
        "Image": spec.image,
        "Env": env,
        "Labels": container_labels(spec, replica, prefix=prefix, node=node),
        "ExposedPorts": {f"{port}/tcp": {} for port in spec.ports.values()},
        "HostConfig": host,
    }
    if network is not None:
        mesh_host, networking = attach(network)
        host.update(mesh_host)
        config["NetworkingConfig"] = networking
    if spec.command is not None:
        config["Entrypoint"] = list(spec.command)
    if spec.args is not None:
        config["Cmd"] = list(spec.args)
    if spec.working_dir:
        config["WorkingDir"] = spec.working_dir
    if spec.user:
        config["User"] = spec.user
    if spec.hostname:
        config["Hostname"] = spec.hostname
    if spec.stop_signal:
        config["StopSignal"] = spec.stop_signal  # Docker's stop sends it, then SIGKILL
    return config


# -- reading containers back -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Container:
    """One of the agent's containers as last inspected."""

    id: str
    replica: str
    namespace: str
    app: str
    revision: int
    state: str  # created | running | paused | restarting | removing | exited | dead
    exit_code: int | None = None
    oom_killed: bool = False
    error: str = ""
    started_at: float | None = None
    finished_at: float | None = None
    host_ports: tuple[tuple[int, int], ...] = ()  # (container port, host port)
    port_names: tuple[tuple[str, int], ...] = ()  # (name, container port), from labels
    drain: float = 0.0
    grace: float = 10.0

    @property
    def running(self) -> bool:
        return self.state in ("running", "paused", "restarting")

    @property
    def exited(self) -> bool:
        return self.state in ("exited", "dead")

    @property
    def exit_reason(self) -> str:
        if self.oom_killed:
            return "OOMKilled"
        if self.error:
            return self.error
        if self.exit_code == 0:
            return "Completed"
        return "Error"

    def endpoints(self, address: str) -> dict[str, str]:
        """Port name -> ``address:hostport`` for every published port."""
        by_port = dict(self.host_ports)
        return {
            name: f"{address}:{by_port[port]}" for name, port in self.port_names if port in by_port
        }


def parse_time(value: object) -> float | None:
    """Docker's RFC 3339 nanosecond timestamps; the zero time means never."""
    if not isinstance(value, str) or not value or value.startswith("0001-"):
        return None
    text = value.rstrip("Z")
    offset = "+00:00"
    for sign in ("+", "-"):
        head, sep, tail = text.rpartition(sign)
        if sep and "T" in head and ":" in tail and len(tail) <= 5:
            text, offset = head, sign + tail
            break
    if "." in text:
        whole, frac = text.split(".", 1)
        text = f"{whole}.{frac[:6]}"
    try:
        return datetime.fromisoformat(text + offset).timestamp()
    except ValueError:
        return None


def _float(value: str | None, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


def parse_port_names(value: str) -> tuple[tuple[str, int], ...]:
    out = []
    for item in value.split(","):
        name, _, port = item.partition("=")
        if name and port.isdigit():
            out.append((name, int(port)))
    return tuple(out)


def parse_container(data: dict[str, Any]) -> Container | None:
    """An inspect answer as a ``Container``; None if it carries no Shoal replica label."""
    config = data.get("Config") or {}
    labels: dict[str, str] = config.get("Labels") or {}
    replica = labels.get(LABEL_REPLICA)
    if not replica:
        return None
    state = data.get("State") or {}
    ports: list[tuple[int, int]] = []
    for key, bindings in ((data.get("NetworkSettings") or {}).get("Ports") or {}).items():
        port, _, proto = key.partition("/")
        if proto != "tcp" or not bindings or not port.isdigit():
            continue
        for binding in bindings:
            host_port = str(binding.get("HostPort", ""))
            if host_port.isdigit():
                ports.append((int(port), int(host_port)))
                break
    status = str(state.get("Status") or "created")
    try:
        revision = int(labels.get(LABEL_REVISION, "0"))
    except ValueError:
        revision = 0
    return Container(
        id=str(data.get("Id", "")),
        replica=replica,
        namespace=labels.get(LABEL_NS, ""),
        app=labels.get(LABEL_APP, ""),
        revision=revision,
        state=status,
        exit_code=int(state["ExitCode"]) if status in ("exited", "dead") else None,
        oom_killed=bool(state.get("OOMKilled")),
        error=str(state.get("Error") or ""),
        started_at=parse_time(state.get("StartedAt")),
        finished_at=parse_time(state.get("FinishedAt")),
        host_ports=tuple(sorted(ports)),
        port_names=parse_port_names(labels.get(LABEL_PORTS, "")),
        drain=_float(labels.get(LABEL_DRAIN), 0.0),
        grace=_float(labels.get(LABEL_GRACE), 10.0),
    )
