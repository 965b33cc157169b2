"""Secrets on a node: asked of the controller when a replica needs them, kept in memory.

``SecretFetcher`` asks the controller (``cmd/secret_values``) for the secret versions a
spec pins, with this agent's public key; the answer comes sealed to it (``core/sealing``).
The controller gives a node only the versions its retained assignment pins.

``SecretFiles`` writes each value the spec mounts as a file under
``<secrets dir>/<prefix>/<node>/<replica>/``, which must be in memory (tmpfs or ramfs,
checked in ``/proc/self/mountinfo``; the agent refuses to write a secret to disk), and
the container bind-mounts each file read-only (Docker shows it in the container as a
read-only tmpfs file, as Swarm's ``/run/secrets``). The files go with the container.
A value asked for as an environment variable goes in the container's configuration
instead (Docker keeps that in its own state on disk, as for any env value).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from core.bus import Bus
from core.channels import SECRET_VALUES
from core.commands import Reply
from core.errors import BusError, RuntimeFailure
from core.sealing import Opener, SealError, label
from core.secrets import SecretValues, SecretValuesRequest, SecretWant
from core.spec import AppSpec

#: File systems that never write to a disk.
MEMORY_FS = frozenset({"tmpfs", "ramfs"})


class SecretFailure(RuntimeFailure):
    """A replica's secrets cannot be had or put in place: it is not started."""


def default_secrets_dir(mountinfo: str) -> Path:
    """``/run/shoal/secrets`` where ``/run`` is in memory, else ``/dev/shm/shoal/secrets``."""
    if in_memory(Path("/run/shoal/secrets"), mountinfo):
        return Path("/run/shoal/secrets")
    return Path("/dev/shm/shoal/secrets")


def read_mountinfo() -> str:
    try:
        return Path("/proc/self/mountinfo").read_text()
    except OSError:
        return ""


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def filesystem_of(path: Path, mountinfo: str) -> str | None:
    """The type of the file system holding ``path`` (the longest mount point above it)."""
    target = os.path.normpath(str(path))
    best, kind = -1, None
    for line in mountinfo.splitlines():
        head, sep, tail = line.partition(" - ")
        fields, rest = head.split(), tail.split()
        if not sep or len(fields) < 5 or not rest:
            continue
        point = _unescape(fields[4])
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= best:
            best, kind = len(point), rest[0]
    return kind


def in_memory(path: Path, mountinfo: str) -> bool:
    return filesystem_of(path, mountinfo) in MEMORY_FS


@dataclass(frozen=True, slots=True)
class SecretMounts:
    """What a container gets of its secrets: files to bind (host path, container path)
    and environment variables."""

    files: tuple[tuple[str, str], ...] = ()
    env: tuple[tuple[str, str], ...] = ()


def env_text(name: str, value: bytes) -> str:
    try:
        text = value.decode()
    except UnicodeDecodeError as err:
        raise SecretFailure(
            f"secret {name!r} is not UTF-8 text: it cannot be an env value"
        ) from err
    if "\0" in text:
        raise SecretFailure(f"secret {name!r} holds a NUL character: it cannot be an env value")
    return text


def file_name(target: str) -> str:
    """The host-side file name of a mount target (one level, readable)."""
    return target.strip("/").replace("/", "__")


class SecretFiles:
    """One node's secret files, replica by replica, in a memory file system."""

    def __init__(self, root: Path, prefix: str, node: str) -> None:
        self.base = root
        self.root = root / prefix.replace("/", "_") / node

    def check(self) -> None:
        if not in_memory(self.base, read_mountinfo()):
            raise SecretFailure(
                f"the secrets dir {self.base} is not in memory (tmpfs): a secret is never "
                "written to a node's disk (give --secrets-dir on a tmpfs)"
            )

    def path(self, replica: str) -> Path:
        return self.root / replica

    def has(self, replica: str, spec: AppSpec) -> bool:
        folder = self.path(replica)
        return all(
            (folder / file_name(use.path)).is_file() for use in spec.secrets if use.path is not None
        )

    def put(self, replica: str, spec: AppSpec, values: Mapping[str, bytes]) -> SecretMounts:
        """Write the spec's file secrets (0444 files in a 0700 folder); the mounts and env."""
        files: list[tuple[str, str]] = []
        env: list[tuple[str, str]] = []
        folder = self.path(replica)
        wants_files = any(use.path is not None for use in spec.secrets)
        if wants_files:
            self.check()
            try:
                self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
                folder.mkdir(exist_ok=True, mode=0o700)
            except OSError as err:
                raise SecretFailure(f"cannot make {folder}: {err.strerror}") from err
        for use in spec.secrets:
            value = values[use.name]
            if use.env is not None:
                env.append((use.env, env_text(use.name, value)))
            if use.path is None:
                continue
            host = folder / file_name(use.path)
            staged = host.with_name(host.name + ".new")
            try:
                fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o444)
                with os.fdopen(fd, "wb") as f:
                    f.write(value)
                os.chmod(staged, 0o444)
                os.replace(staged, host)
            except OSError as err:
                raise SecretFailure(f"cannot write secret {use.name!r}: {err.strerror}") from err
            files.append((str(host), use.path))
        return SecretMounts(tuple(files), tuple(env))

    def remove(self, replica: str) -> None:
        shutil.rmtree(self.path(replica), ignore_errors=True)

    def sweep(self, keep: set[str]) -> list[str]:
        """Remove the folders of replicas not in ``keep``; the ones removed."""
        try:
            present = [p.name for p in self.root.iterdir() if p.is_dir()]
        except OSError:
            return []
        gone = sorted(name for name in present if name not in keep)
        for name in gone:
            self.remove(name)
        return gone


#: Asked again after these delays while the controller has not yet seen the assignment
#: that pins the versions (it reads the same retained topic, a moment later or earlier).
NOT_YET = (0.1, 0.3, 0.6)


class SecretFetcher:
    """Asks the controller for the secret versions a spec pins."""

    async def _ask(self, spec: AppSpec, request: SecretValuesRequest) -> SecretValues | Reply:
        delays = iter(NOT_YET)
        while True:
            try:
                answer = await self.bus.request(SECRET_VALUES, request, timeout=self.timeout)
            except BusError as err:
                raise SecretFailure(f"secrets of {spec.key}: {err}") from err
            not_yet = isinstance(answer, Reply) and all(
                "runs no replica using" in line for line in answer.errors
            )
            delay = next(delays, None) if not_yet else None
            if delay is None:
                return answer
            await asyncio.sleep(delay)

    def __init__(self, bus: Bus, node: str, timeout: float = 10.0) -> None:
        self.bus = bus
        self.node = node
        self.timeout = timeout
        self.opener = Opener()

    async def fetch(self, spec: AppSpec) -> dict[str, bytes]:
        wants = [
            SecretWant(namespace=spec.namespace, name=use.name, version=use.version)
            for use in spec.secrets
            if use.version is not None
        ]
        if len(wants) != len(spec.secrets):
            raise SecretFailure(f"app {spec.key}: a secret has no version pinned by the controller")
        request = SecretValuesRequest(
            node=self.node, public_key=self.opener.public_key, wants=wants
        )
        answer = await self._ask(spec, request)
        if isinstance(answer, Reply):
            raise SecretFailure(
                f"secrets of {spec.key} refused: {'; '.join(answer.errors) or 'no reason'}"
            )
        pins = {w.name: w.version for w in wants}
        values: dict[str, bytes] = {}
        for item in answer.values:
            if item.namespace != spec.namespace or pins.get(item.name) != item.version:
                continue  # not what was asked for
            try:
                values[item.name] = self.opener.open(
                    answer.public_key, item.sealed, label(item.namespace, item.name, item.version)
                )
            except SealError as err:
                raise SecretFailure(f"secret {item.name!r} of {spec.key}: {err}") from err
        missing = [w.name for w in wants if w.name not in values]
        if missing:
            raise SecretFailure(f"secrets of {spec.key}: not delivered: {', '.join(missing)}")
        return values
