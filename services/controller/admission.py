"""Admission: what a spec may ask of a node, decided at apply (pure).

By default the controller refuses a spec that asks for privileged mode, added
capabilities, a host bind mount, or the Docker socket: each gives a replica the node (a
privileged container or one holding ``/var/run/docker.sock`` is root on the host). An
operator's policy file allows each of these per namespace, or for every namespace
(``"*"``)::

    namespaces:
      "*":
        bind_mounts: [/srv/shared]       # host paths (and what is below them)
      ops:
        privileged: true
        capabilities: [NET_ADMIN]        # or ["*"] for any
        bind_mounts: [/var/log]
        docker_socket: true

The rules, by the name a refusal gives: ``privileged`` (``security.privileged``),
``capabilities`` (``security.cap_add``), ``bind_mounts`` (``volumes[i].source`` a host
path outside the allowed ones; none by default) and ``docker_socket`` (a bind of
``/var/run/docker.sock``, ``/run/docker.sock`` or a directory above them, whatever
``bind_mounts`` allows). Host network and PID namespaces and devices cannot be asked for:
the spec has no such fields, so a spec naming one is refused as an unknown field.

Route hosts belong to one namespace: an app may not take a host (exact or wildcard) that
an app of another namespace uses, nor one that overlaps it (``*.example.com`` and
``api.example.com``), since either would take part of the other's traffic. A TCP listen
port belongs to one app of the cluster (``listen_ports.py``).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError, field_validator

from core.errors import SpecError
from core.keys import AppKey
from core.spec import AppSpec, Model, check_dns_label, format_validation_error
from core.spec_yaml import read_documents
from services.controller.listen_ports import listen_port_errors

#: Where the Docker socket lives on a node.
DOCKER_SOCKETS = ("/var/run/docker.sock", "/run/docker.sock")
#: Every namespace.
ANY = "*"


def _normal_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"bind mount {value!r} must be an absolute host path")
    return posixpath.normpath(value).replace("//", "/")


def _capability(name: str) -> str:
    """Docker takes ``NET_ADMIN`` or ``CAP_NET_ADMIN``, in any case."""
    upper = name.strip().upper()
    return upper[4:] if upper.startswith("CAP_") else upper


class Allowances(Model):
    """What one namespace (or ``"*"``) may ask for."""

    privileged: bool = False
    capabilities: list[str] = Field(default_factory=list, description='names, or "*"')
    bind_mounts: list[str] = Field(default_factory=list, description="host paths")
    docker_socket: bool = False

    @field_validator("capabilities")
    @classmethod
    def _capabilities(cls, v: list[str]) -> list[str]:
        return [name if name == ANY else _capability(name) for name in v]

    @field_validator("bind_mounts")
    @classmethod
    def _bind_mounts(cls, v: list[str]) -> list[str]:
        return [_normal_path(path) for path in v]


class Policy(Model):
    """The operator's admission policy: allowances per namespace (``"*"``: all)."""

    namespaces: dict[str, Allowances] = Field(default_factory=dict)

    @field_validator("namespaces")
    @classmethod
    def _namespaces(cls, v: dict[str, Allowances]) -> dict[str, Allowances]:
        for namespace in v:
            if namespace != ANY:
                check_dns_label(namespace, "namespace")
        return v

    def allows(self, namespace: str) -> list[Allowances]:
        return [a for ns, a in self.namespaces.items() if ns in (namespace, ANY)]


#: Nothing allowed: what the controller enforces without a policy file.
DEFAULT_POLICY = Policy()


def load_policy(text: str, source: str = "policy") -> Policy:
    """A policy file's YAML (or JSON) as a ``Policy``; ``SpecError`` naming each problem."""
    documents = read_documents(text, source, Policy)
    if len(documents) != 1 or not isinstance(documents[0].data, dict):
        raise SpecError([f"{source}: a policy file is one mapping (namespaces: ...)"])
    document = documents[0]
    try:
        return Policy.model_validate(document.data)
    except ValidationError as err:
        raise SpecError(format_validation_error(err, source, document)) from None


def read_policy(path: Path | str | None) -> Policy:
    """The policy at ``path``, or the default (nothing allowed) without one."""
    if path is None:
        return DEFAULT_POLICY
    location = Path(path)
    try:
        text = location.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError([f"policy file {location}: cannot be read: {err}"]) from err
    return load_policy(text, str(location))


# -- the rules --------------------------------------------------------------------------


def _under(path: str, root: str) -> bool:
    return path == root or root == "/" or path.startswith(root + "/")


def _exposes_docker_socket(source: str) -> bool:
    path = _normal_path(source)
    return any(_under(socket, path) for socket in DOCKER_SOCKETS)


def _refusal(spec: AppSpec, where: str, what: str, rule: str) -> str:
    return (
        f"{spec.key}: {where}: {what}refused by policy '{rule}' "
        f"(allow it for namespace {spec.namespace} in the policy file)"
    )


def admission_errors(spec: AppSpec, policy: Policy = DEFAULT_POLICY) -> list[str]:
    """One line per field of ``spec`` that ``policy`` refuses, naming the rule."""
    allowed = policy.allows(spec.namespace)
    errors: list[str] = []
    security = spec.security
    if security.privileged and not any(a.privileged for a in allowed):
        errors.append(_refusal(spec, "security.privileged", "", "privileged"))
    capabilities = {c for a in allowed for c in a.capabilities}
    for i, name in enumerate(security.cap_add):
        capability = _capability(name)
        if ANY not in capabilities and capability not in capabilities:
            errors.append(
                _refusal(spec, f"security.cap_add[{i}]", f"{capability}: ", "capabilities")
            )
    roots = [root for a in allowed for root in a.bind_mounts]
    socket_allowed = any(a.docker_socket for a in allowed)
    for i, mount in enumerate(spec.volumes):
        if not mount.is_bind:
            continue
        where = f"volumes[{i}].source"
        path = _normal_path(mount.source)
        if not any(_under(path, root) for root in roots):
            errors.append(_refusal(spec, where, f"host path {path}: ", "bind_mounts"))
        if _exposes_docker_socket(path) and not socket_allowed:
            errors.append(
                _refusal(spec, where, f"{path} holds the Docker socket: ", "docker_socket")
            )
    return errors


def _overlap(a: str, b: str) -> bool:
    """Whether two route hosts can match one request host (balancer rules)."""
    if a == b:
        return True
    for wild, other in ((a, b), (b, a)):
        if wild.startswith("*."):
            suffix = wild[1:]  # ".example.com"
            if other.endswith(suffix) and other != suffix[1:]:
                return True
    return False


def host_errors(specs: Iterable[AppSpec], current: Mapping[AppKey, AppSpec]) -> list[str]:
    """Route hosts taken from another namespace: by a current app (not replaced by this
    batch) or by another spec of the batch."""
    batch = list(specs)
    owners: dict[AppKey, AppSpec] = dict(current)
    for spec in batch:
        owners.pop(spec.key, None)
    errors: list[str] = []
    seen: list[AppSpec] = []
    for spec in batch:
        host = spec.route.host if spec.route is not None else None
        if host is not None:
            for other in [*owners.values(), *seen]:
                other_host = other.route.host if other.route is not None else None
                if other.namespace == spec.namespace or other_host is None:
                    continue
                if _overlap(host, other_host):
                    same = "already used" if host == other_host else f"overlaps {other_host!r}"
                    errors.append(
                        f"{spec.key}: route.host: {host!r} {same} by app {other.key} of "
                        f"namespace {other.namespace}: a host belongs to one namespace"
                    )
                    break
        seen.append(spec)
    return errors


def check_admission(
    specs: Iterable[AppSpec], current: Mapping[AppKey, AppSpec], policy: Policy = DEFAULT_POLICY
) -> None:
    """Refuse the whole batch (``SpecError``, one line per problem) if any spec is."""
    batch = list(specs)
    errors = [line for spec in batch for line in admission_errors(spec, policy)]
    errors += host_errors(batch, current)
    errors += listen_port_errors(batch, current)
    if errors:
        raise SpecError(errors)


def describe(policy: Policy) -> dict[str, Any]:
    """What the policy allows, for the controller's start-up log."""
    return {ns: a.model_dump(exclude_defaults=True) for ns, a in sorted(policy.namespaces.items())}
