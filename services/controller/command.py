from __future__ import annotations

from pathlib import Path

import click

from core.authorizer import Authorizer
from core.config import ServiceConfig
from core.errors import SpecError
from core.identities import AuthError
from core.options import auth_option, data_dir_default, service_options
from core.service import run_service
from services.controller.admission import read_policy
from services.controller.service import ControllerService


@click.command("controller")
@service_options
@click.option(
    "--data-dir",
    envvar="SHOAL_DATA_DIR",
    show_envvar=True,
    default=data_dir_default,
    show_default="/var/lib/shoal as root, else $XDG_STATE_HOME/shoal (~/.local/state/shoal)",
    type=click.Path(file_okay=False),
    help="where controller.db (apps and their revision history) lives",
)
@click.option(
    "--store",
    envvar="SHOAL_STORE",
    show_envvar=True,
    default=None,
    metavar="URL",
    help="an external store instead of the data dir: postgresql://user:pass@host:port/db "
    "(controllers on several machines share it; one leads)",
)
@click.option(
    "--policy",
    "policy_file",
    envvar="SHOAL_POLICY",
    show_envvar=True,
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="admission policy (YAML): what specs may ask of a node, per namespace; without "
    "it, privileged mode, added capabilities, host bind mounts and the Docker socket are "
    "refused",
)
@click.option(
    "--secrets-key",
    envvar="SHOAL_SECRETS_KEY",
    default=None,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="the key file secrets are encrypted with at rest (32 random bytes, base64; "
    "mode 0600); without it, <data-dir>/secrets.key is made on first use. Controllers "
    "sharing a PostgreSQL store need the same file",
)
@auth_option
def command(
    config: ServiceConfig,
    data_dir: str,
    store: str | None,
    policy_file: Path | None,
    secrets_key: Path | None,
    auth_file: Path | None,
) -> None:
    """Validate commands, assign revisions, persist apps, publish desired state, roll out."""
    try:
        policy = read_policy(policy_file)
    except SpecError as err:
        raise click.BadParameter("\n".join(err.errors), param_hint="--policy") from err
    try:
        Authorizer(auth_file)
    except AuthError as err:
        raise click.BadParameter(str(err), param_hint="--auth") from err

    def factory(cfg: ServiceConfig) -> ControllerService:
        return ControllerService(
            cfg,
            Path(data_dir),
            store=store or None,
            policy=policy,
            secrets_key=secrets_key,
            auth=auth_file,
        )

    factory.name = ControllerService.name  # type: ignore[attr-defined]
    run_service(factory, config)
