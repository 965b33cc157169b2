"""Regions: a minimum of replicas in every reachable region (``placement.regions``), pure.

A region is the value of a node's ``region`` label (``core.spec.REGION_LABEL``). An app with
``placement: {regions: {min_per_region: N}}`` is spread over the label (as with
``spread_by: region``) and, on top of that soft balance, each *reachable* region gets ``N``
of its replicas before any region gets more:

- a replica is placed in a region short of its minimum when one has a node that fits
  (``short_regions``, ``with_regions``: the region becomes one more label constraint of the
  walk); when none fits, anywhere the app's constraints allow (a full region does not stop
  the app from running elsewhere);
- a region is reachable when it has a usable node (ready, heard from, not lost, not
  cordoned) that the app's constraints allow. A region cut off from the scheduler is not
  reachable, so its share is placed in the others: the minimum is a goal, never a reason
  to run fewer replicas;
- when a region becomes reachable again (a cut healed, a node joined) and is short while
  another holds more than the minimum, one replica moves: a new one is placed in the
  short region and one of the region holding the most (``surplus_victim``) becomes
  *leaving*, stopped once the new one is ready (as on a draining node). One move per app
  at a time, so the app never runs below its desired ready count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from core.spec import REGION_LABEL
from services.scheduler.model import NodeView, Replica
from services.scheduler.placement import removal_order

Constraints = tuple[tuple[str, frozenset[str]], ...]


def region_of(node: NodeView | None) -> str | None:
    return node.labels.get(REGION_LABEL) if node is not None else None


def region_counts(replicas: Iterable[Replica], nodes: Mapping[str, NodeView]) -> Counter[str]:
    """Active (not leaving) replicas per region; replicas on unlabelled nodes count nowhere."""
    counts: Counter[str] = Counter()
    for replica in replicas:
        if replica.leaving:
            continue
        region = region_of(nodes.get(replica.node))
        if region is not None:
            counts[region] += 1
    return counts


def reachable_regions(nodes: Iterable[NodeView]) -> frozenset[str]:
    """Regions with at least one usable, uncordoned node among ``nodes``."""
    return frozenset(
        region
        for node in nodes
        if node.usable and not node.cordoned and (region := region_of(node)) is not None
    )


def short_regions(
    counts: Mapping[str, int], reachable: Iterable[str], minimum: int
) -> frozenset[str]:
    """The reachable regions holding fewer than ``minimum`` active replicas."""
    return frozenset(r for r in reachable if counts.get(r, 0) < minimum)


def with_regions(constraints: Constraints, regions: Iterable[str]) -> Constraints:
    """``constraints`` narrowed to nodes of ``regions`` (intersected with a region
    constraint the app already has), in the sorted form the node rings are keyed by."""
    wanted = frozenset(regions)
    out = dict(constraints)
    existing = out.get(REGION_LABEL)
    out[REGION_LABEL] = wanted & existing if existing is not None else wanted
    return tuple(sorted(out.items()))


def surplus_victim(
    replicas: Iterable[Replica],
    nodes: Mapping[str, NodeView],
    counts: Mapping[str, int],
    minimum: int,
) -> Replica | None:
    """The replica to move out of a region holding more than ``minimum``: in the region
    holding the most, by the scale-down order (``placement.removal_order``)."""
    pool = [
        r
        for r in replicas
        if not r.leaving
        and (region := region_of(nodes.get(r.node))) is not None
        and counts.get(region, 0) > minimum
    ]
    if not pool:
        return None
    victims = removal_order(pool, nodes, 1, spread_by=REGION_LABEL, domains=counts)
    return victims[0] if victims else None
