"""Content-addressed tags for images built from compose ``build:`` sections. Pure.

The tag is a digest of everything the build reads: the files of the context (path, mode
and content; symbolic links by their target), the Dockerfile, the target and the build
arguments. The same context gives the same tag on every machine and every apply, so an
unchanged service is neither rebuilt nor rolled out again, and a changed one gets a new
tag, hence a new revision. (Files ``.dockerignore`` leaves out still count: at worst an
ignored file's change builds an identical image under a new tag.)
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass

from core.compose import Build


@dataclass(frozen=True, slots=True)
class ContextFile:
    """One entry of a build context: its path relative to the context, its mode bits, and
    its content (a symbolic link's target for a link)."""

    path: str
    mode: int
    content: bytes


def build_digest(build: Build, files: Iterable[ContextFile], dockerfile: bytes) -> str:
    """The hex digest naming the image ``build`` makes from ``files``."""
    digest = hashlib.sha256()

    def put(part: bytes) -> None:
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)

    put(b"shoal-compose-build/1")
    put(build.dockerfile.encode())
    put(dockerfile)
    put((build.target or "").encode())
    for key, value in build.args:
        put(f"{key}={value}".encode())
    put(b"files")
    for entry in sorted(files, key=lambda f: f.path):
        put(entry.path.encode())
        put(f"{entry.mode & 0o7777:o}".encode())
        put(entry.content)
    return digest.hexdigest()


def image_tag(build: Build, digest: str, registry: str | None = None) -> str:
    """``[registry/]repository:<12 hex digits>``."""
    repository = build.repository
    if registry:
        repository = f"{registry.rstrip('/')}/{repository}"
    return f"{repository}:{digest[:12]}"
