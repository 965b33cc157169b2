"""East-west networking, the part the agent and the mesh service agree on (pure, no I/O).

Every node has one Docker bridge network per namespace (``network_name``), with a /24 of
its own from the mesh pool (10.200.0.0/16 by default): containers get addresses from the
lower half (``.2``-``.126``, gateway ``.1``), and the node's mesh service gives each app of
the namespace a virtual IP from the upper half (``.128``-``.254``), added to the bridge on
the host. A container reaches ``db:5432`` as: its resolver asks Docker's embedded DNS,
which forwards a name it does not know to the node's mesh DNS on the gateway (``Dns`` of
the container); the mesh answers the app's VIP; the mesh's relay listening on
``VIP:5432`` forwards the connection to a ready replica's endpoint on whichever node it
runs. A container cannot reach the node addresses (127.0.0.x here), so the hop to another
node always starts on the host side, in the mesh.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from core.keys import AppKey
from core.spec import AppSpec

#: The DNS suffix of the cluster: ``<app>.<namespace>.shoal.internal`` (``.internal`` is
#: reserved for private use, so it never leaks into the public DNS).
DOMAIN = "shoal.internal"
#: Where node networks take their /24s from (``shoal run mesh|agent --mesh-pool``).
DEFAULT_POOL = "10.200.0.0/16"

LABEL_PREFIX = "shoal.prefix"
LABEL_NODE = "shoal.node"
LABEL_NS = "shoal.ns"
LABEL_MESH = "shoal.mesh"

_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")


def _digest(text: str, n: int) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def network_name(prefix: str, node: str, namespace: str) -> str:
    """The Docker network of one namespace on one node (unique per cluster prefix)."""
    safe = _UNSAFE.sub("-", f"{prefix}.{node}.{namespace}")
    return f"shoal-{safe}-{_digest(f'{prefix}/{node}/{namespace}', 6)}"


def bridge_name(network: str) -> str:
    """The Linux bridge of a node network: 15 characters at most (IFNAMSIZ)."""
    return f"shl{_digest(network, 12)}"


def network_labels(prefix: str, node: str, namespace: str) -> dict[str, str]:
    return {LABEL_MESH: "true", LABEL_PREFIX: prefix, LABEL_NODE: node, LABEL_NS: namespace}


def network_filters(prefix: str, node: str) -> list[str]:
    """Docker ``label`` filters selecting exactly one node's networks."""
    return [f"{LABEL_MESH}=true", f"{LABEL_PREFIX}={prefix}", f"{LABEL_NODE}={node}"]


def subnet_candidates(pool: str, network: str) -> Iterator[ipaddress.IPv4Network]:
    """Every /24 of ``pool``, starting at one chosen by the network's name (two nodes
    creating networks at once rarely try the same one first)."""
    net = ipaddress.IPv4Network(pool)
    if net.prefixlen > 24:
        raise ValueError(f"mesh pool {pool} is smaller than a /24")
    subnets = list(net.subnets(new_prefix=24))
    start = int(_digest(network, 8), 16) % len(subnets)
    for i in range(len(subnets)):
        yield subnets[(start + i) % len(subnets)]


def create_body(
    prefix: str, node: str, namespace: str, subnet: ipaddress.IPv4Network
) -> dict[str, Any]:
    """The body of ``POST /networks/create`` for one node network."""
    name = network_name(prefix, node, namespace)
    lower = ipaddress.IPv4Network((subnet.network_address, 25))
    return {
        "Name": name,
        "CheckDuplicate": True,
        "Driver": "bridge",
        "Labels": network_labels(prefix, node, namespace),
        "IPAM": {
            "Driver": "default",
            "Config": [{"Subnet": str(subnet), "IPRange": str(lower), "Gateway": str(subnet[1])}],
        },
        "Options": {"com.docker.network.bridge.name": bridge_name(name)},
    }


@dataclass(frozen=True, slots=True)
class NodeNetwork:
    """One namespace's network on one node, as Docker reports it."""

    name: str
    namespace: str
    subnet: ipaddress.IPv4Network
    gateway: ipaddress.IPv4Address
    bridge: str

    def holds(self, address: str) -> bool:
        try:
            return ipaddress.IPv4Address(address) in self.subnet
        except ValueError:
            return False


def parse_network(data: Mapping[str, Any]) -> NodeNetwork | None:
    """A ``GET /networks/<id>`` answer -> NodeNetwork (None if it is not a mesh network)."""
    labels = data.get("Labels") or {}
    configs = (data.get("IPAM") or {}).get("Config") or []
    if labels.get(LABEL_MESH) != "true" or not configs:
        return None
    try:
        subnet = ipaddress.IPv4Network(configs[0]["Subnet"])
        gateway = ipaddress.IPv4Address(configs[0].get("Gateway") or subnet[1])
    except (KeyError, ValueError):
        return None
    name = str(data.get("Name", ""))
    options = data.get("Options") or {}
    bridge = str(options.get("com.docker.network.bridge.name") or bridge_name(name))
    return NodeNetwork(name, str(labels.get(LABEL_NS, "")), subnet, gateway, bridge)


def attach(network: NodeNetwork) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a container of ``network.namespace`` gets: (HostConfig fields, NetworkingConfig).

    Its DNS server is the node's mesh on the gateway and its search domain its namespace's,
    so ``db`` and ``db.<namespace>`` both resolve, also for apps created later.
    """
    host = {
        "NetworkMode": network.name,
        "Dns": [str(network.gateway)],
        "DnsSearch": [f"{network.namespace}.{DOMAIN}"],
    }
    return host, {"EndpointsConfig": {network.name: {}}}


# -- virtual IPs ---------------------------------------------------------------------------


def vip_range(subnet: ipaddress.IPv4Network) -> list[ipaddress.IPv4Address]:
    """The upper half of a /24 minus its broadcast address: .128-.254 (127 apps)."""
    hosts = list(subnet.hosts())
    half = subnet.num_addresses // 2
    return [a for a in hosts if int(a) - int(subnet.network_address) >= half]


def allocate_vips(
    apps: Iterable[str],
    subnet: ipaddress.IPv4Network,
    previous: Mapping[str, ipaddress.IPv4Address],
) -> dict[str, ipaddress.IPv4Address]:
    """Sticky allocation of one VIP per app name of one namespace.

    An app keeps the VIP it had (``previous``); a new one takes the address its name hashes
    to, or the next free one. A fresh mesh (nothing previous) allocates in name order, so
    the result is the same on every start unless two names collided. Apps beyond the range
    get none (listed by ``unallocated``).
    """
    pool = vip_range(subnet)
    wanted = sorted(set(apps))
    out: dict[str, ipaddress.IPv4Address] = {}
    for app in wanted:
        ip = previous.get(app)
        if ip is not None and ip in pool:
            out[app] = ip
    taken = set(out.values())
    for app in wanted:
        if app in out:
            continue
        start = int(_digest(app, 8), 16) % len(pool)
        for i in range(len(pool)):
            ip = pool[(start + i) % len(pool)]
            if ip not in taken:
                out[app] = ip
                taken.add(ip)
                break
    return out


# -- names -----------------------------------------------------------------------------


def resolve_name(qname: str, querier: str) -> AppKey | None:
    """The app a DNS name means for a container of namespace ``querier``.

    ``db`` (the querier's namespace), ``db.prod`` and ``db.prod.shoal.internal`` (any
    namespace); case-insensitive, a trailing dot allowed. Anything else is not ours.
    """
    name = qname.lower().rstrip(".")
    suffix = "." + DOMAIN
    if name.endswith(suffix):
        name = name[: -len(suffix)]
    labels = name.split(".")
    if len(labels) == 1 and labels[0]:
        return AppKey(querier, labels[0])
    if len(labels) == 2 and all(labels):
        return AppKey(labels[1], labels[0])
    return None


def may_reach(source_namespace: str, spec: AppSpec) -> bool:
    """Namespace isolation: a container reaches apps of its own namespace, and an app of
    another only when that app's ``network.allow_from`` names the source (or ``*``)."""
    if source_namespace == spec.namespace:
        return True
    allowed = spec.network.allow_from
    return "*" in allowed or source_namespace in allowed
