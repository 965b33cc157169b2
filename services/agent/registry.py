"""Registry credentials: which registry an image comes from, and how to log in to it.

Credentials come from ``host=user:password`` entries (a file of them, one a line, or
``$SHOAL_REGISTRY_AUTH``; the ``--registry-auth`` flag too, though ``ps`` shows a command
line to every user of the machine) and from a Docker ``config.json``-style file
(``{"auths": {"host": {"auth": base64(user:pass)}}}`` or
``{"auths": {"host": {"username": ..., "password": ...}}}``). Pure functions.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass

DOCKER_HUB = "docker.io"


@dataclass(frozen=True, slots=True)
class Credential:
    username: str
    password: str

    def header(self, registry: str) -> dict[str, str]:
        """The body of Docker's ``X-Registry-Auth`` header (aiodocker encodes it)."""
        return {"username": self.username, "password": self.password, "serveraddress": registry}


def registry_of(image: str) -> str:
    """``127.0.0.1:5000/a/b:v1`` -> ``127.0.0.1:5000``; ``nginx`` -> ``docker.io``."""
    first, sep, _ = image.partition("/")
    if sep and ("." in first or ":" in first or first == "localhost"):
        return first
    return DOCKER_HUB


def normalize_registry(host: str) -> str:
    host = host.strip().removeprefix("https://").removeprefix("http://").rstrip("/")
    host = host.removesuffix("/v1").removesuffix("/v2")
    if host in ("index.docker.io", "registry-1.docker.io", "registry.hub.docker.com"):
        return DOCKER_HUB
    return host


def parse_auth_flag(value: str) -> tuple[str, Credential]:
    """``host=user:password`` (the password may contain ':' and '=')."""
    host, sep, userpass = value.partition("=")
    user, sep2, password = userpass.partition(":")
    if not sep or not sep2 or not host.strip() or not user:
        # the value is not repeated: it may hold a password
        raise ValueError(
            f"registry auth for {host.strip()!r} must look like host=user:password"
            if sep
            else "registry auth must look like host=user:password"
        )
    return normalize_registry(host), Credential(user, password)


def parse_auth_lines(text: str, where: str) -> dict[str, Credential]:
    """A file of ``host=user:password`` entries, one a line; blank lines and lines
    starting with ``#`` are skipped. Errors name the line, never its password."""
    out: dict[str, Credential] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        try:
            host, credential = parse_auth_flag(line)
        except ValueError:
            raise ValueError(f"{where}:{number} must look like host=user:password") from None
        out[host] = credential
    return out


def parse_config(text: str) -> dict[str, Credential]:
    """Credentials from a Docker ``config.json``-style document."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ValueError(f"registry config is not JSON: {err}") from err
    auths = data.get("auths") if isinstance(data, dict) else None
    if not isinstance(auths, dict):
        raise ValueError('registry config needs an "auths" object')
    out: dict[str, Credential] = {}
    for host, entry in auths.items():
        if not isinstance(entry, dict):
            raise ValueError(f"registry config: entry for {host!r} must be an object")
        if "auth" in entry:
            try:
                decoded = base64.b64decode(str(entry["auth"])).decode()
            except (ValueError, UnicodeDecodeError) as err:
                raise ValueError(f"registry config: bad auth for {host!r}") from err
            user, sep, password = decoded.partition(":")
            if not sep:
                raise ValueError(f"registry config: auth for {host!r} is not user:password")
        elif "username" in entry:
            user, password = str(entry["username"]), str(entry.get("password", ""))
        else:
            raise ValueError(f"registry config: entry for {host!r} has no credentials")
        out[normalize_registry(host)] = Credential(user, password)
    return out


def credential_for(image: str, creds: dict[str, Credential]) -> tuple[str, Credential | None]:
    registry = registry_of(image)
    return registry, creds.get(registry)


def pull_reference(image: str) -> str:
    """The reference ``docker pull`` uses: a tag defaults to ``latest``."""
    name = image.rsplit("/", 1)[-1]
    if "@" in image or ":" in name:
        return image
    return f"{image}:latest"
