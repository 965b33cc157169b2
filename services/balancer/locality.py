"""Region locality (pure): a balancer of one region sends traffic to the replicas of its
own region while any is ready, and to the other regions' otherwise.

A balancer started with ``--region R`` knows each node's region from its ``region`` label
(``nodes/<node>/info``) and each ready replica's node from health's verdict
(``ReplicaHealth.node``). ``split`` cuts an app's ready backends in two tiers:

- ``local``: on a node of region ``R``; the app's picker chooses among these alone;
- ``remote``: every other ready backend (another region, or a node whose region is not
  known), tried only when no local backend is left to try for the request (none ready, or
  every local one already tried or ejected: ``policy.py``).

Without a local backend the remote ones are the app's backends outright, so an app with no
replica in the region is served from the others as if locality did not exist, and a region
whose replicas all stopped fails over at once (health's verdict, or the first refused
connect). Without ``--region`` nothing changes: one tier, every ready backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # routes.py builds the tiers with ``split``
    from services.balancer.routes import Backend


@dataclass(frozen=True, slots=True)
class Tiers:
    local: tuple[Backend, ...]
    remote: tuple[Backend, ...]


def split(
    backends: Sequence[Backend],
    nodes: Mapping[str, str],
    regions: Mapping[str, str],
    region: str | None,
) -> Tiers:
    """``backends`` (replica id -> node in ``nodes``, node -> region in ``regions``) in
    the two tiers of ``region``; all local when ``region`` is None or none is there."""
    if region is None:
        return Tiers(tuple(backends), ())
    local = tuple(b for b in backends if regions.get(nodes.get(b.id, "")) == region)
    if not local:
        return Tiers(tuple(backends), ())
    remote = tuple(b for b in backends if regions.get(nodes.get(b.id, "")) != region)
    return Tiers(local, remote)
