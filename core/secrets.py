"""Secrets: the command bodies of ``cmd/secret_*`` and the pure rules over app specs.

A secret is a named value in a namespace, kept by the controller (encrypted at rest) and
versioned: every new value is a new version. An app spec lists the secrets it uses
(``AppSpec.secrets``); the controller pins each to the version current when the revision
is made, so a new value makes a new revision of every app using it, rolled out as usual.
Values never travel on a retained topic: an agent asks for the versions its assigned
specs pin (``cmd/secret_values``) and gets them sealed to its own key (``core/sealing.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Literal

from pydantic import Field, field_validator

from core.bounds import Count, Serial
from core.commands import AppResult
from core.keys import AppKey
from core.spec import AppSpec, Model, check_dns_label, check_secret_name
from core.state import check_node_id

#: The largest secret value (Swarm's limit is 500 KB; Kubernetes' 1 MiB).
MAX_SECRET_BYTES = 500 * 1024


class _Named(Model):
    namespace: str = "default"
    name: str

    _ns = field_validator("namespace")(classmethod(lambda cls, v: check_dns_label(v, "namespace")))
    _name = field_validator("name")(classmethod(lambda cls, v: check_secret_name(v)))


#: The longest sealed value: nonce and tag around the largest value, as base64.
MAX_SEALED = ((MAX_SECRET_BYTES + 12 + 16) * 4) // 3 + 8


class SecretKeyQuery(Model):
    """``cmd/secret_key``: the controller's public key, to seal a ``secret_put`` to."""


class SecretKeyInfo(Model):
    #: X25519, base64: the same for every controller holding the same secrets key
    public_key: str


class SecretPut(_Named):
    """``cmd/secret_put``: create a secret, or give it a new value (a new version).

    The value is sealed to the controller's key (``secret_key``) with the client's
    one-time key ``sender`` and ``put_label(namespace, name)`` as associated data, so it
    crosses the bus as ciphertext only (``core/sealing.py``)."""

    sender: str = Field(max_length=100)
    sealed: str = Field(max_length=MAX_SEALED)
    source: str = ""


def put_label(namespace: str, name: str) -> bytes:
    return f"put {namespace}/{name}".encode()


class SecretPutResult(Model):
    """The answer to ``secret_put``: what became of the secret, and the apps it rolls."""

    namespace: str
    name: str
    version: Serial
    change: Literal["created", "updated", "unchanged"]
    rolled: list[AppResult] = Field(default_factory=list)


class SecretDelete(_Named):
    """``cmd/secret_rm``: forget a secret (refused while an app uses it)."""


class SecretQuery(Model):
    """``cmd/secret_ls``: the secrets of one namespace, or of all (``namespace`` None)."""

    namespace: str | None = None


class SecretInfo(Model):
    """What ``secret ls`` shows: never the value."""

    namespace: str
    name: str
    version: Serial
    created: float
    updated: float
    size: Count
    used_by: list[str] = Field(default_factory=list)


class SecretList(Model):
    secrets: list[SecretInfo] = Field(default_factory=list)


class SecretWant(Model):
    """One pinned secret version an agent needs."""

    namespace: str
    name: str
    version: Serial


class SecretValuesRequest(Model):
    """``cmd/secret_values``: an agent asks for the secret versions its node's assigned
    specs pin; the answer is sealed to ``public_key`` (X25519, base64)."""

    node: str
    public_key: str
    wants: list[SecretWant] = Field(max_length=1000)
    #: ``agent``: ``node`` is a node, given what its assignment pins; ``balancer``: ``node``
    #: is a balancer instance, given only the route certificates and keys apps pin
    role: Literal["agent", "balancer"] = "agent"

    _node = field_validator("node")(classmethod(lambda cls, v: check_node_id(v)))


class SealedValue(Model):
    namespace: str
    name: str
    version: Serial
    #: nonce and AES-GCM ciphertext, base64 (``core/sealing.py``)
    sealed: str


class SecretValues(Model):
    """The answer to ``secret_values``: each value sealed to the requester's key."""

    #: the controller's one-time X25519 public key for this answer, base64
    public_key: str
    values: list[SealedValue] = Field(default_factory=list)


# -- pure rules over specs ----------------------------------------------------------------


def names_used(spec: AppSpec) -> list[str]:
    """Every secret a spec names: its ``secrets`` and its route's certificate and key."""
    names = [use.name for use in spec.secrets]
    tls = spec.route.tls if spec.route is not None else None
    if tls is not None:
        names += [n for n, _ in tls.secret_names() if n not in names]
    return names


def uses(spec: AppSpec, name: str) -> bool:
    return name in names_used(spec)


def apps_using(specs: Iterable[AppSpec], namespace: str, name: str) -> list[AppKey]:
    """The apps a change of secret ``namespace/name`` rolls (sorted)."""
    return sorted({s.key for s in specs if s.namespace == namespace and uses(s, name)})


def missing_secrets(spec: AppSpec, versions: Mapping[str, int]) -> list[str]:
    """One line per secret the spec uses that its namespace does not hold."""
    return [
        f"app {spec.key}: secret {use!r} does not exist in namespace {spec.namespace} "
        f"(create it first: shoal secret create {use} -n {spec.namespace} ...)"
        for use in names_used(spec)
        if use not in versions
    ]


def pin_secrets(spec: AppSpec, versions: Mapping[str, int]) -> AppSpec:
    """The spec with every secret pinned to its version in ``versions`` (name -> current
    version); a secret missing from ``versions`` keeps its pin (``missing_secrets`` says)."""
    update: dict[str, object] = {}
    pinned = [
        use.model_copy(update={"version": versions.get(use.name, use.version)})
        for use in spec.secrets
    ]
    if pinned != spec.secrets:
        update["secrets"] = pinned
    route = spec.route
    tls = route.tls if route is not None else None
    if route is not None and tls is not None and tls.cert is not None and tls.key is not None:
        new_tls = tls.model_copy(
            update={
                "cert_version": versions.get(tls.cert) or tls.cert_version,
                "key_version": versions.get(tls.key) or tls.key_version,
            }
        )
        if new_tls != tls:
            update["route"] = route.model_copy(update={"tls": new_tls})
    return spec.model_copy(update=update) if update else spec


def route_wanted(specs: Iterable[AppSpec]) -> set[tuple[str, str, int]]:
    """Every (namespace, name, version) the specs' routes pin for TLS: what a balancer
    may get (never an app's ``secrets``)."""
    out: set[tuple[str, str, int]] = set()
    for spec in specs:
        tls = spec.route.tls if spec.route is not None else None
        if tls is None:
            continue
        for name, version in tls.secret_names():
            if version is not None:
                out.add((spec.namespace, name, version))
    return out


def wanted(specs: Iterable[AppSpec]) -> set[tuple[str, str, int]]:
    """Every (namespace, name, version) the specs pin in ``secrets``: what a node running
    them may get (a route's certificate key is the balancers', never a node's)."""
    return {
        (spec.namespace, use.name, use.version)
        for spec in specs
        for use in spec.secrets
        if use.version is not None
    }
