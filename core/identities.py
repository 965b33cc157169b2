"""Who may connect to the bus and what each may ask: the cluster's identities and grants.

One file (``AuthFile``, YAML, managed by ``shoal auth``) holds every identity: each service
instance, each node's agent, each user or CI job, with its password hash (PBKDF2-SHA512 in
the ``$7$`` form ``mosquitto_passwd`` writes) and, for people, the namespaces granted to
them. From it come the broker's password file and ACL (``core.acl``), and the decisions
the controller and the scheduler take on every command (``authorize``): the broker vouches
for the user name (it is the ``<user>`` level of ``cmd/<name>/<user>``, pinned by the ACL),
these functions say what that user may do.

Everything here is pure: models, hashing with a given salt, decisions.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from pathlib import Path
from typing import Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from core.errors import ShoalError
from core.spec import Model, check_dns_label, format_validation_error

#: What an identity is: a service of the control plane, a node's agent (or mesh), a person.
Role = Literal[
    "controller",
    "scheduler",
    "health",
    "balancer",
    "scaler",
    "dashboard",
    "mesh",
    "provisioner",
    "bridge",
    "agent",
    "user",
]
SERVICE_ROLES: tuple[Role, ...] = (
    "controller",
    "scheduler",
    "health",
    "balancer",
    "scaler",
    "dashboard",
    "mesh",
    "provisioner",
    "bridge",
)
#: The verbs a grant names (a command's verb is its name; ``*``: every verb).
Verb = Literal[
    "apply",
    "delete",
    "scale",
    "rollback",
    "rollout",
    "history",
    "secret_put",
    "secret_rm",
    "secret_ls",
]
VERBS: tuple[str, ...] = Verb.__args__  # type: ignore[attr-defined]
#: Verbs on the whole cluster rather than one namespace: admins only.
CLUSTER_VERBS = ("node",)
#: What a role may do without a grant (the autoscaler scales every app).
ROLE_GRANTS: dict[str, dict[str, list[str]]] = {"scaler": {"*": ["scale"]}}
#: Cluster-wide verbs a role may use without being an admin (the provisioner drains the
#: nodes it removes and asks for a rebalance after nodes join).
ROLE_CLUSTER_VERBS: dict[str, tuple[str, ...]] = {
    "provisioner": ("cordon", "uncordon", "drain", "rebalance")
}

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default for $7$
_USER_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,127}$")


class AuthError(ShoalError):
    """The identities file cannot be read or an operation on it is invalid."""


def check_user_name(name: str) -> str:
    """A user name fits in one topic level and in the password file."""
    if not _USER_NAME.match(name):
        raise ValueError(
            f"{name!r} is not a valid user name (letters, digits, '_', '.', '@', '-'; "
            "starting with a letter or digit; at most 128)"
        )
    return name


class Identity(Model):
    role: Role
    password_hash: str = Field(description="PBKDF2-SHA512, as mosquitto_passwd writes it")
    node: str | None = Field(default=None, description="an agent's (or mesh's) node")
    admin: bool = False
    #: namespace (or ``*``) -> verbs (``*``: every verb)
    grants: dict[str, list[str]] = Field(default_factory=dict)

    @field_validator("grants")
    @classmethod
    def _check_grants(cls, grants: dict[str, list[str]]) -> dict[str, list[str]]:
        for namespace, verbs in grants.items():
            if namespace != "*":
                check_dns_label(namespace, "namespace")
            unknown = sorted(set(verbs) - {*VERBS, "*"})
            if unknown:
                raise ValueError(
                    f"namespace {namespace}: unknown verb {', '.join(unknown)} "
                    f"(known: {', '.join(VERBS)}, *)"
                )
        return grants

    @model_validator(mode="after")
    def _check_node(self) -> Identity:
        if self.role in ("agent", "mesh") and not self.node:
            raise ValueError(f"a {self.role} identity needs its node")
        if self.role not in ("agent", "mesh") and self.node:
            raise ValueError(f"a {self.role} identity has no node")
        if self.node is not None:
            check_user_name(self.node)
        return self


class AuthFile(Model):
    """The cluster's identities (``shoal auth`` writes it; controller and scheduler read it)."""

    prefix: str = "shoal"
    identities: dict[str, Identity] = Field(default_factory=dict)

    @field_validator("identities")
    @classmethod
    def _check_names(cls, identities: dict[str, Identity]) -> dict[str, Identity]:
        for name in identities:
            check_user_name(name)
        return identities


# -- passwords ---------------------------------------------------------------------------


def new_password() -> str:
    return secrets.token_urlsafe(24)


def hash_password(password: str, salt: bytes | None = None) -> str:
    """``$7$<iterations>$<salt>$<hash>``: mosquitto's PBKDF2-SHA512 password hash."""
    salt = secrets.token_bytes(12) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, PBKDF2_ITERATIONS)
    b64 = base64.b64encode
    return f"$7${PBKDF2_ITERATIONS}${b64(salt).decode()}${b64(digest).decode()}"


def password_matches(password: str, hashed: str) -> bool:
    try:
        _, seven, iterations, salt, digest = hashed.split("$")
        if seven != "7":
            return False
        got = hashlib.pbkdf2_hmac(
            "sha512", password.encode(), base64.b64decode(salt), int(iterations)
        )
    except ValueError:
        return False
    return hmac.compare_digest(got, base64.b64decode(digest))


# -- the file ----------------------------------------------------------------------------


def parse_auth(text: str, origin: str = "identities file") -> AuthFile:
    try:
        data = yaml.safe_load(text) or {}
        return AuthFile.model_validate(data)
    except yaml.YAMLError as err:
        raise AuthError(f"{origin}: not YAML: {err}") from err
    except ValidationError as err:
        raise AuthError("; ".join(format_validation_error(err, origin))) from err


def load_auth(path: Path) -> AuthFile:
    try:
        text = path.read_text()
    except OSError as err:
        raise AuthError(f"identities file {path}: {err.strerror or err}") from err
    return parse_auth(text, str(path))


def dump_auth(auth: AuthFile) -> str:
    return str(yaml.safe_dump(auth.model_dump(mode="json", exclude_defaults=True), sort_keys=True))


# -- decisions ---------------------------------------------------------------------------


def authorize(auth: AuthFile, user: str, verb: str, namespace: str | None) -> str | None:
    """None when ``user`` may ``verb`` in ``namespace`` (None: a cluster-wide verb), else
    the "not allowed" line that names the user, the namespace and the verb."""
    where = f"in namespace {namespace!r}" if namespace is not None else "on the cluster"
    refusal = f"not allowed: user {user!r} may not {verb} {where}"
    if not user:
        return f"{refusal} (a command must come on cmd/<name>/<user> when authorisation is on)"
    identity = auth.identities.get(user)
    if identity is None:
        return f"{refusal} (no such identity)"
    if identity.admin:
        return None
    if namespace is None:
        if verb in ROLE_CLUSTER_VERBS.get(identity.role, ()):
            return None
        return f"{refusal} (only admins may)"
    for grants in (identity.grants, ROLE_GRANTS.get(identity.role, {})):
        for ns in (namespace, "*"):
            verbs = grants.get(ns, [])
            if verb in verbs or "*" in verbs:
                return None
    return refusal


def authorize_secret_values(auth: AuthFile, user: str, role: str, node: str) -> str | None:
    """An agent gets only its own node's secrets; a balancer only the route certificates."""
    identity = auth.identities.get(user)
    refusal = f"not allowed: user {user!r} may not fetch the secrets of {role} {node!r}"
    if identity is None:
        return f"{refusal} (no such identity)"
    if role == "balancer" and identity.role == "balancer":
        return None
    if role != "balancer" and identity.role == "agent" and identity.node == node:
        return None
    return refusal


# -- changes (``shoal auth``): each returns a new file, or raises AuthError --------------


def add_identity(auth: AuthFile, name: str, identity: Identity) -> AuthFile:
    try:
        check_user_name(name)
    except ValueError as err:
        raise AuthError(str(err)) from err
    if name in auth.identities:
        raise AuthError(f"identity {name!r} exists (remove it first to give it new credentials)")
    return auth.model_copy(update={"identities": {**auth.identities, name: identity}})


def remove_identity(auth: AuthFile, name: str) -> AuthFile:
    _get(auth, name)
    rest = {n: i for n, i in auth.identities.items() if n != name}
    return auth.model_copy(update={"identities": rest})


def grant(
    auth: AuthFile, name: str, namespace: str | None, verbs: list[str], *, admin: bool = False
) -> AuthFile:
    """Give ``name`` the ``verbs`` (default every one) in ``namespace``, and/or admin."""
    identity = _get(auth, name)
    grants = dict(identity.grants)
    if namespace is not None:
        grants[namespace] = sorted(set(grants.get(namespace, [])) | set(verbs or ["*"]))
    try:
        changed = Identity.model_validate(
            {**identity.model_dump(), "grants": grants, "admin": identity.admin or admin}
        )
    except ValidationError as err:
        raise AuthError("; ".join(format_validation_error(err, f"identity {name}"))) from err
    return auth.model_copy(update={"identities": {**auth.identities, name: changed}})


def revoke(
    auth: AuthFile, name: str, namespace: str | None, verbs: list[str], *, admin: bool = False
) -> AuthFile:
    """Take ``verbs`` (default all) in ``namespace`` away from ``name``, and/or admin."""
    identity = _get(auth, name)
    grants = dict(identity.grants)
    if namespace is not None:
        if namespace not in grants:
            raise AuthError(f"identity {name!r} has no grant in namespace {namespace!r}")
        if verbs and "*" in grants[namespace]:
            raise AuthError(
                f"identity {name!r} has every verb in namespace {namespace!r}: revoke the "
                "namespace, then grant the verbs it keeps"
            )
        left = sorted(set(grants[namespace]) - set(verbs)) if verbs else []
        if left:
            grants[namespace] = left
        else:
            del grants[namespace]
    changed = identity.model_copy(update={"grants": grants, "admin": identity.admin and not admin})
    return auth.model_copy(update={"identities": {**auth.identities, name: changed}})


def _get(auth: AuthFile, name: str) -> Identity:
    identity = auth.identities.get(name)
    if identity is None:
        known = ", ".join(sorted(auth.identities)) or "none"
        raise AuthError(f"no identity {name!r} (known: {known})")
    return identity
