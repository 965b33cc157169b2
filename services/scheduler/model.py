"""The scheduler's working data: plain, mutable, slotted records (no I/O).

The wire models (``core.state``) are frozen pydantic objects, right for messages but too
heavy to update 150,000 times; the scheduler keeps its own view of nodes and replicas and
turns it back into ``NodeAssignment`` messages when a node's set changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from core.keys import AppKey
from core.state import AppState

#: A node known only from an assignment (no ``info`` yet) has this status.
UNKNOWN = "unknown"


@dataclass(slots=True, eq=False)
class Replica:
    id: str
    #: the app (one key object shared by all its replicas)
    app_key: AppKey
    revision: int
    node: str
    cpu: float
    memory: int
    #: on a draining node: counted as gone, kept until its replacement is ready
    leaving: bool = False

    @property
    def namespace(self) -> str:
        return self.app_key.namespace

    @property
    def app(self) -> str:
        return self.app_key.name


@dataclass(slots=True, eq=False)
class NodeView:
    id: str
    address: str = ""
    labels: dict[str, str] = field(default_factory=dict)
    cpu: float = 0.0
    memory: int = 0
    status: str = UNKNOWN
    #: when this node last proved alive (the caller's clock: monotonic in the service)
    seen: float = 0.0
    #: no heartbeat for ``node_grace`` (but no last will either): unreachable
    silent: bool = False
    #: declared lost (unreachable for ``lost_grace``): its replicas were placed elsewhere
    lost: bool = False
    cordoned: bool = False
    draining: bool = False
    cpu_used: float = 0.0
    mem_used: int = 0
    #: app -> replicas of that app on this node
    apps: dict[AppKey, int] = field(default_factory=dict)
    replicas: dict[str, Replica] = field(default_factory=dict)
    generation: int = 0

    @property
    def usable(self) -> bool:
        return self.status == "ready" and not self.lost and not self.silent

    @property
    def unreachable(self) -> bool:
        """Its agent is gone (last will) or silent: no new replicas, and the ones it has
        stay only while the health monitor finds them ready, until ``lost_grace``."""
        return not self.lost and (self.status == "offline" or self.silent)

    @property
    def load(self) -> float:
        """Fraction of the node allocated, the mean of cpu and memory (0 = empty)."""
        cpu = self.cpu_used / self.cpu if self.cpu > 0 else 1.0
        mem = self.mem_used / self.memory if self.memory > 0 else 1.0
        return (cpu + mem) / 2


@dataclass(slots=True, eq=False)
class AppRecord:
    key: AppKey
    state: AppState | None = None
    #: an AppState was seen for this key since the scheduler started leading
    seen: bool = False
    replicas: dict[str, Replica] = field(default_factory=dict)
    #: the label the app spreads over, and its replica count per value of that label
    spread_by: str | None = None
    domains: dict[str, int] = field(default_factory=dict)
    #: ids of replicas the health monitor reports ready; None = no health record at all
    ready: set[str] | None = None


@dataclass(slots=True, eq=False)
class Demand:
    """What one replica of one app revision asks of a node, plus the app's live counts.

    ``domains`` is the app's own counter (shared, updated as replicas are placed), so the
    scorers always see the placements made so far in this pass.
    """

    app: AppKey
    revision: int
    cpu: float
    memory: int
    constraints: tuple[tuple[str, frozenset[str]], ...] = ()
    max_per_node: int | None = None
    spread_by: str | None = None
    strategy: str = "spread"
    domains: dict[str, int] = field(default_factory=dict)
    #: fewest replicas of the app in any domain among the nodes being scored
    domain_floor: int = 0
