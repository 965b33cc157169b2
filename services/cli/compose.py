"""Compose files in ``shoal apply|diff|delete -f``: read, translate, build, push.

The translation is ``core.compose`` (pure); here is the I/O around it: the ``.env`` file
beside the compose file and the process environment (which wins), ``env_file`` files, and
the images of ``build:`` sections, built with the docker CLI on the local engine and tagged
by content (``core.compose_build``). With ``--registry HOST`` (or ``SHOAL_REGISTRY``) the
tag names that registry and the image is pushed there, so that every node's agent can pull
it; without, the image stays on the local engine, which is enough for ``shoal up`` and for
agents sharing it.

Why the docker CLI and not the engine API (aiodocker): the CLI sends the context the way
``docker build`` users expect (``.dockerignore``, BuildKit when it is installed, the legacy
builder otherwise) and pushes with the user's own registry login (``docker login``,
credential helpers), none of which the API does by itself; compose, too, hands builds to
the CLI's builder.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import click

from core.compose import Build, SecretSource, is_compose, read_compose, translate
from core.compose_build import ContextFile, build_digest, image_tag
from core.compose_env import parse_env_file
from core.errors import ShoalError, SpecError
from core.secrets import MAX_SECRET_BYTES

Mode = Literal["apply", "diff", "delete"]


@dataclass(frozen=True)
class ComposeOptions:
    """What ``apply``/``diff``/``delete`` add for compose files."""

    namespace: str | None = None
    allow_unsupported: bool = False
    registry: str | None = None


def compose_options(func: Callable[..., Any]) -> Callable[..., Any]:
    """``-n``, ``--allow-unsupported`` and ``--registry`` (as ``compose`` keyword)."""

    @click.option(
        "-n",
        "--namespace",
        default=None,
        help="compose files: the namespace (compose's project name)  [default: "
        "COMPOSE_PROJECT_NAME, the file's name:, else its folder's name]",
    )
    @click.option(
        "--allow-unsupported",
        is_flag=True,
        help="compose files: warn about keys Shoal cannot honour instead of refusing the file",
    )
    @click.option(
        "--registry",
        envvar="SHOAL_REGISTRY",
        show_envvar=True,
        default=None,
        help="compose files: push images built from build: to this registry (host[:port]) "
        "so every node can pull them  [default: keep them on the local engine]",
    )
    def wrapper(
        *args: Any,
        namespace: str | None,
        allow_unsupported: bool,
        registry: str | None,
        **kwargs: Any,
    ) -> Any:
        kwargs["compose"] = ComposeOptions(namespace, allow_unsupported, registry)
        return func(*args, **kwargs)

    wrapper.__name__ = func.__name__
    wrapper.__doc__ = func.__doc__
    return wrapper


@dataclass(frozen=True)
class ComposeSecret:
    """A secret (or config) of a compose file, its value read: created on apply."""

    namespace: str
    name: str
    value: bytes


def compose_documents(
    text: str, source: str, options: ComposeOptions, mode: Mode
) -> list[dict[str, Any]] | None:
    """The app documents of a compose file (None: ``text`` is not one); see
    ``compose_file``."""
    found = compose_file(text, source, options, mode)
    return None if found is None else found[0]


def compose_file(
    text: str, source: str, options: ComposeOptions, mode: Mode
) -> tuple[list[dict[str, Any]], list[ComposeSecret]] | None:
    """The app documents of a compose file and the secrets to create for it (None:
    ``text`` is not one). ``apply`` builds (and pushes) the images of ``build:`` sections
    and reads the secrets' values; ``diff`` only computes the images' tags; ``delete``
    needs names only (unsupported keys are then no obstacle). Raises ``SpecError`` for an
    invalid file, ``ShoalError`` for a failed build."""
    try:
        data, raw = read_compose(text, source)
    except SpecError:
        return None  # not one YAML document: the app spec reader says what is wrong
    if not is_compose(data):
        return None
    folder = Path(source).resolve().parent if source != "<stdin>" else Path.cwd()
    env = dict(os.environ)
    dotenv = folder / ".env"
    if dotenv.is_file():
        try:
            env = {**parse_env_file(dotenv.read_text(), str(dotenv), os.environ), **os.environ}
        except ValueError as err:
            raise SpecError([str(err)]) from err
    compose = translate(
        data,
        raw=raw,
        folder=str(folder),
        env=env,
        read_text=_read_text,
        namespace=options.namespace,
        allow_unsupported=options.allow_unsupported or mode == "delete",
        source=source,
    )
    if mode != "delete":
        for warning in compose.warnings:
            click.echo(f"warning: {source}: {warning}", err=True)
    if mode == "delete":  # the secrets it creates, by name (delete -f removes them too)
        return compose.apps, [
            ComposeSecret(compose.namespace, x.name, b"") for x in compose.secrets
        ]
    secrets = _secret_values(compose.namespace, compose.secrets) if mode == "apply" else []
    if not compose.builds:
        return compose.apps, secrets
    tags = {}
    for app, build in compose.builds.items():
        tag = image_tag(build, _digest(build), options.registry)
        if mode == "apply":
            _build(build, tag, push=options.registry is not None)
        tags[app] = tag
    return compose.with_images(tags), secrets


def _secret_values(namespace: str, sources: list[SecretSource]) -> list[ComposeSecret]:
    out: list[ComposeSecret] = []
    errors: list[str] = []
    for source in sources:
        if source.file is None:
            out.append(ComposeSecret(namespace, source.name, (source.value or "").encode()))
            continue
        try:
            value = Path(source.file).read_bytes()
        except OSError as err:
            errors.append(f"secret {source.name}: file {source.file}: {err.strerror}")
            continue
        if len(value) > MAX_SECRET_BYTES:
            errors.append(
                f"secret {source.name}: {source.file} is {len(value)} bytes; a secret holds "
                f"at most {MAX_SECRET_BYTES}"
            )
            continue
        out.append(ComposeSecret(namespace, source.name, value))
    if errors:
        raise SpecError(errors)
    return out


def _read_text(path: str) -> str | None:
    try:
        return Path(path).read_text()
    except FileNotFoundError:
        return None
    except OSError as err:
        raise SpecError([f"{path}: {err.strerror}"]) from err


def _dockerfile(build: Build) -> Path:
    path = Path(build.dockerfile)
    return path if path.is_absolute() else Path(build.context) / path


def context_files(root: Path) -> list[ContextFile]:
    """Every file and link under ``root`` (``.git`` left out), for the tag's digest."""
    out: list[ContextFile] = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != ".git")
        here = Path(folder)
        for name in [*files, *(d for d in dirs if (here / d).is_symlink())]:
            path = here / name
            info = path.lstat()
            relative = path.relative_to(root).as_posix()
            if stat.S_ISLNK(info.st_mode):
                content = os.readlink(path).encode()
            elif stat.S_ISREG(info.st_mode):
                content = path.read_bytes()
            else:
                continue
            out.append(ContextFile(relative, info.st_mode, content))
    return out


def _digest(build: Build) -> str:
    context = Path(build.context)
    if not context.is_dir():
        raise SpecError([f"service {build.service}: build context {context} is not a folder"])
    dockerfile = _dockerfile(build)
    try:
        text = dockerfile.read_bytes()
    except OSError as err:
        raise SpecError(
            [f"service {build.service}: build dockerfile {dockerfile}: {err.strerror}"]
        ) from err
    return build_digest(build, context_files(context), text)


def _docker(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    docker = shutil.which("docker")
    if docker is None:
        raise ShoalError("build: needs the docker CLI on this machine (apt-get install docker.io)")
    return subprocess.run([docker, *args], capture_output=True, text=True, env=env, check=False)


def _build(build: Build, tag: str, push: bool) -> None:
    """Build ``tag`` unless the engine has it already (the tag names the content)."""
    if _docker("image", "inspect", "--format", "{{.Id}}", tag).returncode != 0:
        click.echo(f"building {tag} for service {build.service}", err=True)
        env = dict(os.environ)
        if _docker("buildx", "version").returncode != 0:
            env["DOCKER_BUILDKIT"] = "0"  # no BuildKit plugin: the legacy builder
        args = ["build", "-q", "-t", tag, "-f", str(_dockerfile(build))]
        if build.target:
            args += ["--target", build.target]
        for key, value in build.args:
            args += ["--build-arg", f"{key}={value}"]
        done = _docker(*args, build.context, env=env)
        if done.returncode != 0:
            raise ShoalError(
                f"service {build.service}: docker build failed: " + _last_lines(done.stderr)
            )
    if push:
        click.echo(f"pushing {tag}", err=True)
        done = _docker("push", tag)
        if done.returncode != 0:
            raise ShoalError(
                f"service {build.service}: docker push {tag} failed: " + _last_lines(done.stderr)
            )


def _last_lines(text: str, count: int = 5) -> str:
    lines = [
        line
        for line in text.strip().splitlines()
        if line.strip()
        and "legacy builder is deprecated" not in line
        and "BuildKit is currently disabled" not in line
        and "environment-variable" not in line
    ]
    return " | ".join(lines[-count:]) or "no output"
