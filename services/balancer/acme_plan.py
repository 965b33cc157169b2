"""ACME decisions (pure, time passed in): which hosts need a certificate, when one is
renewed, and how long a host waits after failed attempts.

- A host needs a certificate when an app's route says ``tls: {acme: true}``; among apps
  naming the same host the first by key wins (as routing does).
- A held certificate is renewed once a third of its lifetime is left (at most 30 days
  before it expires: Let's Encrypt's 90-day certificates renew 30 days ahead, pebble's
  short ones at two thirds of their life); an expired one is renewed at once.
- After ``n`` failed attempts in a row a host waits ``base * 2**(n-1)`` seconds, at most
  ``cap``, from the last failure; a success forgets the failures. A ``retry_after``
  (the shell sets it to ``cap`` from now when the server answered ``rateLimited``) pushes
  the next attempt further when it is later.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from core.keys import AppKey
from core.state import AppState

#: at most this long before expiry a certificate is renewed
RENEW_AHEAD_MAX = 30 * 24 * 3600.0


@dataclass(frozen=True, slots=True)
class Held:
    """A certificate this instance serves (wall-clock seconds)."""

    not_before: float
    not_after: float


@dataclass(frozen=True, slots=True)
class Failures:
    """The failed attempts in a row for one host."""

    count: int
    last: float
    reason: str
    retry_after: float = 0.0  # not before this wall-clock time (rate limited), 0: none


@dataclass(frozen=True, slots=True)
class Plan:
    """What to do now: the hosts to order a certificate for, and when to look again."""

    issue: list[str] = field(default_factory=list)
    wake_at: float | None = None


def acme_hosts(apps: Iterable[AppState]) -> dict[str, AppKey]:
    """Host -> the app whose route asks ACME for its certificate."""
    out: dict[str, AppKey] = {}
    for app in sorted(apps, key=lambda a: (a.namespace, a.name)):
        route = app.spec.route
        if route is None or route.tls is None or not route.tls.acme or route.host is None:
            continue
        out.setdefault(route.host.lower().rstrip("."), AppKey(app.namespace, app.name))
    return out


def renew_at(held: Held) -> float:
    """When ``held`` is to be renewed."""
    lifetime = max(0.0, held.not_after - held.not_before)
    return held.not_after - min(lifetime / 3, RENEW_AHEAD_MAX)


def retry_at(failures: Failures, base: float, cap: float) -> float:
    """The earliest next attempt after ``failures``."""
    wait = min(cap, base * 2.0 ** max(0, failures.count - 1))
    return max(failures.last + wait, failures.retry_after)


def failed(previous: Failures | None, now: float, reason: str, retry_after: float = 0) -> Failures:
    """The failures after one more failed attempt at ``now``."""
    count = previous.count + 1 if previous is not None else 1
    return Failures(count, now, reason, retry_after)


def plan(
    now: float,
    hosts: Iterable[str],
    held: Mapping[str, Held],
    failures: Mapping[str, Failures],
    *,
    base: float,
    cap: float,
) -> Plan:
    """The hosts due for a certificate at ``now`` (sorted), and the next time one is due."""
    issue: list[str] = []
    wake_at: float | None = None
    for host in sorted(set(hosts)):
        cert = held.get(host)
        at = renew_at(cert) if cert is not None else now
        failure = failures.get(host)
        if failure is not None:
            at = max(at, retry_at(failure, base, cap))
        if at <= now:
            issue.append(host)
        elif wake_at is None or at < wake_at:
            wake_at = at
    return Plan(issue, wake_at)
