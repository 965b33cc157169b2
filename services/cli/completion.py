"""``shoal completion bash|zsh|fish``: click's shell completion, plus app, node and replica
names read from the retained state of the cluster (a short timeout: a dead broker means no
names, never a hung prompt)."""

from __future__ import annotations

import asyncio
from typing import Any

import click
from click.shell_completion import CompletionItem, get_completion_class

from services.cli.views import Snapshot

#: How long completion waits for the broker and the retained state, in seconds.
COMPLETION_TIMEOUT = 1.5
SHELLS = ("bash", "zsh", "fish")


def candidate_names(snap: Snapshot, kind: str, namespace: str | None) -> list[str]:
    """Names of ``kind`` (app, node, replica; plural too) in the snapshot, sorted."""
    kind = kind.rstrip("s")
    if kind == "app":
        ns = namespace or "default"
        return sorted(key.name for key in snap.apps if key.namespace == ns)
    if kind == "node":
        return sorted(snap.nodes)
    if kind == "replica":
        return [r.id for r in snap.replicas() if not namespace or r.namespace == namespace]
    return []


def _snapshot_for(ctx: click.Context) -> Snapshot | None:
    from services.cli.apps import fetch_snapshot
    from services.cli.client import resolve_options

    params = ctx.params
    try:
        opts = resolve_options(
            params.get("broker"), params.get("prefix"), COMPLETION_TIMEOUT, params.get("context")
        )

        async def read() -> Snapshot:
            async with asyncio.timeout(COMPLETION_TIMEOUT):
                return await fetch_snapshot(opts)

        return asyncio.run(read())
    except Exception:  # completion must never fail the shell: no names instead
        return None


def _complete(kind: str | None, ctx: click.Context, incomplete: str) -> list[CompletionItem]:
    kind = kind or str(ctx.params.get("what") or ctx.params.get("kind") or "")
    snap = _snapshot_for(ctx)
    if snap is None or not kind:
        return []
    names = candidate_names(snap, kind, ctx.params.get("namespace"))
    return [CompletionItem(n) for n in names if n.startswith(incomplete)]


def complete_object(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """For a NAME after a kind argument (``get app NAME``, ``describe node NAME``)."""
    return _complete(None, ctx, incomplete)


def complete_app(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    return _complete("app", ctx, incomplete)


def complete_node(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    return _complete("node", ctx, incomplete)


def completion_script(shell: str, prog: str = "shoal") -> str:
    cls = get_completion_class(shell)
    if cls is None:
        raise click.BadParameter(f"no completion for {shell}", param_hint="SHELL")
    from services.cli.main import cli

    return str(cls(cli, {}, prog, "_SHOAL_COMPLETE").source())


@click.command()
@click.argument("shell", type=click.Choice(SHELLS))
def completion(shell: str) -> None:
    """Print the completion script of SHELL (commands, options, app and node names).

    \b
    bash:  echo 'eval "$(shoal completion bash)"' >> ~/.bashrc
    zsh:   echo 'eval "$(shoal completion zsh)"' >> ~/.zshrc
    fish:  shoal completion fish > ~/.config/fish/completions/shoal.fish
    """
    click.echo(completion_script(shell), nl=False)


COMMANDS: list[click.Command] = [completion]
