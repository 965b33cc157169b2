"""TCP listen ports belong to one app (pure): the balancer has one socket per port, so an
app may not ask (``tcp_routes[i].listen``) for a port another app of the cluster, in any
namespace, already has, nor for one another spec of the same batch asks for."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from core.keys import AppKey
from core.spec import AppSpec


def listen_port_errors(specs: Iterable[AppSpec], current: Mapping[AppKey, AppSpec]) -> list[str]:
    """One line per TCP listen port taken: by a current app (not replaced by this batch)
    or by an earlier spec of the batch."""
    batch = list(specs)
    replaced = {spec.key for spec in batch}
    owners: dict[int, AppKey] = {}
    for key, spec in sorted(current.items()):
        if key in replaced:
            continue
        for route in spec.tcp_routes:
            owners.setdefault(route.listen, key)
    errors: list[str] = []
    for spec in batch:
        for i, route in enumerate(spec.tcp_routes):
            owner = owners.get(route.listen)
            if owner is not None and owner != spec.key:
                errors.append(
                    f"{spec.key}: tcp_routes[{i}].listen: port {route.listen} is already used "
                    f"by app {owner}: a listen port belongs to one app"
                )
        for route in spec.tcp_routes:
            owners.setdefault(route.listen, spec.key)
    return errors
