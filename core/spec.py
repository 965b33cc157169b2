"""The app spec: what users write (YAML or JSON), validated.

``AppSpec`` is frozen and forbids unknown fields, so a typo (``replcias: 3``) is an
error instead of a silently ignored key. ``load_specs`` turns a file's text into specs
or raises ``SpecError`` with one line per problem, each naming the document, the app and
the field.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ModelWrapValidatorHandler,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticSerializationError

from core.bounds import MAX_COUNT
from core.errors import SpecError
from core.keys import AppKey
from core.spec_yaml import Document, read_documents
from core.units import parse_cpu, parse_duration, parse_memory, shown
from core.wire_memo import from_wire, memoized

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
LABEL_KEY = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.\-/]{0,61}[A-Za-z0-9])?$")

Duration = Annotated[float, BeforeValidator(parse_duration)]
Memory = Annotated[int, BeforeValidator(parse_memory)]
Cpu = Annotated[float, BeforeValidator(parse_cpu)]


#: The smallest CPU amount: one millicore (Kubernetes' precision).
MIN_CPU = 0.001
#: The largest spec, as JSON: 1 MiB (Kubernetes stores objects up to about 1.5 MiB).
MAX_SPEC_BYTES = 1024**2


def _env_value(value: object) -> str:
    """Env values are text. Spec files keep the text written (``core.spec_yaml``); what
    comes as typed data (JSON on the bus) must be text already, or an integer, whose text
    is exact. A boolean or a fraction is refused: its text is not known (``1.10`` arrives
    as 1.1, ``NO`` or ``yes`` as a boolean)."""
    if isinstance(value, bool):
        raise ValueError(
            f"env value {str(value).lower()} is a boolean, not text; write it in quotes "
            "so the container gets the text you mean"
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        raise ValueError(
            f"env value {shown(value)} is a number whose text is lost (1.10 becomes 1.1); "
            "write it in quotes"
        )
    if isinstance(value, str):
        return value
    raise ValueError(f"env values must be text, got {type(value).__name__}")


def _process_text(value: str) -> str:
    """Text handed to a process (env, command, args) cannot hold a NUL character."""
    if "\0" in value:
        raise ValueError("a NUL character cannot be passed to a process")
    return value


EnvValue = Annotated[str, BeforeValidator(_env_value), AfterValidator(_process_text)]
ProcessText = Annotated[str, AfterValidator(_process_text)]


def _port_ref(value: str | int) -> str | int:
    if isinstance(value, int) and not 1 <= value <= 65535:
        raise ValueError(f"port {shown(value)} is not in 1-65535")
    return value


#: A reference to a port: its name, or its number.
PortRef = Annotated[str | int, AfterValidator(_port_ref)]


class Model(BaseModel):
    """Base of every Shoal model: immutable, strict about unknown fields.

    Floats are finite (JSON, hence the store, has no NaN nor infinity); integers are
    bounded (``core.bounds``). Strictness is for what users write. Messages between
    services are read with ``Envelope.open(model, lenient=True)`` (the contract's state
    channels), which ignores fields a newer peer added, at any depth.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)


def check_dns_label(value: str, what: str) -> str:
    if not DNS_LABEL.match(value):
        raise ValueError(
            f"{what} {value!r} must be a DNS label: 1-63 lowercase letters, digits or '-', "
            "starting and ending with a letter or digit"
        )
    return value


class Resources(Model):
    """Requests (what placement reserves) and the Docker limits derived from them.

    Memory: the request is also the hard limit unless ``memory_limit`` is larger.
    CPU: the request becomes a proportional weight (``CpuShares``, guaranteed under
    contention); a hard quota is set only from ``cpu_limit``. A quota equal to a small
    request throttles even a container's start (3 replicas at 0.01 CPU took 2.4 s to start
    against 0.37 s without), which is why Kubernetes, too, sets a quota only from a limit.
    """

    cpu: Cpu = Field(default=0.1, ge=MIN_CPU, description="cores")
    memory: Memory = Field(default=64 * 1024**2, gt=0, description="bytes")
    cpu_limit: Cpu | None = Field(default=None, ge=MIN_CPU, description="hard cap in cores")
    memory_limit: Memory | None = Field(default=None, gt=0, description="bytes, >= memory")

    @model_validator(mode="after")
    def _limits_above_requests(self) -> Resources:
        if self.cpu_limit is not None and self.cpu_limit < self.cpu:
            raise ValueError(
                f"cpu_limit ({self.cpu_limit:g}) is below the cpu request ({self.cpu:g})"
            )
        if self.memory_limit is not None and self.memory_limit < self.memory:
            raise ValueError("memory_limit is below the memory request")
        return self

    @field_validator("memory")
    @classmethod
    def _min_memory(cls, v: int) -> int:
        if v < 6 * 1024**2:
            raise ValueError("memory must be at least 6Mi (Docker's minimum)")
        return v


class Probe(Model):
    """One health probe: exactly one of ``http``, ``tcp`` or ``exec``."""

    http: str | None = None
    tcp: PortRef | None = None
    exec: list[ProcessText] | None = None
    port: PortRef | None = None
    interval: Duration = 1.0
    timeout: Duration = 1.0
    failures: int = Field(default=3, ge=1, le=MAX_COUNT)
    successes: int = Field(default=1, ge=1, le=MAX_COUNT)
    initial_delay: Duration = 0.0

    @model_validator(mode="after")
    def _one_kind(self) -> Probe:
        kinds = [k for k in ("http", "tcp", "exec") if getattr(self, k) is not None]
        if len(kinds) != 1:
            raise ValueError("a probe needs exactly one of http, tcp or exec")
        if self.http is not None and not self.http.startswith("/"):
            raise ValueError(f"http probe path {self.http!r} must start with '/'")
        if self.exec is not None and not self.exec:
            raise ValueError("exec probe needs a command")
        if self.timeout <= 0 or self.interval <= 0:
            raise ValueError("probe interval and timeout must be positive")
        return self

    @property
    def kind(self) -> Literal["http", "tcp", "exec"]:
        if self.http is not None:
            return "http"
        if self.tcp is not None:
            return "tcp"
        return "exec"

    @property
    def target_port(self) -> str | int | None:
        """The port the probe connects to (a port name, a number, or None for the default)."""
        return self.tcp if self.tcp is not None else self.port


class Health(Model):
    readiness: Probe | None = None
    liveness: Probe | None = None


class RouteTls(Model):
    """HTTPS for a route, served by the balancer's TLS listener to clients asking (SNI)
    for the route's host. Either ``cert`` and ``key``: the certificate chain and private
    key, each a secret (PEM) of the app's namespace, their versions pinned by the
    controller as for ``AppSpec.secrets`` (a new certificate reaches the balancers without
    a new revision); or ``acme: true``: the balancers given an ACME directory obtain and
    renew it (RFC 8555, HTTP-01). ``redirect: true`` answers plain HTTP for the route with
    308 to the same URL over HTTPS (ACME challenge paths excepted)."""

    cert: str | None = None
    key: str | None = None
    cert_version: int | None = Field(default=None, ge=1, le=2**63 - 1)
    key_version: int | None = Field(default=None, ge=1, le=2**63 - 1)
    acme: bool = False
    redirect: bool = False

    _cert = field_validator("cert")(
        classmethod(lambda cls, v: v if v is None else check_secret_name(v))
    )
    _key = field_validator("key")(
        classmethod(lambda cls, v: v if v is None else check_secret_name(v))
    )

    @model_validator(mode="after")
    def _source(self) -> RouteTls:
        if self.acme and (self.cert is not None or self.key is not None):
            raise ValueError("route tls: either cert and key, or acme: true, not both")
        if not self.acme and (self.cert is None or self.key is None):
            raise ValueError("route tls needs cert and key (secret names), or acme: true")
        return self

    def secret_names(self) -> list[tuple[str, int | None]]:
        """The secrets named (with their pinned versions): none for ACME."""
        if self.cert is None or self.key is None:
            return []
        return [(self.cert, self.cert_version), (self.key, self.key_version)]


class Route(Model):
    """How the balancer reaches the app: by Host header and path prefix."""

    host: str | None = None
    path: str = "/"
    port: PortRef | None = None
    algorithm: Literal["round_robin", "least_conn", "weighted", "hash"] = "round_robin"
    hash_on: str = Field(
        default="client_ip",
        description="for algorithm hash: 'client_ip' or 'header:<Name>' (falls back to client IP)",
    )
    tls: RouteTls | None = None

    @model_validator(mode="after")
    def _tls_host(self) -> Route:
        if self.tls is not None and self.host is None:
            raise ValueError("route tls needs a host: the certificate is chosen by it (SNI)")
        if self.tls is not None and self.tls.acme and (self.host or "").startswith("*."):
            raise ValueError(
                f"route tls acme: {self.host!r} is a wildcard; HTTP-01 cannot validate it "
                "(give the certificate as cert and key secrets)"
            )
        return self

    @field_validator("hash_on")
    @classmethod
    def _hash_on(cls, v: str) -> str:
        if v == "client_ip":
            return v
        kind, _, name = v.partition(":")
        if kind != "header" or not re.match(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$", name):
            raise ValueError(f"route hash_on {v!r} must be 'client_ip' or 'header:<Name>'")
        return v

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"route path {v!r} must start with '/'")
        return v

    @field_validator("host")
    @classmethod
    def _host(cls, v: str | None) -> str | None:
        if v is None:
            return None
        v = v.lower()
        if not re.match(r"^[a-z0-9*]([a-z0-9.\-]*[a-z0-9])?$", v):
            raise ValueError(f"route host {v!r} is not a valid host name")
        return v


#: the node label that names a node's region (``--labels region=eu``)
REGION_LABEL = "region"


class RegionPlacement(Model):
    """``placement.regions``: spread the app over every region that can take it."""

    min_per_region: int = Field(
        default=1,
        ge=1,
        le=MAX_COUNT,
        description="replicas each reachable region gets before any region gets more",
    )


#: TCP listeners one app may ask the balancer for.
MAX_TCP_ROUTES = 16


class TcpRoute(Model):
    """An L4 route at the edge: the balancer listens on ``listen`` (on the host of its
    ``--listen``) and relays every connection, bytes both ways, to a ready replica's
    ``port``. No Host header: a listen port belongs to one app of the cluster."""

    listen: int = Field(ge=1, le=65535, description="the balancer's listen port")
    port: PortRef | None = None
    algorithm: Literal["round_robin", "least_conn", "hash"] = Field(
        default="round_robin", description="hash: rendezvous on the client IP"
    )


class Placement(Model):
    strategy: Literal["spread", "binpack"] = "spread"
    constraints: dict[str, list[str]] = Field(default_factory=dict)
    spread_by: str | None = None
    max_per_node: int | None = Field(default=None, ge=1, le=MAX_COUNT)
    regions: RegionPlacement | None = Field(
        default=None,
        description="a minimum per value of the nodes' region label; implies spread_by region",
    )

    @property
    def spread_label(self) -> str | None:
        """The label replicas are balanced over: ``spread_by``, else ``region`` with
        ``regions``."""
        if self.spread_by is not None:
            return self.spread_by
        return REGION_LABEL if self.regions is not None else None

    @field_validator("constraints", mode="before")
    @classmethod
    def _constraint_lists(cls, v: Any) -> Any:
        if isinstance(v, dict):
            return {k: [val] if isinstance(val, str) else val for k, val in v.items()}
        return v


class Update(Model):
    max_surge: int = Field(default=1, ge=0, le=MAX_COUNT)
    max_unavailable: int = Field(default=0, ge=0, le=MAX_COUNT)
    auto_rollback: bool = True
    progress_deadline: Duration = 60.0
    canary: int | None = Field(
        default=None,
        ge=1,
        le=MAX_COUNT,
        description="start N replicas of a new revision, then pause",
    )

    @model_validator(mode="after")
    def _can_progress(self) -> Update:
        if self.max_surge == 0 and self.max_unavailable == 0:
            raise ValueError("max_surge and max_unavailable cannot both be 0")
        return self


def _fraction(value: object) -> object:
    """Utilisation targets: a fraction (``0.7``) or a percentage string (``"70%"``)."""
    if isinstance(value, str) and value.strip().endswith("%"):
        number = value.strip()[:-1].strip()
        if not re.match(r"^(\d+(\.\d*)?|\.\d+)$", number):
            raise ValueError(f"invalid percentage {shown(value)}: use e.g. 70% or 0.7")
        return float(number) / 100
    if isinstance(value, int | float) and not isinstance(value, bool) and not 0 < value <= 1:
        raise ValueError(
            f"utilisation target {value} must be a fraction of the request in (0, 1], "
            "e.g. 0.7 or '70%'"
        )
    return value


Fraction = Annotated[float, BeforeValidator(_fraction)]


class ScaleTarget(Model):
    rps_per_replica: float | None = Field(default=None, gt=0, le=1e9)
    inflight_per_replica: float | None = Field(default=None, gt=0, le=1e9)
    p95_latency_ms: float | None = Field(default=None, gt=0, le=3.6e6, description="<= 1 hour")
    cpu_utilization: Fraction | None = Field(default=None, gt=0, le=1)
    memory_utilization: Fraction | None = Field(default=None, gt=0, le=1)

    @model_validator(mode="after")
    def _some_target(self) -> ScaleTarget:
        if all(getattr(self, name) is None for name in type(self).model_fields):
            raise ValueError(
                "autoscale target needs at least one metric: " + ", ".join(type(self).model_fields)
            )
        return self


class Autoscale(Model):
    min: int = Field(default=1, ge=0, le=MAX_COUNT)
    max: int = Field(ge=1, le=MAX_COUNT)
    target: ScaleTarget

    @model_validator(mode="after")
    def _bounds(self) -> Autoscale:
        if self.min > self.max:
            raise ValueError(f"autoscale min ({self.min}) is greater than max ({self.max})")
        return self


class Termination(Model):
    drain: Duration = 1.0
    grace: Duration = 10.0


#: At most this many namespaces in one app's ``network.allow_from``.
MAX_ALLOW = 256

VOLUME_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")


class Mount(Model):
    """A named volume (``source: data``) or a bind mount (``source: /abs/host/path``)."""

    source: str
    target: str
    read_only: bool = False

    @field_validator("source")
    @classmethod
    def _source(cls, v: str) -> str:
        if not (v.startswith("/") or VOLUME_NAME.match(v)):
            raise ValueError(
                f"volume source {v!r} must be an absolute host path or a volume name "
                "([A-Za-z0-9][A-Za-z0-9_.-]*)"
            )
        return v

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if not v.startswith("/"):
            raise ValueError(f"volume target {v!r} must be an absolute path")
        return v

    @property
    def is_bind(self) -> bool:
        return self.source.startswith("/")


class Network(Model):
    """East-west reachability (see the README's Networking): every app is reachable by name
    (``<name>``, ``<name>.<namespace>``) from containers of its own namespace; ``allow_from``
    lists other namespaces whose containers may reach it too (``*``: every namespace);
    ``aliases`` are more names for it, in its namespace (compose's ``container_name`` and
    network ``aliases``). ``internal: true`` keeps it off the edge: it cannot have a
    ``route``."""

    internal: bool = False
    allow_from: list[str] = Field(default_factory=list, max_length=MAX_ALLOW)
    aliases: list[str] = Field(
        default_factory=list,
        max_length=MAX_ALLOW,
        description="extra names of the app in its namespace (an app's own name wins)",
    )

    @field_validator("aliases")
    @classmethod
    def _aliases(cls, v: list[str]) -> list[str]:
        for item in v:
            check_dns_label(item, "network alias")
        if len(set(v)) != len(v):
            raise ValueError("network aliases must not repeat")
        return v

    @field_validator("allow_from")
    @classmethod
    def _allow(cls, v: list[str]) -> list[str]:
        for item in v:
            if item != "*":
                check_dns_label(item, "network allow_from namespace")
        return v


class Security(Model):
    """Container hardening; safe by default, each default can be opted out of."""

    no_new_privileges: bool = True
    read_only_rootfs: bool = False
    privileged: bool = False
    cap_add: list[str] = Field(default_factory=list)
    cap_drop: list[str] = Field(default_factory=list)


SECRET_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.\-]{0,61}[A-Za-z0-9])?$")
#: Where a secret is mounted unless its ``target`` says otherwise.
SECRETS_DIR = "/run/secrets"


def check_secret_name(value: str) -> str:
    if not SECRET_NAME.match(value):
        raise ValueError(
            f"secret name {value!r} must be 1-63 letters, digits, '_', '.' or '-', "
            "starting and ending with a letter or digit"
        )
    return value


def _secret_use(value: object) -> object:
    """``secrets: [db]`` is short for ``secrets: [{name: db}]``."""
    return {"name": value} if isinstance(value, str) else value


class SecretUse(Model):
    """One secret an app uses (``core/secrets.py``; the value lives in the controller).

    Mounted read-only, in memory, at ``/run/secrets/<name>`` unless ``target`` names
    another path (absolute, or relative to ``/run/secrets``) or only ``env`` is given (the
    value in that environment variable). ``version`` is pinned by the controller: the
    secret's version this revision runs with (a new value makes a new revision).
    """

    name: str
    target: str | None = None
    env: str | None = None
    version: int | None = Field(default=None, ge=1, le=2**63 - 1)

    _name = field_validator("name")(classmethod(lambda cls, v: check_secret_name(v)))

    @field_validator("target")
    @classmethod
    def _target(cls, v: str | None) -> str | None:
        if v is None:
            return None
        path = v if v.startswith("/") else f"{SECRETS_DIR}/{v}"
        parts = path.split("/")[1:]
        if not v or any(p in ("", ".", "..") for p in parts) or "\0" in v:
            raise ValueError(f"secret target {v!r} must be a file path without '.', '..' or '//'")
        return path

    @field_validator("env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", v):
            raise ValueError(f"secret env name {v!r} must match [A-Za-z_][A-Za-z0-9_]*")
        return v

    @property
    def path(self) -> str | None:
        """Where the file is mounted in the container (None: env only)."""
        if self.target is not None:
            return self.target
        return None if self.env is not None else f"{SECRETS_DIR}/{self.name}"


SecretUseField = Annotated[SecretUse, BeforeValidator(_secret_use)]


class Dependency(Model):
    """Start this app only once ``app`` (same namespace) is ``started`` (every desired
    replica placed on a node) or ``healthy`` (every desired replica ready, at least one).

    The gate holds an app's first replicas only (compose's ``depends_on``): once some are
    placed, the app is scaled, healed and rolled out whatever its dependencies do.
    """

    app: str
    condition: Literal["started", "healthy"] = "started"

    @field_validator("app")
    @classmethod
    def _app(cls, v: str) -> str:
        return check_dns_label(v, "depends_on app")


#: Docker's stop signals: a name (``SIGTERM``, ``SIGQUIT``, ``SIGRTMIN+3``) or a number.
STOP_SIGNAL = re.compile(r"^(SIG[A-Z0-9]+([+-][0-9]+)?|[1-9][0-9]?)$")

#: What containers are made from: changing one of these makes a new revision.
TEMPLATE_FIELDS = (
    "image",
    "command",
    "args",
    "env",
    "resources",
    "ports",
    "health",
    "termination",
    "labels",
    "volumes",
    "working_dir",
    "user",
    "security",
    "secrets",
    "hostname",
    "stop_signal",
)

#: Template fields added later: left out of the template hash while unset, so that the
#: revisions of specs written before them keep their hash.
OPTIONAL_TEMPLATE_FIELDS = ("hostname", "stop_signal")


class AppSpec(Model):
    """One app, as the user declares it."""

    name: str
    namespace: str = "default"
    image: str = Field(min_length=1)
    command: list[ProcessText] | None = None
    args: list[ProcessText] | None = None
    env: dict[str, EnvValue] = Field(default_factory=dict)
    replicas: int = Field(default=1, ge=0, le=MAX_COUNT)
    resources: Resources = Field(default_factory=Resources)
    ports: dict[str, int] = Field(default_factory=dict)
    health: Health = Field(default_factory=Health)
    route: Route | None = None
    tcp_routes: list[TcpRoute] = Field(
        default_factory=list,
        max_length=MAX_TCP_ROUTES,
        description="TCP listeners at the balancer's edge (L4, no Host header)",
    )
    placement: Placement = Field(default_factory=Placement)
    update: Update = Field(default_factory=Update)
    autoscale: Autoscale | None = None
    termination: Termination = Field(default_factory=Termination)
    labels: dict[str, str] = Field(default_factory=dict)
    volumes: list[Mount] = Field(default_factory=list)
    working_dir: str | None = None
    user: str | None = None
    security: Security = Field(default_factory=Security)
    secrets: list[SecretUseField] = Field(default_factory=list)
    hostname: str | None = Field(default=None, description="the containers' host name")
    stop_signal: str | None = Field(
        default=None, description="sent to stop a container (default the image's, SIGTERM)"
    )
    depends_on: list[Dependency] = Field(
        default_factory=list, description="apps of the namespace to wait for before starting"
    )

    @field_validator("hostname")
    @classmethod
    def _hostname(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^[A-Za-z0-9]([A-Za-z0-9.\-]{0,251}[A-Za-z0-9])?$", v):
            raise ValueError(f"hostname {v!r} is not a valid host name")
        return v

    @field_validator("stop_signal")
    @classmethod
    def _stop_signal(cls, v: str | None) -> str | None:
        if v is not None and not STOP_SIGNAL.match(v):
            raise ValueError(f"stop_signal {v!r} must be a signal name (SIGTERM) or number")
        return v

    network: Network = Field(default_factory=Network)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_dns_label(v, "name")

    @field_validator("namespace")
    @classmethod
    def _namespace(cls, v: str) -> str:
        return check_dns_label(v, "namespace")

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        if any(c.isspace() for c in v) or v != v.strip():
            raise ValueError(f"image {v!r} must not contain white space")
        return v

    @field_validator("ports")
    @classmethod
    def _ports(cls, v: dict[str, int]) -> dict[str, int]:
        for name, port in v.items():
            check_dns_label(name, "port name")
            if not 1 <= port <= 65535:
                raise ValueError(f"port {name!r}: {port} is not in 1-65535")
        return v

    @field_validator("env")
    @classmethod
    def _env_keys(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
                raise ValueError(f"env name {key!r} must match [A-Za-z_][A-Za-z0-9_]*")
        return v

    @model_validator(mode="after")
    def _references(self) -> AppSpec:
        def check_port(ref: str | int | None, where: str) -> None:
            if ref is None:
                if not self.ports:
                    raise ValueError(f"{where} needs a port, and the app declares no ports")
                return
            if isinstance(ref, str) and ref not in self.ports:
                known = ", ".join(sorted(self.ports)) or "none"
                raise ValueError(f"{where} refers to port {ref!r}, not among ports ({known})")

        if self.route is not None:
            check_port(self.route.port, "route")
            if self.network.internal:
                raise ValueError("an internal app (network.internal: true) cannot have a route")
        listens: set[int] = set()
        for i, tcp in enumerate(self.tcp_routes):
            check_port(tcp.port, f"tcp_routes[{i}]")
            if tcp.listen in listens:
                raise ValueError(f"tcp_routes[{i}]: listen port {tcp.listen} is listed twice")
            listens.add(tcp.listen)
            if self.network.internal:
                raise ValueError("an internal app (network.internal: true) cannot have tcp_routes")
        if self.autoscale is not None and self.autoscale.min == 0 and self.route is None:
            raise ValueError(
                "autoscale min 0 (scale to zero) needs a route: only the balancer can hold "
                "a request and wake the app"
            )
        for dependency in self.depends_on:
            if dependency.app == self.name:
                raise ValueError(f"app {self.name!r} cannot depend on itself")
        for which in ("readiness", "liveness"):
            probe: Probe | None = getattr(self.health, which)
            if probe is not None and probe.kind != "exec":
                check_port(probe.target_port, f"{which} probe")
        self._check_secrets()
        return self

    def _check_secrets(self) -> None:
        names: set[str] = set()
        paths: set[str] = set()
        envs: set[str] = set()
        mounts = {m.target for m in self.volumes}
        for use in self.secrets:
            if use.name in names:
                raise ValueError(f"secret {use.name!r} is listed more than once")
            names.add(use.name)
            path = use.path
            if path is not None:
                if path in paths or path in mounts:
                    raise ValueError(f"secret {use.name!r}: target {path} is used twice")
                paths.add(path)
            if use.env is not None:
                if use.env in envs or use.env in self.env:
                    raise ValueError(
                        f"secret {use.name!r}: env {use.env} is also set elsewhere in the spec"
                    )
                envs.add(use.env)

    @model_validator(mode="after")
    def _fits_the_wire(self, info: ValidationInfo) -> AppSpec:
        """What validates can be sent and stored: valid Unicode, and at most 1 MiB
        (known of a spec decoded from a msgpack payload: no need to encode it again)."""
        if from_wire(info):
            return self
        try:
            size = len(self.model_dump_json())
        except PydanticSerializationError:
            raise ValueError(
                f"{_bad_text(self.model_dump())}: text is not valid Unicode "
                "(a lone surrogate such as \\ud800)"
            ) from None
        if size > MAX_SPEC_BYTES:
            raise ValueError(
                f"the spec is {size} bytes as JSON, more than the maximum of 1 MiB; keep "
                "large data in an image or a volume"
            )
        return self

    @model_validator(mode="wrap")
    @classmethod
    def _memo(
        cls, data: Any, handler: ModelWrapValidatorHandler[AppSpec], info: ValidationInfo
    ) -> AppSpec:
        # Defined last, so it runs first, around every other validator of the model.
        if isinstance(data, AppSpec):
            # validated when it was made: taken as is (without this the after-validators
            # ran again for every model built around a spec, an assignment or app state)
            return data
        # a spec read off the bus is nearly always one validated a moment ago
        return memoized(cls, data, handler, info)

    # -- derived values ---------------------------------------------------------------

    @property
    def key(self) -> AppKey:
        return AppKey(self.namespace, self.name)

    def port_number(self, ref: str | int | None) -> int | None:
        """Resolve a port reference (name, number or None = first declared port)."""
        if ref is None:
            return next(iter(self.ports.values()), None)
        if isinstance(ref, int):
            return ref
        return self.ports.get(ref)

    def port_name(self, ref: str | int | None) -> str | None:
        """The declared name for a port reference, if it has one."""
        if ref is None:
            return next(iter(self.ports), None)
        if isinstance(ref, str):
            return ref
        return next((n for n, p in self.ports.items() if p == ref), None)

    def template_hash(self) -> str:
        """A digest of what the containers are made from: a change makes a new revision.

        Replica count, autoscaling, routing, placement and update policy are left out:
        changing them does not replace a running container.
        """
        fields = self.model_dump(mode="json", include=set(TEMPLATE_FIELDS))
        if not fields.get("secrets"):
            fields.pop("secrets", None)  # the hash of a spec without secrets is as before
        for name in OPTIONAL_TEMPLATE_FIELDS:
            if fields.get(name) is None:
                fields.pop(name, None)
        blob = json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def _bad_text(value: object, path: str = "") -> str:
    """The path of the first string in ``value`` that UTF-8 cannot encode."""
    items: list[tuple[str, object]] = []
    if isinstance(value, dict):
        items = [(f"{path}.{k}" if path else str(k), k) for k in value]
        items += [(f"{path}.{k}" if path else str(k), v) for k, v in value.items()]
    elif isinstance(value, list | tuple):
        items = [(f"{path}[{i}]", v) for i, v in enumerate(value)]
    elif isinstance(value, str):
        try:
            value.encode()
        except UnicodeEncodeError:
            return path or "a value"
        return ""
    for where, item in items:
        found = _bad_text(item, where)
        if found:
            return found
    return ""


# -- loading and error formatting -----------------------------------------------------


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def format_validation_error(
    err: ValidationError, where: str, document: Document | None = None
) -> list[str]:
    """One line per problem: ``where: field.path: message``, then ``(line N)`` when the
    document was read from a file."""
    lines = []
    for e in err.errors(include_url=False):
        msg = e["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            if msg.startswith(prefix):
                msg = msg[len(prefix) :]
        if e["type"] == "extra_forbidden":
            msg = "unknown field"
        elif e["type"] == "missing":
            msg = "required field is missing"
        loc = _loc(tuple(e["loc"]))
        line = f"{where}: {loc}: {msg}" if loc else f"{where}: {msg}"
        at = document.line_of(tuple(e["loc"])) if document is not None else None
        lines.append(f"{line} (line {at})" if at is not None else line)
    return lines


def _describe(doc: Any, index: int, source: str) -> str:
    name = doc.get("name") if isinstance(doc, dict) else None
    label = f"{source} document {index + 1}" if source else f"app {index + 1}"
    return f"{label} ({shown(name)[1:-1]})" if isinstance(name, str) else label


def validate_apps(
    docs: list[Any], source: str = "", documents: list[Document] | None = None
) -> list[AppSpec]:
    """Validate raw documents into specs; raise ``SpecError`` listing every problem.

    Only ``SpecError`` leaves, whatever ``docs`` hold. Duplicate (namespace, name) pairs
    in one batch are an error too. ``documents`` (from ``read_documents``) add the line of
    each problem.
    """
    specs: list[AppSpec] = []
    errors: list[str] = []
    for i, doc in enumerate(docs):
        where = _describe(doc, i, source)
        document = documents[i] if documents is not None and i < len(documents) else None
        if not isinstance(doc, dict):
            errors.append(f"{where}: expected a mapping, got {type(doc).__name__}")
            continue
        try:
            specs.append(AppSpec.model_validate(doc))
        except ValidationError as err:
            errors.extend(format_validation_error(err, where, document))
        except RecursionError:
            errors.append(f"{where}: nested too deeply")
    seen: set[AppKey] = set()
    for spec in specs:
        if spec.key in seen:
            errors.append(f"app {spec.key} is declared more than once")
        seen.add(spec.key)
    if not docs:
        errors.append(f"{source or 'input'}: no app found")
    if errors:
        raise SpecError(errors)
    return specs


def read_apps(text: str, source: str = "") -> list[Document]:
    """The apps of a spec file (``core.spec_yaml``): YAML 1.2 typing, the text kept where
    the spec wants text, duplicate keys refused, errors naming the file and line."""
    return read_documents(text, source, AppSpec)


def parse_documents(text: str, source: str = "") -> list[Any]:
    """YAML (several ``---`` documents) or JSON (one app, a list, or ``{"apps": [...]}``)."""
    return [document.data for document in read_apps(text, source)]


def load_specs(text: str, source: str = "") -> list[AppSpec]:
    documents = read_apps(text, source)
    return validate_apps([d.data for d in documents], source, documents)
