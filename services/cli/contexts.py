"""Named contexts, as kubeconfig has: which broker, topic prefix and credentials file a
``shoal`` command talks to, kept in ``~/.config/shoal/config.yaml``::

    current-context: prod
    contexts:
      prod: {broker: "mqtts://broker.example:8883", prefix: shoal, credentials: ~/.shoal-prod}
      lab: {broker: "mqtt://10.0.0.5", prefix: lab}

``--context NAME`` (or ``SHOAL_CONTEXT``) picks one for a command, else ``current-context``;
``--broker``/``--prefix`` (or their environment variables) still win over the context.
A credentials file holds one line ``USERNAME:PASSWORD`` for the broker (keep it mode 0600).
``SHOAL_CONFIG`` names another config file.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import yaml

from core.config import BrokerURL, ConfigError
from core.config import read_credentials as read_credentials
from core.config import with_credentials as with_credentials


@dataclass(frozen=True)
class Context:
    broker: str | None = None
    prefix: str | None = None
    credentials: str | None = None

    def as_dict(self) -> dict[str, str]:
        return {
            k: v
            for k, v in (
                ("broker", self.broker),
                ("prefix", self.prefix),
                ("credentials", self.credentials),
            )
            if v is not None
        }


@dataclass
class CliConfig:
    current: str | None = None
    contexts: dict[str, Context] = field(default_factory=dict)


def config_path() -> Path:
    if explicit := os.environ.get("SHOAL_CONFIG"):
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "shoal" / "config.yaml"


def parse_config(text: str, source: str) -> CliConfig:
    """The config file's text; raises ``ConfigError`` saying what is wrong."""
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{source}: not YAML: {err}") from err
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: expected a mapping")
    contexts: dict[str, Context] = {}
    raw = doc.get("contexts") or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: contexts must map names to settings")
    for name, settings in raw.items():
        if not isinstance(settings, dict):
            raise ConfigError(f"{source}: context {name!r} must be a mapping")
        unknown = set(settings) - {"broker", "prefix", "credentials"}
        if unknown:
            raise ConfigError(f"{source}: context {name!r}: unknown keys {sorted(unknown)}")
        values = {k: v for k, v in settings.items() if v is not None}
        if not all(isinstance(v, str) for v in values.values()):
            raise ConfigError(f"{source}: context {name!r}: values must be strings")
        contexts[str(name)] = Context(**values)
    current = doc.get("current-context")
    if current is not None and not isinstance(current, str):
        raise ConfigError(f"{source}: current-context must be a name")
    return CliConfig(current, contexts)


def render_config(config: CliConfig) -> str:
    doc: dict[str, Any] = {"contexts": {n: c.as_dict() for n, c in config.contexts.items()}}
    if config.current is not None:
        doc["current-context"] = config.current
    return str(yaml.safe_dump(doc, sort_keys=True, default_flow_style=False))


def load_config(path: Path | None = None) -> CliConfig:
    path = path or config_path()
    try:
        text = path.read_text()
    except FileNotFoundError:
        return CliConfig()
    except OSError as err:
        raise ConfigError(f"{path}: {err.strerror}") from err
    return parse_config(text, str(path))


def save_config(config: CliConfig, path: Path | None = None) -> Path:
    path = path or config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(render_config(config))
    tmp.chmod(0o600)
    tmp.replace(path)
    return path


def select_context(config: CliConfig, name: str | None) -> tuple[str | None, Context]:
    """The context named (``--context``), else the current one, else none (empty)."""
    chosen = name or config.current
    if chosen is None:
        return None, Context()
    if chosen not in config.contexts:
        known = ", ".join(sorted(config.contexts)) or "none"
        raise ConfigError(f"no context {chosen!r} in the shoal config (known: {known})")
    return chosen, config.contexts[chosen]


# -- shoal config ... -----------------------------------------------------------------------


def _load() -> CliConfig:
    try:
        return load_config()
    except ConfigError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(1)


@click.group("config")
def config() -> None:
    """Named contexts (broker, prefix, credentials file) in ~/.config/shoal/config.yaml."""


@config.command("get-contexts")
def get_contexts() -> None:
    """List the contexts; the current one is marked with *."""
    cfg = _load()
    rows = [("CURRENT", "NAME", "BROKER", "PREFIX", "CREDENTIALS")]
    for name, ctx in sorted(cfg.contexts.items()):
        rows.append(
            (
                "*" if name == cfg.current else "",
                name,
                ctx.broker or "-",
                ctx.prefix or "-",
                ctx.credentials or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@config.command("current-context")
def current_context() -> None:
    """Print the current context's name."""
    cfg = _load()
    if cfg.current is None:
        click.echo("error: no current context (shoal config use-context NAME)", err=True)
        sys.exit(1)
    click.echo(cfg.current)


@config.command("use-context")
@click.argument("name")
def use_context(name: str) -> None:
    """Make NAME the context of every command without --context."""
    cfg = _load()
    if name not in cfg.contexts:
        known = ", ".join(sorted(cfg.contexts)) or "none"
        click.echo(f"error: no context {name!r} (known: {known})", err=True)
        sys.exit(1)
    cfg.current = name
    save_config(cfg)
    click.echo(f'switched to context "{name}"')


@config.command("set-context")
@click.argument("name")
@click.option("--broker", default=None, help="mqtt://host[:port] or mqtts://...")
@click.option("--prefix", default=None, help="topic prefix of the cluster")
@click.option(
    "--credentials",
    default=None,
    help="file holding USERNAME:PASSWORD for the broker",
)
def set_context(name: str, broker: str | None, prefix: str | None, credentials: str | None) -> None:
    """Create context NAME or change the settings given (the others stay)."""
    if broker is not None:
        try:
            BrokerURL.parse(broker)
        except ConfigError as err:
            raise click.BadParameter(str(err), param_hint="--broker") from err
    cfg = _load()
    existed = name in cfg.contexts
    old = cfg.contexts.get(name, Context())
    cfg.contexts[name] = Context(
        broker=broker if broker is not None else old.broker,
        prefix=prefix if prefix is not None else old.prefix,
        credentials=credentials if credentials is not None else old.credentials,
    )
    save_config(cfg)
    click.echo(f'context "{name}" {"modified" if existed else "created"}')


@config.command("delete-context")
@click.argument("name")
def delete_context(name: str) -> None:
    """Forget context NAME."""
    cfg = _load()
    if cfg.contexts.pop(name, None) is None:
        click.echo(f"error: no context {name!r}", err=True)
        sys.exit(1)
    if cfg.current == name:
        cfg.current = None
    save_config(cfg)
    click.echo(f'deleted context "{name}"')


COMMANDS: list[click.Command] = [config]
