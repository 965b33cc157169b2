"""The route table (pure): which app serves a (host, path), and its ready backends.

Matching rules, in order:

1. a route whose host equals the request's host, longest path prefix first;
2. a wildcard route (``*.example.com``), the longest suffix first, then longest prefix;
3. a route without host, longest path prefix first.

A prefix matches at a segment boundary: ``/api`` matches ``/api`` and ``/api/x`` but not
``/apix``. Ties (two apps with the same host and path) go to the app key that sorts first,
so every balancer instance picks the same one.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from core.keys import AppKey
from core.spec import Route
from core.state import AppHealth, AppState
from services.balancer.locality import split


@dataclass(frozen=True, slots=True)
class Backend:
    """One ready replica."""

    id: str
    revision: int
    host: str
    port: int
    weight: float = 1.0  # share of the app's traffic, for ``weighted``
    base: str = ""  # "http://host:port", built once

    @classmethod
    def make(cls, id: str, revision: int, endpoint: str, weight: float = 1.0) -> Backend | None:
        host, sep, port = endpoint.rpartition(":")
        if not sep or not port.isdigit():
            return None
        host = host.strip("[]")
        shown = f"[{host}]" if ":" in host else host
        return cls(id, revision, host, int(port), weight, f"http://{shown}:{port}")


@dataclass(slots=True)
class AppRoute:
    """One routed app: the balancer's view, rebuilt when its state or health changes."""

    key: AppKey
    host: str | None
    path: str
    algorithm: str
    hash_on: str
    backends: list[Backend] = field(default_factory=list)
    terminating: frozenset[str] = frozenset()
    desired: int = 0
    scale_to_zero: bool = False
    redirect: bool = False  # plain HTTP is answered 308 to HTTPS (``tls.redirect``)
    #: ready backends of other regions, tried when none of ``backends`` is left
    #: (``locality.py``; empty without ``--region``)
    remote: list[Backend] = field(default_factory=list)

    @property
    def hash_header(self) -> str | None:
        if self.hash_on.startswith("header:"):
            return self.hash_on[len("header:") :]
        return None


def version_weights(app: AppState) -> dict[int, float]:
    """Traffic share per revision. Explicit ``AppVersion.weight``s are honoured (the rest
    of 100 is split among versions without one); without weights, revisions share by their
    replica counts."""
    versions = [v for v in app.versions if v.replicas > 0 or v.weight]
    if not versions:
        return {app.revision: 1.0}
    if all(v.weight is None for v in versions):
        total = sum(v.replicas for v in versions) or 1
        return {v.revision: v.replicas / total for v in versions}
    fixed = sum(v.weight or 0 for v in versions)
    free = [v for v in versions if v.weight is None]
    rest = max(0.0, 100.0 - fixed)
    out = {v.revision: float(v.weight or 0) for v in versions if v.weight is not None}
    for v in free:
        out[v.revision] = rest / len(free)
    total_weight: float = sum(out.values()) or 1.0
    return {rev: w / total_weight for rev, w in out.items()}


def app_route(
    app: AppState,
    health: AppHealth | None,
    regions: Mapping[str, str] | None = None,
    region: str | None = None,
) -> AppRoute | None:
    """The route of one app, or None when it declares none. With ``region`` (and the
    nodes' ``regions``) the backends of that region come first (``locality.split``)."""
    route: Route | None = app.spec.route
    if route is None:
        return None
    ready = health.ready if health is not None else []
    terminating = (
        frozenset(r.id for r in health.replicas if r.terminating) if health else frozenset()
    )
    shares = version_weights(app)
    per_revision: dict[int, int] = {}
    for r in ready:
        per_revision[r.revision] = per_revision.get(r.revision, 0) + 1
    backends: list[Backend] = []
    for r in sorted(ready, key=lambda r: r.id):
        share = shares.get(r.revision)
        if share is None:  # a revision the app no longer lists: keep it, at the lowest share
            share = min(shares.values(), default=1.0)
        backend = Backend.make(r.id, r.revision, r.endpoint, share / per_revision[r.revision])
        if backend is not None:
            backends.append(backend)
    remote: list[Backend] = []
    if region is not None:
        tiers = split(backends, {r.id: r.node for r in ready}, regions or {}, region)
        backends, remote = list(tiers.local), list(tiers.remote)
    autoscale = app.spec.autoscale
    return AppRoute(
        key=AppKey(app.namespace, app.name),
        host=route.host,
        path=route.path,
        algorithm=route.algorithm,
        hash_on=route.hash_on,
        backends=backends,
        terminating=terminating,
        desired=app.replicas,
        scale_to_zero=autoscale is not None and autoscale.min == 0,
        redirect=route.tls is not None and route.tls.redirect,
        remote=remote,
    )


def prefix_matches(prefix: str, path: str) -> bool:
    if prefix == "/" or path == prefix:
        return True
    if prefix.endswith("/"):
        return path.startswith(prefix)
    return path.startswith(prefix) and path[len(prefix)] == "/"


#: a host name or address that may go into a Location (nothing that ends the authority)
REDIRECT_HOST = re.compile(r"^[a-z0-9.:_-]+$")


def https_location(host: str, target: str, port: int | None) -> str | None:
    """Where a plain HTTP request is redirected: the same host and request target over
    HTTPS, on ``port`` (None or 443: the default port, not written). None for a host that
    is no name or address (``evil/x.example.com`` matches a wildcard route, and must not
    become ``https://evil/...``)."""
    if not REDIRECT_HOST.match(host):
        return None
    shown = f"[{host}]" if ":" in host else host
    suffix = "" if port in (None, 443) else f":{port}"
    return f"https://{shown}{suffix}{target if target.startswith('/') else '/' + target}"


def normalize_host(host: str | None) -> str:
    """``Example.COM:8080`` -> ``example.com``; ``[::1]:80`` -> ``::1``."""
    if not host:
        return ""
    host = host.strip().lower()
    if host.startswith("["):
        end = host.find("]")
        return host[1:end] if end > 0 else host
    if host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".")


class RouteTable:
    """An immutable index over routes; build a new one when something changes."""

    __slots__ = ("_by_host", "_hostless", "_wildcards", "routes")

    def __init__(self, routes: Iterable[AppRoute]) -> None:
        self.routes: dict[AppKey, AppRoute] = {
            r.key: r for r in sorted(routes, key=lambda r: r.key)
        }
        by_host: dict[str, list[AppRoute]] = {}
        wildcards: dict[str, list[AppRoute]] = {}
        hostless: list[AppRoute] = []
        for r in self.routes.values():
            if r.host is None:
                hostless.append(r)
            elif r.host.startswith("*."):
                wildcards.setdefault(r.host[1:], []).append(r)  # key ".example.com"
            else:
                by_host.setdefault(r.host, []).append(r)

        def order(rs: list[AppRoute]) -> list[AppRoute]:
            return sorted(rs, key=lambda r: (-len(r.path), r.key))

        self._by_host = {h: order(rs) for h, rs in by_host.items()}
        self._wildcards = sorted(
            ((suffix, order(rs)) for suffix, rs in wildcards.items()), key=lambda x: -len(x[0])
        )
        self._hostless = order(hostless)

    def match(self, host: str, path: str) -> AppRoute | None:
        """``host`` already normalized (see ``normalize_host``)."""
        candidates = self._by_host.get(host)
        if candidates:
            for r in candidates:
                if prefix_matches(r.path, path):
                    return r
        for suffix, rs in self._wildcards:
            if host.endswith(suffix) and len(host) > len(suffix):
                for r in rs:
                    if prefix_matches(r.path, path):
                        return r
        for r in self._hostless:
            if prefix_matches(r.path, path):
                return r
        return None


_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_HEX = frozenset("0123456789abcdefABCDEF")


def normalize_path(path: str) -> str | None:
    """The path a request is routed by and forwarded with, the same in both engines; None
    when it is malformed (the balancer answers 400).

    Percent-escapes of unreserved characters are decoded (``/%70ublic`` is ``/public``),
    other escapes kept with upper-case hex (``%2F`` stays an escaped byte, never a ``/``),
    and dot segments removed (RFC 3986 5.2.4: ``/public/../admin`` is ``/admin``). A path
    that is not origin-form (``*``, ``http://...``) is left as it is.
    """
    if not path.startswith("/") or ("%" not in path and "/." not in path):
        return path
    if "%" in path:
        out: list[str] = []
        i, n = 0, len(path)
        while i < n:
            ch = path[i]
            if ch != "%":
                out.append(ch)
                i += 1
                continue
            pair = path[i + 1 : i + 3]
            if len(pair) != 2 or pair[0] not in _HEX or pair[1] not in _HEX:
                return None
            decoded = chr(int(pair, 16))
            out.append(decoded if decoded in _UNRESERVED else "%" + pair.upper())
            i += 3
        path = "".join(out)
    if "/." not in path:
        return path
    segments: list[str] = []
    parts = path.split("/")[1:]
    for index, segment in enumerate(parts):
        last = index == len(parts) - 1
        if segment == ".":
            if last:
                segments.append("")
        elif segment == "..":
            if segments:
                segments.pop()
            if last:
                segments.append("")
        else:
            segments.append(segment)
    return "/" + "/".join(segments)
