"""``shoal auth ...``: the cluster's identities, their grants, the broker's password file
and ACL.

Everything is kept in one identities file (``--file``, ``$SHOAL_AUTH``; YAML, mode 0600):
the controller and the scheduler read it (``--auth``) to authorise commands, and
``shoal auth passwd`` / ``shoal auth acl`` render what mosquitto reads. Adding an identity
makes a random password, stores only its hash, and writes ``<name>.credentials``
(``USERNAME:PASSWORD``, mode 0600) for that service, node or user to connect with
(``--broker-credentials`` of a service, ``credentials`` of a CLI context). No command talks
to the broker: after a change, write the files again and reload mosquitto (SIGHUP).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import NoReturn

import click
from rich.markup import escape
from rich.table import Table

from core.acl import acl_text, password_file
from core.identities import (
    SERVICE_ROLES,
    VERBS,
    AuthError,
    AuthFile,
    Identity,
    add_identity,
    dump_auth,
    grant,
    hash_password,
    load_auth,
    new_password,
    remove_identity,
    revoke,
)
from services.cli.client import console, err_console

DEFAULT_FILE = "shoal-auth.yaml"


def _fail(message: str) -> NoReturn:
    err_console.print(f"[red]error:[/red] {escape(message)}", highlight=False)
    sys.exit(1)


def _write_private(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` (mode 0600), atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(tmp, 0o600)
    tmp.replace(path)


def _load(path: Path) -> AuthFile:
    if not path.exists():
        _fail(f"no identities file {path}: `shoal auth init` makes one")
    try:
        return load_auth(path)
    except AuthError as err:
        _fail(str(err))


def _save(path: Path, auth: AuthFile) -> None:
    _write_private(path, dump_auth(auth))


file_option = click.option(
    "-f",
    "--file",
    "path",
    envvar="SHOAL_AUTH",
    show_envvar=True,
    default=DEFAULT_FILE,
    show_default=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="the identities file",
)
credentials_option = click.option(
    "--credentials-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="where <name>.credentials is written [default: beside the identities file]",
)


@click.group("auth")
def auth() -> None:
    """Identities (services, nodes, users), their namespaces, the broker's password file
    and ACL."""


@auth.command("init")
@file_option
@click.option("--prefix", default="shoal", show_default=True, help="the cluster's topic prefix")
def init(path: Path, prefix: str) -> None:
    """Start an empty identities file."""
    if path.exists():
        _fail(f"{path} exists")
    try:
        _save(path, AuthFile(prefix=prefix))
    except ValueError as err:
        _fail(str(err))
    console.print(f"identities file {path} created (prefix {prefix})", highlight=False)


def _add_with_password(
    path: Path, credentials_dir: Path | None, name: str, role: str, **fields: object
) -> None:
    """Add identity ``name`` with a new random password; write its credentials file."""
    password = new_password()
    try:
        identity = Identity.model_validate(
            {"role": role, "password_hash": hash_password(password), **fields}
        )
        changed = add_identity(_load(path), name, identity)
    except (ValueError, AuthError) as err:
        _fail(str(err))
    directory = credentials_dir or path.parent
    directory.mkdir(parents=True, exist_ok=True)
    creds = directory / f"{name}.credentials"
    _write_private(creds, f"{name}:{password}\n")
    _save(path, changed)
    console.print(f"identity {name} added ({role}); credentials in {creds}", highlight=False)


@auth.command("add-service")
@click.argument("role", type=click.Choice(SERVICE_ROLES))
@click.option("--name", default=None, help="the user name [default: the role]")
@file_option
@credentials_option
def add_service(role: str, name: str | None, path: Path, credentials_dir: Path | None) -> None:
    """An identity for a control-plane service (one per instance if they should differ)."""
    if role == "mesh":
        _fail("a mesh runs on a node: `shoal auth add-node NODE --mesh`")
    _add_with_password(path, credentials_dir, name or role, role)


@auth.command("add-node")
@click.argument("node")
@click.option("--mesh", is_flag=True, help="also an identity for the node's mesh service")
@file_option
@credentials_option
def add_node(node: str, mesh: bool, path: Path, credentials_dir: Path | None) -> None:
    """An identity for NODE's agent (agent-NODE): it may write only its own node's topics
    and read only its own assignment."""
    _add_with_password(path, credentials_dir, f"agent-{node}", "agent", node=node)
    if mesh:
        _add_with_password(path, credentials_dir, f"mesh-{node}", "mesh", node=node)


@auth.command("add-user")
@click.argument("name")
@click.option("--admin", is_flag=True, help="every namespace, every verb, node commands")
@click.option(
    "-n", "--namespace", "namespaces", multiple=True, help="grant every verb in it (repeatable)"
)
@file_option
@credentials_option
def add_user(
    name: str,
    admin: bool,
    namespaces: tuple[str, ...],
    path: Path,
    credentials_dir: Path | None,
) -> None:
    """An identity for a person or a CI job."""
    grants = {ns: ["*"] for ns in namespaces}
    _add_with_password(path, credentials_dir, name, "user", admin=admin, grants=grants)


@auth.command("rm")
@click.argument("name")
@file_option
def rm(name: str, path: Path) -> None:
    """Remove an identity (write the password file again to lock it out)."""
    try:
        changed = remove_identity(_load(path), name)
    except AuthError as err:
        _fail(str(err))
    _save(path, changed)
    console.print(f"identity {name} removed", highlight=False)


verbs_option = click.option(
    "--verb",
    "verbs",
    multiple=True,
    type=click.Choice([*VERBS, "*"]),
    help="only these verbs (repeatable) [default: every verb]",
)


@auth.command("grant")
@click.argument("name")
@click.argument("namespace", required=False)
@verbs_option
@click.option("--admin", is_flag=True, help="make NAME an admin")
@file_option
def grant_cmd(
    name: str, namespace: str | None, verbs: tuple[str, ...], admin: bool, path: Path
) -> None:
    """Let NAME act in NAMESPACE ('*': every namespace), or make it an admin."""
    if namespace is None and not admin:
        _fail("name a namespace, or --admin")
    changed = _load(path)
    try:
        changed = grant(changed, name, namespace, list(verbs), admin=admin)
    except AuthError as err:
        _fail(str(err))
    _save(path, changed)
    what = [f"{', '.join(verbs) or 'every verb'} in {namespace}"] if namespace else []
    console.print(f"{name}: granted {' and '.join([*what, *(['admin'] if admin else [])])}")


@auth.command("revoke")
@click.argument("name")
@click.argument("namespace", required=False)
@verbs_option
@click.option("--admin", is_flag=True, help="NAME is no longer an admin")
@file_option
def revoke_cmd(
    name: str, namespace: str | None, verbs: tuple[str, ...], admin: bool, path: Path
) -> None:
    """Take NAMESPACE (or some of its verbs), or admin, away from NAME."""
    if namespace is None and not admin:
        _fail("name a namespace, or --admin")
    try:
        changed = revoke(_load(path), name, namespace, list(verbs), admin=admin)
    except AuthError as err:
        _fail(str(err))
    _save(path, changed)
    console.print(f"{name}: revoked", highlight=False)


@auth.command("ls")
@file_option
def ls(path: Path) -> None:
    """Every identity: role, node, admin, grants."""
    current = _load(path)
    table = Table(box=None, pad_edge=False)
    for column in ("NAME", "ROLE", "NODE", "ADMIN", "GRANTS"):
        table.add_column(column)
    for name in sorted(current.identities):
        i = current.identities[name]
        grants = "; ".join(f"{ns}: {','.join(v)}" for ns, v in sorted(i.grants.items()))
        table.add_row(name, i.role, i.node or "", "yes" if i.admin else "", grants)
    console.print(table)


def _emit(text: str, output: Path | None) -> None:
    if output is None:
        sys.stdout.write(text)
    else:
        _write_private(output, text)
        console.print(f"wrote {output}", highlight=False)


@auth.command("acl")
@file_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
def acl(path: Path, output: Path | None) -> None:
    """The broker's ACL (mosquitto acl_file) for every identity."""
    _emit(acl_text(_load(path)), output)


@auth.command("passwd")
@file_option
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
def passwd(path: Path, output: Path | None) -> None:
    """The broker's password file (mosquitto password_file: PBKDF2-SHA512 hashes)."""
    _emit(password_file(_load(path)), output)


COMMANDS = [auth]
