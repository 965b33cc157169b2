"""Compose files as Shoal apps: the Compose Specification translated to ``AppSpec`` documents.

A file is a compose file when its top level is a mapping with ``services:``. ``translate``
turns one into a namespace, one app document per service (validated by ``core.spec``
afterwards) and the images to build. Pure: files the document names (``env_file``) are read
through the ``read_text`` callable, the environment is passed in.

Every key is mapped, refused with an error naming the key and the service, or (with
``allow_unsupported``) ignored with a warning saying so: nothing is dropped silently. The
table of what maps to what is ``SERVICE_KEYS`` and the README's "Compose files" section.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from core.compose_env import InterpolationError, interpolate, parse_env_file
from core.errors import SpecError
from core.spec import DNS_LABEL
from core.spec_yaml import _check_keys, text_document, yaml_loader

#: Keys of the specification Shoal means to map and does not yet: "not supported yet".
NOT_YET: dict[str, str] = {}

#: The service keys Shoal maps, and what each becomes (the README's table).
SERVICE_KEYS = {
    "image": "image (with build: the repository of the built image)",
    "build": "an image built on the local engine, tagged by content, pushed with --registry",
    "command": "args (the image's CMD)",
    "entrypoint": "command (the image's ENTRYPOINT)",
    "environment": "env",
    "env_file": "env (environment wins)",
    "ports": "ports + route (the first HTTP port, by Host) + tcp_routes (every other "
    "published port: a TCP listener of the balancer)",
    "expose": "ports (reachable by name from the namespace's containers, not routed)",
    "networks": "the namespace's network (every service of the file shares one); aliases: "
    "network.aliases",
    "container_name": "network.aliases (one more name; one replica only)",
    "secrets": "secrets (files in /run/secrets); top-level file:/environment: created on apply",
    "configs": "secrets, mounted at /<name> or target (created on apply like secrets)",
    "healthcheck": "health.readiness: an exec probe",
    "depends_on": "depends_on: started or healthy",
    "deploy": "replicas, resources, update, placement, labels",
    "labels": "labels",
    "user": "user",
    "working_dir": "working_dir",
    "volumes": "volumes: named volumes and binds",
    "restart": "always / unless-stopped: Shoal's own restarts",
    "hostname": "hostname",
    "stop_signal": "stop_signal",
    "stop_grace_period": "termination.grace",
    "privileged": "security.privileged (admission decides)",
    "cap_add": "security.cap_add (admission decides)",
    "cap_drop": "security.cap_drop",
    "read_only": "security.read_only_rootfs",
    "scale": "replicas",
    "cpus": "resources.cpu_limit",
    "mem_limit": "resources.memory_limit",
    "mem_reservation": "resources.memory",
}

RUN_TO_COMPLETION = (
    "Shoal keeps every replica running and restarts what exits (restart: always); "
    "containers that run to completion are not supported"
)

_TOP_KEYS = {"services", "name", "version", "volumes", "networks", "secrets", "configs"}
_COMPOSE_DEFAULTS = {"interval": "30s", "timeout": "30s", "retries": 3}


@dataclass(frozen=True, slots=True)
class Build:
    """An image to build for one service (``build:``), on the local engine."""

    service: str
    app: str
    context: str
    dockerfile: str = "Dockerfile"
    target: str | None = None
    args: tuple[tuple[str, str], ...] = ()
    #: the repository to tag the image with: the service's ``image`` without its tag, or
    #: ``<namespace>-<app>`` (compose's default)
    repository: str = ""


@dataclass(frozen=True, slots=True)
class SecretSource:
    """A secret (or config) of the file that ``apply`` creates in the namespace, from a
    file (``file:``, an absolute path), a variable's value (``environment:``) or the text
    given (``content:``). ``external: true`` ones are not listed: they must exist."""

    name: str
    file: str | None = None
    value: str | None = None


@dataclass
class Compose:
    """A compose file translated: the namespace, one app document per service."""

    namespace: str
    apps: list[dict[str, Any]] = field(default_factory=list)
    #: secrets and configs to create before the apps are applied
    secrets: list[SecretSource] = field(default_factory=list)
    #: app name -> its build (its ``image`` is set once the tag is known: ``with_images``)
    builds: dict[str, Build] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def with_images(self, tags: Mapping[str, str]) -> list[dict[str, Any]]:
        """The app documents, each built image named by its tag (app name -> tag)."""
        return [
            {**doc, "image": tags[doc["name"]]} if doc["name"] in tags else doc for doc in self.apps
        ]


# -- reading ------------------------------------------------------------------------------


def read_compose(text: str, source: str) -> tuple[Any, Any]:
    """The document (YAML 1.2 typing, duplicate keys refused) and the same document with
    every scalar as the text written (to keep ``VERSION: 1.10`` as ``1.10``), from one
    parse of ``text``."""
    where = source or "input"
    with yaml_loader(text, where, "YAML") as loader:
        node = loader.get_single_node()
        if node is None:
            return None, None
        problems: list[str] = []
        _check_keys(node, where, problems, set())
        if problems:
            raise SpecError(problems)
        raw = text_document(node)  # first: the typed construction merges << into the node
        typed = loader.construct_document(node)
    return typed, raw


def is_compose(data: Any) -> bool:
    """The Compose Specification's mark: a top-level mapping with ``services:``."""
    return isinstance(data, dict) and "services" in data


# -- names ---------------------------------------------------------------------------------


def project_name(name: str) -> str:
    """Compose's normalisation (lowercase; letters, digits, ``-`` and ``_``), then a DNS
    label for Shoal (``_`` becomes ``-``)."""
    text = re.sub(r"[^a-z0-9_-]", "", name.lower()).replace("_", "-").strip("-")
    return text[:63].rstrip("-")


def namespace_of(
    data: Mapping[str, Any], folder: str, env: Mapping[str, str], override: str | None
) -> str:
    """Compose's order: ``-n`` (its ``-p``), ``COMPOSE_PROJECT_NAME``, the top-level
    ``name:``, then the folder of the file."""
    for candidate in (override, env.get("COMPOSE_PROJECT_NAME"), data.get("name"), folder):
        if isinstance(candidate, str) and candidate:
            name = project_name(candidate)
            if DNS_LABEL.match(name):
                return name
            raise SpecError(
                [f"project name {candidate!r} gives no valid namespace (a DNS label); use -n"]
            )
    raise SpecError(["the compose file has no project name: use -n or name:"])


def app_name(service: str) -> str:
    return service.lower().replace("_", "-").replace(".", "-")


# -- translation -------------------------------------------------------------------------


@dataclass
class _Context:
    namespace: str
    folder: str
    env: Mapping[str, str]
    read_text: Callable[[str], str | None]
    allow_unsupported: bool
    raw: Any
    volumes: dict[str, str]
    errors: list[str] = field(default_factory=list)
    #: top-level networks declared (name -> its definition)
    networks: dict[str, Any] = field(default_factory=dict)
    #: top-level secrets and configs: key -> the Shoal secret name
    secret_names: dict[str, dict[str, str]] = field(default_factory=dict)
    sources: list[SecretSource] = field(default_factory=list)
    #: service -> the networks it is on
    service_networks: dict[str, set[str]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def unsupported(self, service: str, key: str, why: str = "", yet: bool = False) -> None:
        """``service`` "" is the top level of the file. ``yet``: work in progress elsewhere."""
        where = f"service {service}" if service else "top level"
        if yet:
            text = f"{where}: {key} is not supported yet ({why})"
        else:
            text = f"{where}: {key} is not supported" + (f": {why}" if why else "")
        if self.allow_unsupported:
            self.warnings.append(text + " (ignored, --allow-unsupported)")
        else:
            self.errors.append(text)

    def not_yet(self, service: str, key: str) -> None:
        self.unsupported(service, key, NOT_YET[key.split(".")[0]], yet=True)

    def refuse(self, service: str, key: str, why: str) -> None:
        self.errors.append(f"service {service}: {key}: {why}")

    def text(self, value: Any, path: tuple[str | int, ...]) -> str:
        """A scalar as text: as written in the file when YAML typed it."""
        if isinstance(value, str):
            return value
        raw: Any = self.raw
        for part in path:
            found = (isinstance(raw, dict) and part in raw) or (
                isinstance(raw, list) and isinstance(part, int) and part < len(raw)
            )
            if found:
                raw = raw[part]
            else:
                raw = None
                break
        if isinstance(raw, str) and value is not None:
            return raw
        if isinstance(value, bool):
            return "true" if value else "false"
        return "" if value is None else str(value)

    def path(self, relative: str) -> str:
        """A path of the file, relative to the compose file's folder, made absolute."""
        if relative.startswith("~"):
            home = self.env.get("HOME", "")
            relative = home + relative[1:]
        if relative.startswith("/"):
            return str(PurePosixPath(relative))
        return _normalise(f"{self.folder}/{relative}")


def _normalise(path: str) -> str:
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
            continue
        parts.append(part)
    return "/" + "/".join(parts)


def translate(
    data: Any,
    *,
    folder: str,
    env: Mapping[str, str],
    read_text: Callable[[str], str | None],
    namespace: str | None = None,
    allow_unsupported: bool = False,
    raw: Any = None,
    source: str = "compose file",
) -> Compose:
    """The compose document ``data`` (``read_compose``) as Shoal app documents.

    ``folder``: the absolute folder of the file (relative paths, the default project name);
    ``env``: the variables (the process environment over the ``.env`` file);
    ``read_text``: reads a file by absolute path (None: it does not exist).
    Raises ``SpecError`` with every problem found.
    """
    if not is_compose(data):
        raise SpecError([f"{source}: not a compose file (no top-level services:)"])
    interpolation_warnings: list[str] = []
    try:
        data = _interpolate(data, env, interpolation_warnings, ())
    except InterpolationError as err:
        raise SpecError([f"{source}: {err}"]) from None
    ns = namespace_of(data, PurePosixPath(folder).name, env, namespace)
    services = data.get("services")
    if not isinstance(services, dict) or not services:
        raise SpecError([f"{source}: services: must map service names to services"])
    ctx = _Context(ns, folder, env, read_text, allow_unsupported, raw, {})
    ctx.warnings.extend(
        f"variable {name} is not set: an empty string is used" for name in interpolation_warnings
    )
    _top_level(data, ctx)
    out = Compose(namespace=ns)
    names: dict[str, str] = {}
    for service in map(str, services):
        name = app_name(service)
        if not DNS_LABEL.match(name):
            ctx.errors.append(
                f"service {service}: its name gives no valid app name (a DNS label: "
                "lowercase letters, digits, '-')"
            )
            continue
        if name in names.values():
            ctx.errors.append(f"service {service}: its app name {name} is taken by another service")
            continue
        names[service] = name
    for service, body in services.items():
        service = str(service)
        if service not in names:
            continue
        if not isinstance(body, dict):
            body = {} if body is None else body
            if not isinstance(body, dict):
                ctx.errors.append(f"service {service}: must be a mapping")
                continue
        doc, build = _service(service, names, body, ctx)
        out.apps.append(doc)
        if build is not None:
            out.builds[names[service]] = build
    _check_routes(out.apps, ctx)
    _check_networks(ctx)
    out.secrets = list(ctx.sources)
    _check_cycles(out.apps, ctx)
    _check_healthy_dependencies(out.apps, ctx)
    if ctx.errors:
        raise SpecError([f"{source}: {e}" for e in ctx.errors])
    out.warnings = ctx.warnings
    return out


def _interpolate(
    value: Any, env: Mapping[str, str], warnings: list[str], path: tuple[Any, ...]
) -> Any:
    if isinstance(value, str):
        try:
            return interpolate(value, env, warnings)
        except InterpolationError as err:
            where = ".".join(str(p) for p in path)
            raise InterpolationError(f"{where}: {err}") from None
    if isinstance(value, dict):
        return {k: _interpolate(v, env, warnings, (*path, k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env, warnings, (*path, i)) for i, v in enumerate(value)]
    return value


def _top_level(data: Mapping[str, Any], ctx: _Context) -> None:
    for key in data:
        key = str(key)
        if key in _TOP_KEYS or key.startswith("x-"):
            continue
        if key in NOT_YET:
            if data[key]:
                ctx.not_yet("", key)
            continue
        ctx.unsupported("", key)
    _top_networks(data.get("networks"), ctx)
    for kind in ("secrets", "configs"):
        _top_secrets(kind, data.get(kind), ctx)
    volumes = data.get("volumes") or {}
    if not isinstance(volumes, dict):
        ctx.errors.append("volumes: must map volume names to volumes")
        return
    for name, body in volumes.items():
        body = body or {}
        where = f"volumes.{name}"
        if not isinstance(body, dict):
            ctx.errors.append(f"{where}: must be a mapping")
            continue
        # the agent scopes every named volume to its namespace (<prefix>_<namespace>_<name>)
        ctx.volumes[str(name)] = str(body.get("name") or name)
        for key in body:
            if key in ("name", "external") or str(key).startswith("x-"):
                continue
            if key == "driver" and body[key] == "local":
                continue
            ctx.unsupported("", f"{where}.{key}", "volumes use the node's local driver")


def _service(
    service: str, names: Mapping[str, str], body: Mapping[str, Any], ctx: _Context
) -> tuple[dict[str, Any], Build | None]:
    name = names[service]
    doc: dict[str, Any] = {"name": name, "namespace": ctx.namespace}
    labels = {"com.docker.compose.project": ctx.namespace, "com.docker.compose.service": service}
    build: Build | None = None
    at = ("services", service)
    for key, value in body.items():
        key = str(key)
        if key.startswith("x-"):
            continue
        if key in NOT_YET:
            ctx.not_yet(service, key)
        elif key == "image":
            doc["image"] = ctx.text(value, (*at, key))
        elif key == "build":
            build = _build(service, name, value, body.get("image"), ctx)
        elif key == "command":
            doc["args"] = _command(service, key, value, ctx)
        elif key == "entrypoint":
            doc["command"] = _command(service, key, value, ctx)
        elif key in ("environment", "env_file"):
            pass  # below: env_file first, environment over it
        elif key == "ports":
            _ports(service, value, doc, ctx, body.get("x-shoal-host"))
        elif key in ("expose", "container_name"):
            pass  # below: once ports and replicas are known
        elif key == "networks":
            _service_networks(service, value, doc, ctx)
        elif key in ("secrets", "configs"):
            doc.setdefault("secrets", []).extend(_secret_uses(service, key, value, ctx))
        elif key == "healthcheck":
            probe = _healthcheck(service, value, ctx)
            if probe is not None:
                doc["health"] = {"readiness": probe}
        elif key == "depends_on":
            doc["depends_on"] = _depends_on(service, names, value, ctx)
        elif key == "deploy":
            _deploy(service, value, doc, labels, ctx)
        elif key == "labels":
            labels.update(_pairs(service, key, value, ctx, (*at, key)))
        elif key in ("user", "working_dir", "hostname", "stop_signal"):
            doc[key] = ctx.text(value, (*at, key))
        elif key == "stop_grace_period":
            doc["termination"] = {"grace": value}
        elif key == "volumes":
            doc["volumes"] = _volumes(service, value, ctx)
        elif key == "restart":
            policy = ctx.text(value, (*at, key))
            if policy not in ("always", "unless-stopped"):
                ctx.refuse(service, f"restart: {policy}", RUN_TO_COMPLETION)
        elif key in ("privileged", "read_only"):
            doc.setdefault("security", {})["read_only_rootfs" if key == "read_only" else key] = (
                value
            )
        elif key in ("cap_add", "cap_drop"):
            doc.setdefault("security", {})[key] = value
        elif key == "scale":
            doc["replicas"] = value
        elif key in ("cpus", "mem_limit", "mem_reservation"):
            _resource(service, key, value, doc, ctx)
        else:
            ctx.unsupported(service, key)
    if "resources" in doc:
        _settle_resources(doc["resources"])
    if "expose" in body:
        _expose(service, body["expose"], doc, ctx)
    if "container_name" in body:
        _container_name(service, body["container_name"], doc, ctx)
    ctx.service_networks.setdefault(service, {"default"})
    env = _environment(service, body, ctx)
    if env:
        doc["env"] = env
    doc["labels"] = labels
    if "image" not in doc and build is None:
        ctx.errors.append(f"service {service}: needs image or build")
    elif build is not None:
        doc.setdefault("image", build.repository)  # replaced by the built tag
    return doc, build


def _command(service: str, key: str, value: Any, ctx: _Context) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            return shlex.split(value)
        except ValueError as err:
            ctx.refuse(service, key, f"cannot split {value!r} into words: {err}")
            return None
    if isinstance(value, list):
        return [ctx.text(v, ("services", service, key, i)) for i, v in enumerate(value)]
    ctx.refuse(service, key, "must be a string or a list of strings")
    return None


def _pairs(
    service: str, key: str, value: Any, ctx: _Context, path: tuple[str | int, ...]
) -> dict[str, str]:
    """``[KEY=VAL, ...]`` or ``{KEY: VAL}`` as text pairs (a value-less entry is left out:
    for labels it is an empty string)."""
    out: dict[str, str] = {}
    if isinstance(value, dict):
        for k, v in value.items():
            out[str(k)] = ctx.text(v, (*path, k))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            text = ctx.text(item, (*path, i))
            k, _, v = text.partition("=")
            out[k] = v
    elif value is not None:
        ctx.refuse(service, key, "must be a list of KEY=VALUE or a mapping")
    return out


def _environment(service: str, body: Mapping[str, Any], ctx: _Context) -> dict[str, str]:
    env: dict[str, str] = {}
    files = body.get("env_file")
    if isinstance(files, str | dict):
        files = [files]
    for item in files or []:
        required = True
        if isinstance(item, dict):
            required = item.get("required", True) is not False
            extra = set(item) - {"path", "required"}
            for key in sorted(extra):
                ctx.unsupported(service, f"env_file.{key}")
            item = item.get("path")
        if not isinstance(item, str):
            ctx.refuse(service, "env_file", "each entry must be a path or {path, required}")
            continue
        path = ctx.path(item)
        text = ctx.read_text(path)
        if text is None:
            if required:
                ctx.refuse(service, "env_file", f"{path} does not exist")
            continue
        try:
            env.update(parse_env_file(text, path, ctx.env))
        except ValueError as err:
            ctx.refuse(service, "env_file", str(err))
    value = body.get("environment")
    at: tuple[str | int, ...] = ("services", service, "environment")
    if isinstance(value, dict):
        for k, v in value.items():
            if v is None:  # taken from the environment, left out when unset there
                if str(k) in ctx.env:
                    env[str(k)] = ctx.env[str(k)]
            else:
                env[str(k)] = ctx.text(v, (*at, k))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            text = ctx.text(item, (*at, i))
            k, sep, v = text.partition("=")
            if sep:
                env[k] = v
            elif k in ctx.env:
                env[k] = ctx.env[k]
    elif value is not None:
        ctx.refuse(service, "environment", "must be a list of KEY=VALUE or a mapping")
    return env


def _build(service: str, app: str, value: Any, image: Any, ctx: _Context) -> Build | None:
    if isinstance(value, str):
        value = {"context": value}
    if not isinstance(value, dict):
        ctx.refuse(service, "build", "must be a context path or a mapping")
        return None
    args: dict[str, str] = {}
    for key in value:
        if key not in ("context", "dockerfile", "target", "args") and not str(key).startswith("x-"):
            ctx.unsupported(service, f"build.{key}")
    raw_args = value.get("args")
    if raw_args is not None:
        path: tuple[str | int, ...] = ("services", service, "build", "args")
        if isinstance(raw_args, list):
            for i, item in enumerate(raw_args):
                k, sep, v = ctx.text(item, (*path, i)).partition("=")
                if sep:
                    args[k] = v
                elif k in ctx.env:
                    args[k] = ctx.env[k]
        elif isinstance(raw_args, dict):
            for k, v in raw_args.items():
                if v is None:
                    if str(k) in ctx.env:
                        args[str(k)] = ctx.env[str(k)]
                else:
                    args[str(k)] = ctx.text(v, (*path, k))
        else:
            ctx.refuse(service, "build.args", "must be a list of KEY=VALUE or a mapping")
    context = str(value.get("context") or ".")
    if re.match(r"^[a-z][a-z0-9+.-]*://", context) or context.startswith("git@"):
        ctx.unsupported(service, "build.context", f"{context} is remote: give a local folder")
    if isinstance(image, str) and image:
        repository = image.rsplit("@", 1)[0]
        last = repository.rsplit("/", 1)[-1]
        if ":" in last:
            repository = repository[: repository.rfind(":")]
    else:
        repository = f"{ctx.namespace}-{app}"
    target = value.get("target")
    return Build(
        service=service,
        app=app,
        context=ctx.path(context),
        dockerfile=str(value.get("dockerfile") or "Dockerfile"),
        target=str(target) if target is not None else None,
        args=tuple(sorted(args.items())),
        repository=repository,
    )


_PORT = re.compile(
    r"^(?:(?:(?P<ip>\[[0-9a-fA-F:]+\]|[0-9.]+):)?(?P<published>[0-9]+(?:-[0-9]+)?)?:)?"
    r"(?P<target>[0-9]+(?:-[0-9]+)?)(?:/(?P<protocol>[a-z]+))?$"
)


#: Container ports of well-known protocols that are not HTTP: a short-syntax port mapping
#: (``"5432:5432"``) of one of these is a TCP port, any other an HTTP one (the long syntax
#: says it with ``app_protocol``).
TCP_PORTS = {
    21: "ftp",
    22: "ssh",
    25: "smtp",
    53: "dns",
    110: "pop3",
    143: "imap",
    389: "ldap",
    465: "smtps",
    587: "submission",
    636: "ldaps",
    993: "imaps",
    995: "pop3s",
    1433: "sqlserver",
    1521: "oracle",
    1883: "mqtt",
    2181: "zookeeper",
    2379: "etcd",
    3306: "mysql",
    4222: "nats",
    5432: "postgresql",
    5672: "amqp",
    6379: "redis",
    8883: "mqtts",
    9042: "cassandra",
    9092: "kafka",
    11211: "memcached",
    26257: "cockroachdb",
    27017: "mongodb",
}


@dataclass(frozen=True, slots=True)
class _Port:
    target: int
    published: int | None
    http: bool


def _port_entry(service: str, i: int, item: Any, ctx: _Context) -> _Port | None:
    if isinstance(item, dict):
        for key in item:
            if key not in (
                "target",
                "published",
                "protocol",
                "host_ip",
                "app_protocol",
                "mode",
                "name",
            ):
                ctx.unsupported(service, f"ports[{i}].{key}")
        protocol = str(item.get("protocol") or "tcp")
        app_protocol = item.get("app_protocol")
        target = item.get("target")
        published = item.get("published")
        if item.get("mode", "ingress") not in ("ingress", "host"):
            ctx.refuse(service, f"ports[{i}].mode", "must be ingress or host")
    else:
        text = ctx.text(item, ("services", service, "ports", i))
        match = _PORT.match(text)
        if match is None:
            ctx.refuse(service, f"ports[{i}]", f"{text!r} is not a port mapping")
            return None
        protocol = match["protocol"] or "tcp"
        app_protocol = None
        target = match["target"]
        published = match["published"]
        if "-" in target or "-" in (published or ""):
            ctx.unsupported(service, f"ports[{i}]", f"{text!r}: port ranges")
            return None
    if protocol != "tcp":
        ctx.unsupported(service, f"ports[{i}]", f"protocol {protocol}: only TCP")
        return None
    try:
        number = int(str(target))
        listen = int(str(published)) if published not in (None, "") else None
    except ValueError:
        ctx.refuse(service, f"ports[{i}]", f"{target!r}:{published!r} is not a port number")
        return None
    if not 1 <= number <= 65535 or (listen is not None and not 0 <= listen <= 65535):
        ctx.refuse(service, f"ports[{i}]", "a port number is 1-65535")
        return None
    if app_protocol is None:
        http = number not in TCP_PORTS
    else:
        http = str(app_protocol) in ("http", "https")
    return _Port(number, listen or None, http)


def _ports(service: str, value: Any, doc: dict[str, Any], ctx: _Context, host: Any = None) -> None:
    """The first HTTP port becomes the app's HTTP route (the balancer serves it on its own
    listener by Host: its published host port is not bound); ``host``: the service's
    ``x-shoal-host``, the Host header the route answers (none: every host). Every other
    port is declared (``tcp-<port>``, reachable by name) and, when published, becomes a
    TCP route: the balancer listens on the published port and relays to it."""
    if not isinstance(value, list):
        ctx.refuse(service, "ports", "must be a list")
        return
    entries = [e for i, item in enumerate(value) if (e := _port_entry(service, i, item, ctx))]
    http = next((e for e in entries if e.http), None)
    ports: dict[str, int] = {}
    if http is not None:
        ports["http"] = http.target
        route: dict[str, Any] = {"port": "http"}
        if isinstance(host, str) and host:
            route["host"] = host
        doc["route"] = route
    tcp_routes: list[dict[str, Any]] = []
    listens: set[int] = set()
    for entry in entries:
        name = "http" if http is not None and entry.target == http.target else None
        if name is None:
            name = f"tcp-{entry.target}"
            ports.setdefault(name, entry.target)
        if entry is http or entry.published is None:
            continue
        if entry.published in listens:
            ctx.refuse(service, "ports", f"host port {entry.published} is published twice")
            continue
        listens.add(entry.published)
        tcp_routes.append({"listen": entry.published, "port": name})
    if ports:
        doc["ports"] = {**doc.get("ports", {}), **ports}
    if tcp_routes:
        doc["tcp_routes"] = tcp_routes


def _expose(service: str, value: Any, doc: dict[str, Any], ctx: _Context) -> None:
    """Ports reachable from other containers only: declared, never routed."""
    if not isinstance(value, list):
        ctx.refuse(service, "expose", "must be a list")
        return
    ports: dict[str, int] = doc.setdefault("ports", {})
    for i, item in enumerate(value):
        text = ctx.text(item, ("services", service, "expose", i))
        number_text, _, protocol = text.partition("/")
        if protocol not in ("", "tcp"):
            ctx.unsupported(service, f"expose[{i}]", f"protocol {protocol}: only TCP")
            continue
        if not number_text.isdigit() or not 1 <= int(number_text) <= 65535:
            ctx.refuse(service, f"expose[{i}]", f"{text!r} is not a port number (ranges: no)")
            continue
        number = int(number_text)
        if number not in ports.values():
            ports[f"tcp-{number}"] = number
    if not ports:
        del doc["ports"]


def _check_routes(apps: list[dict[str, Any]], ctx: _Context) -> None:
    """Apps with a route and no ``x-shoal-host``: the balancer's catch-all; at most one."""
    hostless = [doc["name"] for doc in apps if "route" in doc and "host" not in doc["route"]]
    if len(hostless) > 1:
        ctx.errors.append(
            f"services {', '.join(hostless)} publish HTTP ports without a host name: the "
            "balancer can route only one of them to every host; give the others "
            "x-shoal-host: <name> (the Host header they answer)"
        )


def _healthcheck(service: str, value: Any, ctx: _Context) -> dict[str, Any] | None:
    if not isinstance(value, dict):
        ctx.refuse(service, "healthcheck", "must be a mapping")
        return None
    for key in value:
        if key not in ("test", "interval", "timeout", "retries", "start_period", "disable"):
            ctx.unsupported(service, f"healthcheck.{key}")
    if value.get("disable") is True:
        return None
    test = value.get("test")
    path = ("services", service, "healthcheck", "test")
    if isinstance(test, str):
        command = ["/bin/sh", "-c", test]
    elif isinstance(test, list) and test:
        words = [ctx.text(w, (*path, i)) for i, w in enumerate(test)]
        if words[0] == "NONE":
            return None
        if words[0] == "CMD" and len(words) > 1:
            command = words[1:]
        elif words[0] == "CMD-SHELL" and len(words) == 2:
            command = ["/bin/sh", "-c", words[1]]
        else:
            ctx.refuse(
                service,
                "healthcheck.test",
                "must be a string, [CMD, ...], [CMD-SHELL, cmd] or [NONE]",
            )
            return None
    else:
        ctx.refuse(service, "healthcheck.test", "is missing")
        return None
    probe: dict[str, Any] = {
        "exec": command,
        "interval": value.get("interval", _COMPOSE_DEFAULTS["interval"]),
        "timeout": value.get("timeout", _COMPOSE_DEFAULTS["timeout"]),
        "failures": value.get("retries", _COMPOSE_DEFAULTS["retries"]),
    }
    if "start_period" in value:
        probe["initial_delay"] = value["start_period"]
    return probe


_CONDITIONS = {"service_started": "started", "service_healthy": "healthy"}


def _depends_on(
    service: str, names: Mapping[str, str], value: Any, ctx: _Context
) -> list[dict[str, str]]:
    items: list[tuple[str, str]] = []
    if isinstance(value, list):
        items = [(str(v), "service_started") for v in value]
    elif isinstance(value, dict):
        for dependency, spec in value.items():
            spec = spec or {}
            if not isinstance(spec, dict):
                ctx.refuse(service, f"depends_on.{dependency}", "must be a mapping")
                continue
            for key in spec:
                if key == "required" and spec[key] is True:
                    continue
                if key == "restart" and spec[key] is False:
                    continue
                if key != "condition":
                    ctx.unsupported(service, f"depends_on.{dependency}.{key}")
            items.append((str(dependency), str(spec.get("condition", "service_started"))))
    else:
        ctx.refuse(service, "depends_on", "must be a list of services or a mapping")
    out = []
    for dependency, condition in items:
        if dependency not in names:
            ctx.refuse(service, f"depends_on.{dependency}", "no such service in the file")
            continue
        if condition == "service_completed_successfully":
            ctx.refuse(
                service, f"depends_on.{dependency}.condition: {condition}", RUN_TO_COMPLETION
            )
            continue
        if condition not in _CONDITIONS:
            ctx.refuse(
                service,
                f"depends_on.{dependency}.condition",
                f"{condition!r} must be service_started, service_healthy or "
                "service_completed_successfully",
            )
            continue
        out.append({"app": names[dependency], "condition": _CONDITIONS[condition]})
    return out


def _check_healthy_dependencies(apps: list[dict[str, Any]], ctx: _Context) -> None:
    """Shoal's health monitor finds a replica ready at an endpoint (a published port):
    ``service_healthy`` on a service with no port would wait for ever."""
    by_name = {doc["name"]: doc for doc in apps}
    for doc in apps:
        for dependency in doc.get("depends_on", []):
            target = by_name.get(dependency["app"])
            if (
                dependency["condition"] == "healthy"
                and target is not None
                and not target.get("ports")
            ):
                ctx.errors.append(
                    f"service {doc['labels']['com.docker.compose.service']}: depends_on."
                    f"{target['labels']['com.docker.compose.service']}: service_healthy needs "
                    "that service to publish a port (ports:): Shoal finds replicas ready at "
                    "their endpoint"
                )


def _check_cycles(apps: list[dict[str, Any]], ctx: _Context) -> None:
    edges = {doc["name"]: [d["app"] for d in doc.get("depends_on", [])] for doc in apps}
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            cycle = [*trail[trail.index(node) :], node]
            ctx.errors.append("depends_on has a cycle: " + " -> ".join(cycle))
            return
        state[node] = 1
        for nxt in edges.get(node, []):
            visit(nxt, [*trail, node])
        state[node] = 2

    for node in edges:
        if state.get(node) is None:
            visit(node, [])


# -- deploy -----------------------------------------------------------------------------------

_MEMORY = re.compile(r"^([0-9]+(?:\.[0-9]+)?)\s*([kmgtp]?)(?:i?b)?$", re.IGNORECASE)
_POWERS = {"": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5}


def compose_memory(value: Any) -> int:
    """Compose's byte sizes (Docker's: ``512m``, ``1.5G``, ``2gb``, powers of 1024)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    match = _MEMORY.match(str(value).strip())
    if match is None:
        raise ValueError(f"{value!r} is not a byte size (e.g. 512m, 1g)")
    return int(float(match[1]) * 1024 ** _POWERS[match[2].lower()])


def _resource(service: str, key: str, value: Any, doc: dict[str, Any], ctx: _Context) -> None:
    resources = doc.setdefault("resources", {})
    try:
        if key == "cpus":
            resources["cpu_limit"] = float(value)
        elif key == "mem_limit":
            resources["memory_limit"] = compose_memory(value)
        else:
            resources["memory"] = compose_memory(value)
    except (TypeError, ValueError) as err:
        ctx.refuse(service, key, str(err))


def _settle_resources(resources: dict[str, Any]) -> None:
    """Compose gives limits and reservations independently; Shoal's memory request is
    also the hard limit and a CPU limit cannot be below the request: a limit alone sets
    the request too (memory) or caps it (cpu)."""
    limit = resources.get("memory_limit")
    if limit is not None and limit <= resources.get("memory", limit):
        resources["memory"] = resources.pop("memory_limit")
    if "cpu_limit" in resources and "cpu" not in resources:
        resources["cpu"] = min(0.1, resources["cpu_limit"])


def _deploy(
    service: str, value: Any, doc: dict[str, Any], labels: dict[str, str], ctx: _Context
) -> None:
    if not isinstance(value, dict):
        ctx.refuse(service, "deploy", "must be a mapping")
        return
    at: tuple[str | int, ...] = ("services", service, "deploy")
    for key, body in value.items():
        key = str(key)
        if key == "replicas":
            doc["replicas"] = body
        elif key == "mode":
            if body != "replicated":
                why = RUN_TO_COMPLETION if "job" in str(body) else "one replica per node"
                ctx.refuse(service, f"deploy.mode: {body}", f"only replicated ({why})")
        elif key == "labels":
            labels.update(_pairs(service, "deploy.labels", body, ctx, (*at, key)))
        elif key == "resources":
            _deploy_resources(service, body, doc, ctx)
        elif key == "update_config":
            _update_config(service, body, doc, ctx)
        elif key == "restart_policy":
            _restart_policy(service, body, ctx)
        elif key == "placement":
            _placement(service, body, doc, ctx)
        elif not key.startswith("x-"):
            ctx.unsupported(service, f"deploy.{key}")


def _deploy_resources(service: str, value: Any, doc: dict[str, Any], ctx: _Context) -> None:
    if not isinstance(value, dict):
        ctx.refuse(service, "deploy.resources", "must be a mapping")
        return
    resources = doc.setdefault("resources", {})
    for part, fields in (
        ("limits", ("cpu_limit", "memory_limit")),
        ("reservations", ("cpu", "memory")),
    ):
        body = value.get(part) or {}
        if not isinstance(body, dict):
            ctx.refuse(service, f"deploy.resources.{part}", "must be a mapping")
            continue
        for key, amount in body.items():
            where = f"deploy.resources.{part}.{key}"
            try:
                if key == "cpus":
                    resources[fields[0]] = float(amount)
                elif key == "memory":
                    resources[fields[1]] = compose_memory(amount)
                else:
                    ctx.unsupported(service, where)
            except (TypeError, ValueError) as err:
                ctx.refuse(service, where, str(err))
    for key in value:
        if key not in ("limits", "reservations"):
            ctx.unsupported(service, f"deploy.resources.{key}")


def _update_config(service: str, value: Any, doc: dict[str, Any], ctx: _Context) -> None:
    if not isinstance(value, dict):
        ctx.refuse(service, "deploy.update_config", "must be a mapping")
        return
    parallelism = value.get("parallelism", 1)
    replicas = doc.get("replicas", 1)
    step = parallelism if isinstance(parallelism, int) and parallelism > 0 else replicas
    step = max(1, step) if isinstance(step, int) else 1
    order = value.get("order", "stop-first")
    update: dict[str, Any] = {}
    if order == "start-first":
        update.update(max_surge=step, max_unavailable=0)
    elif order == "stop-first":
        update.update(max_surge=0, max_unavailable=step)
    else:
        ctx.refuse(service, "deploy.update_config.order", f"{order!r}: start-first or stop-first")
    action = value.get("failure_action", "pause")
    if action in ("rollback", "pause"):
        update["auto_rollback"] = action == "rollback"
    else:
        ctx.unsupported(
            service, f"deploy.update_config.failure_action: {action}", "rollback or pause"
        )
    for key in value:
        if key not in ("parallelism", "order", "failure_action"):
            ctx.unsupported(service, f"deploy.update_config.{key}")
    doc["update"] = update


def _restart_policy(service: str, value: Any, ctx: _Context) -> None:
    if not isinstance(value, dict):
        ctx.refuse(service, "deploy.restart_policy", "must be a mapping")
        return
    condition = value.get("condition", "any")
    if condition != "any":
        ctx.refuse(service, f"deploy.restart_policy.condition: {condition}", RUN_TO_COMPLETION)
    for key in value:
        if key != "condition":
            ctx.unsupported(
                service, f"deploy.restart_policy.{key}", "Shoal restarts with its own backoff"
            )


_CONSTRAINT = re.compile(r"^node\.labels\.([A-Za-z0-9_.\-/]+)\s*==\s*(\S+)$")
_SPREAD = re.compile(r"^node\.labels\.([A-Za-z0-9_.\-/]+)$")


def _placement(service: str, value: Any, doc: dict[str, Any], ctx: _Context) -> None:
    if not isinstance(value, dict):
        ctx.refuse(service, "deploy.placement", "must be a mapping")
        return
    placement: dict[str, Any] = {}
    constraints: dict[str, list[str]] = {}
    for i, item in enumerate(value.get("constraints") or []):
        match = _CONSTRAINT.match(str(item).strip())
        if match is None:
            ctx.unsupported(
                service,
                f"deploy.placement.constraints[{i}]",
                f"{item!r}: only node.labels.<key>==<value>",
            )
            continue
        constraints.setdefault(match[1], []).append(match[2])
    if constraints:
        placement["constraints"] = constraints
    for i, item in enumerate(value.get("preferences") or []):
        spread = item.get("spread") if isinstance(item, dict) else None
        match = _SPREAD.match(str(spread)) if spread is not None else None
        if match is None or "spread_by" in placement:
            ctx.unsupported(
                service, f"deploy.placement.preferences[{i}]", "one spread: node.labels.<key>"
            )
            continue
        placement["spread_by"] = match[1]
    if "max_replicas_per_node" in value:
        placement["max_per_node"] = value["max_replicas_per_node"]
    for key in value:
        if key not in ("constraints", "preferences", "max_replicas_per_node"):
            ctx.unsupported(service, f"deploy.placement.{key}")
    if placement:
        doc["placement"] = placement


# -- volumes ------------------------------------------------------------------------------------


def _volumes(service: str, value: Any, ctx: _Context) -> list[dict[str, Any]]:
    if not isinstance(value, list):
        ctx.refuse(service, "volumes", "must be a list")
        return []
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"volumes[{i}]"
        if isinstance(item, dict):
            kind = item.get("type", "volume")
            for key in item:
                if key not in ("type", "source", "target", "read_only", "bind", "volume"):
                    ctx.unsupported(service, f"{where}.{key}")
            if kind not in ("volume", "bind"):
                ctx.unsupported(service, f"{where}.type: {kind}", "only volume and bind")
                continue
            source, target = item.get("source"), item.get("target")
            read_only = item.get("read_only", False) is True
        else:
            text = ctx.text(item, ("services", service, "volumes", i))
            parts = text.split(":")
            if len(parts) == 1:
                source, target, mode = None, parts[0], ""
            elif len(parts) in (2, 3):
                source, target = parts[0], parts[1]
                mode = parts[2] if len(parts) == 3 else ""
            else:
                ctx.refuse(service, where, f"{text!r} is not source:target[:mode]")
                continue
            options = [o for o in mode.split(",") if o]
            for option in options:
                if option not in ("ro", "rw"):
                    ctx.unsupported(service, f"{where} mode {option}", "only ro and rw")
            read_only = "ro" in options
            kind = (
                "bind" if source is not None and (source.startswith((".", "/", "~"))) else "volume"
            )
        if not source:
            ctx.unsupported(service, where, "anonymous volumes: give the volume a name")
            continue
        source = str(source)
        if kind == "bind":
            source = ctx.path(source)
        elif source not in ctx.volumes:
            ctx.refuse(service, where, f"volume {source} is not declared under top-level volumes:")
            continue
        else:
            source = ctx.volumes[source]
        out.append({"source": source, "target": str(target), "read_only": read_only})
    return out


# -- networks, names ---------------------------------------------------------------------------


def _top_networks(value: Any, ctx: _Context) -> None:
    """Declared networks. Shoal gives each namespace one network: a declaration is accepted
    when it asks for nothing else (a local bridge, a name)."""
    if value is None:
        return
    if not isinstance(value, dict):
        ctx.errors.append("networks: must map network names to networks")
        return
    for name, body in value.items():
        body = body or {}
        where = f"networks.{name}"
        if not isinstance(body, dict):
            ctx.errors.append(f"{where}: must be a mapping")
            continue
        ctx.networks[str(name)] = body
        for key, setting in body.items():
            key = str(key)
            if key == "name" or key.startswith("x-"):
                continue
            if key == "driver" and setting == "bridge":
                continue
            if key in ("external", "internal", "attachable") and setting is False:
                continue
            why = {
                "external": "Shoal makes and removes the namespace's network itself",
                "internal": "every app reaches outside; use network.internal on the app for "
                "no edge route",
                "driver": "the namespace network is a bridge on every node",
            }.get(key, "the namespace network is made by Shoal")
            ctx.unsupported("", f"{where}.{key}", why)


def _service_networks(service: str, value: Any, doc: dict[str, Any], ctx: _Context) -> None:
    names: list[str] = []
    aliases: list[str] = []
    if isinstance(value, list):
        names = [str(v) for v in value]
    elif isinstance(value, dict):
        for name, body in value.items():
            names.append(str(name))
            body = body or {}
            if not isinstance(body, dict):
                ctx.refuse(service, f"networks.{name}", "must be a mapping")
                continue
            for key, setting in body.items():
                if key == "aliases" and isinstance(setting, list):
                    aliases.extend(str(a) for a in setting)
                elif key == "aliases":
                    ctx.refuse(service, f"networks.{name}.aliases", "must be a list of names")
                elif not str(key).startswith("x-"):
                    ctx.unsupported(
                        service,
                        f"networks.{name}.{key}",
                        "Shoal gives addresses itself (a VIP per app, names by DNS)",
                    )
    else:
        ctx.refuse(service, "networks", "must be a list of network names or a mapping")
        return
    for name in names:
        if name != "default" and name not in ctx.networks:
            ctx.refuse(service, f"networks.{name}", "is not declared under top-level networks:")
    ctx.service_networks[service] = set(names) or {"default"}
    _add_aliases(service, "networks.aliases", aliases, doc, ctx)


def _add_aliases(
    service: str, key: str, names: list[str], doc: dict[str, Any], ctx: _Context
) -> None:
    network = doc.setdefault("network", {})
    known: list[str] = network.setdefault("aliases", [])
    for alias in names:
        label = app_name(alias)
        if not DNS_LABEL.match(label):
            ctx.refuse(service, key, f"{alias!r} gives no valid name (a DNS label)")
        elif label != doc["name"] and label not in known:
            known.append(label)
    if not known:
        del network["aliases"]
        if not network:
            del doc["network"]


def _container_name(service: str, value: Any, doc: dict[str, Any], ctx: _Context) -> None:
    replicas = doc.get("replicas", 1)
    if isinstance(replicas, int) and replicas > 1:
        ctx.refuse(
            service,
            "container_name",
            f"names one container, and the service has {replicas} replicas: drop "
            "container_name (every replica is reachable by the service's name) or use "
            "one replica",
        )
        return
    text = ctx.text(value, ("services", service, "container_name"))
    _add_aliases(service, "container_name", [text], doc, ctx)


def _check_networks(ctx: _Context) -> None:
    """Shoal puts every app of a namespace on one network: each one reaches every other.
    A file whose services are split (two that share no network) asks for isolation
    between them that Shoal would not give."""
    services = sorted(ctx.service_networks)
    for i, a in enumerate(services):
        for b in services[i + 1 :]:
            if not ctx.service_networks[a] & ctx.service_networks[b]:
                ctx.unsupported(
                    "",
                    "networks",
                    f"services {a} and {b} share no network, and every app of a namespace "
                    "reaches every other in Shoal: put them in one network, or in two "
                    "compose files (two namespaces, network.allow_from between them)",
                )
                return


# -- secrets and configs -----------------------------------------------------------------------


def _top_secrets(kind: str, value: Any, ctx: _Context) -> None:
    names = ctx.secret_names.setdefault(kind, {})
    if value is None:
        return
    if not isinstance(value, dict):
        ctx.errors.append(f"{kind}: must map names to definitions")
        return
    for key, body in value.items():
        key = str(key)
        where = f"{kind}.{key}"
        if not isinstance(body, dict):
            ctx.errors.append(f"{where}: must be a mapping")
            continue
        name = str(body.get("name") or key)
        if not _SECRET_NAME.match(name):
            ctx.errors.append(
                f"{where}: {name!r} is no valid secret name (1-63 letters, digits, '_', '.', '-')"
            )
            continue
        for other_kind, other in ctx.secret_names.items():
            if other_kind != kind and name in other.values():
                ctx.errors.append(
                    f"{where}: the name {name} is also one of the file's {other_kind}: "
                    "both are Shoal secrets of the namespace"
                )
        names[key] = name
        sources = [k for k in ("file", "environment", "content") if k in body]
        external = body.get("external", False) is True
        for extra in set(body) - {"file", "environment", "content", "external", "name"}:
            if not str(extra).startswith("x-"):
                ctx.unsupported("", f"{where}.{extra}")
        if external:
            if sources:
                ctx.errors.append(f"{where}: external and {sources[0]} exclude each other")
            continue  # must exist: the controller refuses the apply naming it otherwise
        if len(sources) != 1:
            ctx.errors.append(
                f"{where}: needs one of file, environment or content (or external: true "
                f"for a secret made with `shoal secret create {name}`)"
            )
            continue
        source = sources[0]
        if source == "file":
            ctx.sources.append(SecretSource(name, file=ctx.path(str(body["file"]))))
        elif source == "environment":
            variable = str(body["environment"])
            if variable not in ctx.env:
                ctx.errors.append(f"{where}: environment variable {variable} is not set")
                continue
            ctx.sources.append(SecretSource(name, value=ctx.env[variable]))
        else:
            ctx.sources.append(SecretSource(name, value=ctx.text(body["content"], ())))


_SECRET_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_.\-]{0,61}[A-Za-z0-9])?$")


def _secret_uses(service: str, kind: str, value: Any, ctx: _Context) -> list[dict[str, Any]]:
    """A service's ``secrets:``/``configs:`` as Shoal secret uses: a secret at
    ``/run/secrets/<source>`` (or ``target``), a config at ``/<source>`` (or ``target``)."""
    if not isinstance(value, list):
        ctx.refuse(service, kind, "must be a list")
        return []
    declared = ctx.secret_names.get(kind, {})
    out: list[dict[str, Any]] = []
    for i, item in enumerate(value):
        where = f"{kind}[{i}]"
        if isinstance(item, dict):
            source = item.get("source")
            target = item.get("target")
            for key in item:
                if key in ("source", "target"):
                    continue
                if key in ("uid", "gid", "mode"):
                    ctx.unsupported(
                        service, f"{where}.{key}", "Shoal mounts secrets read-only, mode 0444"
                    )
                else:
                    ctx.unsupported(service, f"{where}.{key}")
        else:
            source, target = item, None
        if not isinstance(source, str) or not source:
            ctx.refuse(service, where, "names no source")
            continue
        if source not in declared:
            ctx.refuse(service, where, f"{source} is not declared under top-level {kind}:")
            continue
        use: dict[str, Any] = {"name": declared[source]}
        if kind == "configs":
            use["target"] = str(target) if target else f"/{source}"
        elif target:
            use["target"] = str(target)
        out.append(use)
    return out
