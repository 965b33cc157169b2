"""The bus contract: every channel Shoal speaks, declared once.

A ``Channel`` is one family of topics: its path under the prefix (``apps/{namespace}/{name}``),
the model of its body, the envelope ``kind``, retained or not, its QoS, who writes it, and
how its key is spelled in the topic and read from the body. A ``Command`` is a request
topic (``cmd/<name>``) with its body model, its answer model and the service that answers.

Publishing and subscribing go through these declarations (``Bus.publish(APPS, state)``,
``Bus.subscribe(HEALTH, handler)``), so a kind is never typed by hand and a message whose
body names another key than its topic is dropped in one place. ``CHANNELS`` and
``COMMANDS`` list the whole contract; ``contract_table()`` renders it for ``core/README.md``.

Version skew: bodies of state channels are read with unknown fields ignored, so a service
of a newer Shoal that adds a field does not silence an older reader. What users write
(command bodies, and the app specs inside ``apply``) is read strictly: a typo is an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel

from core.commands import (
    ApplyCommand,
    DeleteCommand,
    EventList,
    EventsQuery,
    History,
    HistoryQuery,
    NodeCommand,
    RebalanceCommand,
    RebalancePlan,
    Reply,
    RollbackCommand,
    RolloutCommand,
    ScaleCommand,
)
from core.errors import TopicError
from core.keys import AppKey, ServiceKey
from core.secrets import (
    SecretDelete,
    SecretKeyInfo,
    SecretKeyQuery,
    SecretList,
    SecretPut,
    SecretPutResult,
    SecretQuery,
    SecretValues,
    SecretValuesRequest,
)
from core.state import (
    AcmeChallenge,
    AppHealth,
    AppState,
    Event,
    LbMetrics,
    LogChunk,
    LogsRequest,
    NodeAssignment,
    NodeCordon,
    NodeInfo,
    NodeMetrics,
    NodeReplicas,
    Presence,
    ScalerStatus,
    SchedulerStatus,
    WakeUp,
)

K = TypeVar("K")
M = TypeVar("M", bound=BaseModel)
R = TypeVar("R", bound=BaseModel)


def level(name: str) -> str:
    """Check that ``name`` fits in one topic level (no ``/``, ``+``, ``#``)."""
    if not name or any(c in name for c in "/+#\0"):
        raise TopicError(f"{name!r} cannot be used in a topic level")
    return name


def check_prefix(prefix: str) -> str:
    parts = prefix.split("/")
    if not prefix or any(not p or "+" in p or "#" in p for p in parts):
        raise TopicError(f"invalid topic prefix {prefix!r}")
    return prefix


# -- keys: how a key is spelled in a topic's variable levels ---------------------------


@dataclass(frozen=True, slots=True)
class KeyShape(Generic[K]):
    names: tuple[str, ...]
    build: Callable[[tuple[str, ...]], K]
    split: Callable[[K], tuple[str, ...]]


NO_KEY: KeyShape[None] = KeyShape((), lambda levels: None, lambda key: ())
APP_KEY: KeyShape[AppKey] = KeyShape(("namespace", "name"), lambda lv: AppKey(*lv), tuple)
SERVICE_KEY: KeyShape[ServiceKey] = KeyShape(
    ("service", "instance"), lambda lv: ServiceKey(*lv), tuple
)


def one_level(name: str) -> KeyShape[str]:
    return KeyShape((name,), lambda levels: levels[0], lambda key: (key,))


NODE_KEY = one_level("node")


# -- channels ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Channel(Generic[M, K]):
    path: str
    model: type[M]
    kind: str
    writer: str
    doc: str
    key: KeyShape[K]
    key_of: Callable[[M], K] | None = None
    retained: bool = False
    qos: int = 1
    lenient: bool = True
    json: bool = False
    #: Values that grow with the cluster: one larger than a broker message is sent in pages
    #: (``core.paging``) and assembled whole by every subscriber.
    paged: bool = False
    _levels: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        levels = tuple(self.path.split("/"))
        holes = tuple(p[1:-1] for p in levels if p.startswith("{"))
        if holes != self.key.names:
            raise ValueError(f"channel {self.path}: levels {holes} do not match {self.key.names}")
        object.__setattr__(self, "_levels", levels)

    def topic(self, prefix: str, key: K) -> str:
        """The topic of one key: ``APPS.topic("shoal", AppKey("prod", "web"))``."""
        values = iter(level(v) for v in self.key.split(key))
        return "/".join([prefix, *(next(values) if p[0] == "{" else p for p in self._levels)])

    def pattern(self, prefix: str, **fixed: str) -> str:
        """A subscription pattern: ``+`` for every variable level not given in ``fixed``."""
        unknown = set(fixed) - set(self.key.names)
        if unknown:
            raise TopicError(f"{self.path} has no level named {sorted(unknown)}")
        parts = [
            (level(fixed[p[1:-1]]) if p[1:-1] in fixed else "+") if p[0] == "{" else p
            for p in self._levels
        ]
        return "/".join([prefix, *parts])

    def parse(self, prefix: str, topic: str) -> K:
        """The key spelled by ``topic``; TopicError when it is not one of this channel's."""
        head = prefix + "/"
        parts = topic[len(head) :].split("/") if topic.startswith(head) else []
        if len(parts) != len(self._levels):
            raise TopicError(f"{topic!r} is not a {self.path} topic")
        values: list[str] = []
        for want, got in zip(self._levels, parts, strict=True):
            if want[0] == "{":
                values.append(level(got))
            elif want != got:
                raise TopicError(f"{topic!r} is not a {self.path} topic")
        return self.key.build(tuple(values))

    def key_for(self, body: M) -> K:
        """The key a body names itself by (its topic's key)."""
        if self.key_of is None:
            if self.key.names:
                raise TopicError(f"{self.path}: the key cannot be read from the body")
            return self.key.build(())
        return self.key_of(body)


@dataclass(frozen=True, slots=True)
class Command(Generic[M, R]):
    """A request on ``cmd/<name>/<user>``, answered on the requester's
    ``reply/<user>/<client>``.

    ``<user>`` is the requester's broker user name: the generated ACL (``core.acl``) lets a
    user write only its own level, so the answerer knows who asks (``Envelope.user``) and
    replies only under that user's ``reply/<user>/``. Failures are answered with
    ``Reply(ok=False, errors=[...])``; a success with ``answer``.
    """

    name: str
    model: type[M]
    kind: str
    answer: type[R]
    answer_kind: str
    served_by: str
    doc: str

    def topic(self, prefix: str, user: str | None = None) -> str:
        """Where ``user`` sends this command; without a user, the bare ``cmd/<name>`` (no
        identity: accepted only while authorisation is off, e.g. from ``mosquitto_pub``)."""
        bare = f"{prefix}/cmd/{self.name}"
        return bare if user is None else f"{bare}/{level(user)}"

    def pattern(self, prefix: str) -> str:
        """The answerer's subscription: the command from every user."""
        return f"{prefix}/cmd/{self.name}/+"

    def user_of(self, prefix: str, topic: str) -> str:
        """The user level of a request's topic ('' for the bare topic)."""
        bare = f"{prefix}/cmd/{self.name}"
        if topic == bare:
            return ""
        if not topic.startswith(bare + "/"):
            raise TopicError(f"{topic!r} is not a cmd/{self.name} topic")
        return level(topic[len(bare) + 1 :])


def _app(body: Any) -> AppKey:
    return AppKey(body.namespace, body.name)


APPS: Channel[AppState, AppKey] = Channel(
    "apps/{namespace}/{name}",
    AppState,
    "app",
    "controller",
    "desired state of one app: spec, replicas, the versions to run",
    APP_KEY,
    _app,
    retained=True,
    paged=True,
)
HEALTH: Channel[AppHealth, AppKey] = Channel(
    "health/{namespace}/{name}",
    AppHealth,
    "health",
    "health (the instance that owns the app)",
    "readiness and liveness of every replica of one app",
    APP_KEY,
    _app,
    retained=True,
    paged=True,
)
SCHEDULER_STATUS: Channel[SchedulerStatus, AppKey] = Channel(
    "status/scheduler/{namespace}/{name}",
    SchedulerStatus,
    "scheduler_status",
    "scheduler (leader)",
    "placement of one app: placed, unplaceable and why",
    APP_KEY,
    _app,
    retained=True,
    paged=True,
)
SCALER_STATUS: Channel[ScalerStatus, AppKey] = Channel(
    "status/scaler/{namespace}/{name}",
    ScalerStatus,
    "scaler_status",
    "scaler (leader)",
    "the autoscaler's last decision for one app and why",
    APP_KEY,
    _app,
    retained=True,
)
WAKE: Channel[WakeUp, AppKey] = Channel(
    "wake/{namespace}/{name}",
    WakeUp,
    "wake",
    "balancer",
    "requests are held for an app scaled to zero",
    APP_KEY,
    _app,
    json=True,
)
NODE_INFO: Channel[NodeInfo, str] = Channel(
    "nodes/{node}/info",
    NodeInfo,
    "node",
    "agent (its own node)",
    "a node's address, labels, capacity, status and heartbeat; last will: offline",
    NODE_KEY,
    lambda body: body.node,
    retained=True,
)
NODE_ASSIGN: Channel[NodeAssignment, str] = Channel(
    "nodes/{node}/assign",
    NodeAssignment,
    "assign",
    "scheduler (leader)",
    "every replica one node must run, with each spec once",
    NODE_KEY,
    lambda body: body.node,
    retained=True,
    paged=True,
)
NODE_REPLICAS: Channel[NodeReplicas, str] = Channel(
    "nodes/{node}/replicas",
    NodeReplicas,
    "replicas",
    "agent (its own node)",
    "what the agent observes on its node, replica by replica",
    NODE_KEY,
    lambda body: body.node,
    retained=True,
    paged=True,
)
NODE_CORDON: Channel[NodeCordon, str] = Channel(
    "nodes/{node}/cordon",
    NodeCordon,
    "cordon",
    "scheduler (leader)",
    "a cordoned or draining node; absent means schedulable",
    NODE_KEY,
    lambda body: body.node,
    retained=True,
)
LB_METRICS: Channel[LbMetrics, str] = Channel(
    "metrics/lb/{instance}",
    LbMetrics,
    "lb_metrics",
    "balancer (each instance)",
    "per app: rate, in-flight, latency, errors over the last window (every second)",
    one_level("instance"),
    lambda body: body.instance,
    qos=0,
    paged=True,
)
NODE_METRICS: Channel[NodeMetrics, str] = Channel(
    "metrics/nodes/{node}",
    NodeMetrics,
    "node_metrics",
    "agent (its own node)",
    "CPU and memory use of every replica on the node",
    NODE_KEY,
    lambda body: body.node,
    qos=0,
    paged=True,
)
LOGS_REQUEST: Channel[LogsRequest, None] = Channel(
    "logs/request",
    LogsRequest,
    "logs_request",
    "cli (any client)",
    "stream the logs of an app's replicas to logs/stream/<id>",
    NO_KEY,
)
LOGS_STREAM: Channel[LogChunk, str] = Channel(
    "logs/stream/{request}",
    LogChunk,
    "logs",
    "agent (each node running a matching replica)",
    "a batch of log lines of one replica; eof ends its stream",
    one_level("request"),
    lambda body: body.request,
)
EVENTS: Channel[Event, str] = Channel(
    "events/{kind}",
    Event,
    "event",
    "any service",
    "a human-readable event",
    one_level("kind"),
    lambda body: body.kind,
    qos=0,
)
ACME_CHALLENGES: Channel[AcmeChallenge, str] = Channel(
    "acme/challenges/{token}",
    AcmeChallenge,
    "acme_challenge",
    "balancer (the instance ordering a certificate)",
    "an HTTP-01 key authorization every balancer answers; cleared once validated",
    one_level("token"),
    lambda body: body.token,
    retained=True,
)
PRESENCE: Channel[Presence, ServiceKey] = Channel(
    "services/{service}/{instance}",
    Presence,
    "presence",
    "every service instance (for itself)",
    "online/offline, version, leadership, metrics address; the last will says offline",
    SERVICE_KEY,
    lambda body: ServiceKey(body.service, body.instance),
    retained=True,
)

#: Every channel, in the order ``core/README.md`` lists them.
CHANNELS: tuple[Channel[Any, Any], ...] = (
    APPS,
    NODE_INFO,
    NODE_ASSIGN,
    NODE_REPLICAS,
    NODE_CORDON,
    SCHEDULER_STATUS,
    HEALTH,
    SCALER_STATUS,
    WAKE,
    LB_METRICS,
    ACME_CHALLENGES,
    NODE_METRICS,
    LOGS_REQUEST,
    LOGS_STREAM,
    EVENTS,
    PRESENCE,
)

# -- commands ----------------------------------------------------------------------------

APPLY: Command[ApplyCommand, Reply] = Command(
    "apply", ApplyCommand, "apply", Reply, "reply", "controller", "create or update apps"
)
DELETE: Command[DeleteCommand, Reply] = Command(
    "delete", DeleteCommand, "delete", Reply, "reply", "controller", "delete one app"
)
SCALE: Command[ScaleCommand, Reply] = Command(
    "scale", ScaleCommand, "scale", Reply, "reply", "controller", "set an app's replica count"
)
ROLLBACK: Command[RollbackCommand, Reply] = Command(
    "rollback",
    RollbackCommand,
    "rollback",
    Reply,
    "reply",
    "controller",
    "roll an app back to an earlier revision",
)
HISTORY: Command[HistoryQuery, History] = Command(
    "history",
    HistoryQuery,
    "history",
    History,
    "revisions",
    "controller",
    "the revision history of one app",
)
ROLLOUT: Command[RolloutCommand, Reply] = Command(
    "rollout",
    RolloutCommand,
    "rollout",
    Reply,
    "reply",
    "controller",
    "promote or abort a paused canary",
)
NODE: Command[NodeCommand, Reply] = Command(
    "node",
    NodeCommand,
    "node_command",
    Reply,
    "reply",
    "scheduler (leader)",
    "cordon, uncordon or drain a node",
)
REBALANCE: Command[RebalanceCommand, RebalancePlan] = Command(
    "rebalance",
    RebalanceCommand,
    "rebalance",
    RebalancePlan,
    "rebalance_plan",
    "scheduler (leader)",
    "move replicas to even out the nodes, readiness-gated (or plan only: dry_run)",
)

EVENTS_QUERY: Command[EventsQuery, EventList] = Command(
    "events",
    EventsQuery,
    "events_query",
    EventList,
    "events",
    "dashboard (any instance)",
    "the recent events kept for later readers",
)
SECRET_KEY: Command[SecretKeyQuery, SecretKeyInfo] = Command(
    "secret_key",
    SecretKeyQuery,
    "secret_key",
    SecretKeyInfo,
    "secret_key_info",
    "controller",
    "the controller's public key, which secret_put values are sealed to",
)
SECRET_PUT: Command[SecretPut, SecretPutResult] = Command(
    "secret_put",
    SecretPut,
    "secret_put",
    SecretPutResult,
    "secret_put_result",
    "controller",
    "create a secret or give it a new value (the apps using it roll)",
)
SECRET_RM: Command[SecretDelete, Reply] = Command(
    "secret_rm",
    SecretDelete,
    "secret_rm",
    Reply,
    "reply",
    "controller",
    "delete a secret no app uses",
)
SECRET_LS: Command[SecretQuery, SecretList] = Command(
    "secret_ls",
    SecretQuery,
    "secret_ls",
    SecretList,
    "secrets",
    "controller",
    "the secrets of a namespace: names, versions, sizes, users (never values)",
)
SECRET_VALUES: Command[SecretValuesRequest, SecretValues] = Command(
    "secret_values",
    SecretValuesRequest,
    "secret_values",
    SecretValues,
    "secret_values_sealed",
    "controller",
    "an agent's pinned secret versions, only those its node's assignment uses, "
    "sealed to the agent's key",
)

COMMANDS: tuple[Command[Any, Any], ...] = (
    APPLY,
    DELETE,
    SCALE,
    ROLLBACK,
    HISTORY,
    ROLLOUT,
    NODE,
    REBALANCE,
    EVENTS_QUERY,
    SECRET_KEY,
    SECRET_PUT,
    SECRET_RM,
    SECRET_LS,
    SECRET_VALUES,
)

#: The envelope kinds that travel on ``reply/<client>``.
REPLY_KINDS: dict[str, type[BaseModel]] = {
    "reply": Reply,
    "revisions": History,
    "events": EventList,
    "rebalance_plan": RebalancePlan,
    "secrets": SecretList,
    "secret_key_info": SecretKeyInfo,
    "secret_put_result": SecretPutResult,
    "secret_values_sealed": SecretValues,
}


def reply_topic(prefix: str, user: str, client: str) -> str:
    """Where ``client`` (connected as ``user``) gets its answers: only that user may read
    it, only that user and the services that answer commands may write it."""
    return f"{reply_base(prefix, user)}{level(client)}"


def reply_base(prefix: str, user: str) -> str:
    """The reply topics of one user end in one more level after this."""
    return f"{prefix}/reply/{level(user)}/"


def kinds() -> dict[str, type[BaseModel]]:
    """Every envelope kind and the model of its body."""
    table: dict[str, type[BaseModel]] = {c.kind: c.model for c in CHANNELS}
    table.update({c.kind: c.model for c in COMMANDS})
    table.update(REPLY_KINDS)
    return table


def contract_table() -> str:
    """The contract as Markdown tables (``core/README.md`` holds exactly this)."""
    rows = [
        "| topic under `<prefix>/` | kind | body | retained | QoS | written by | what |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in CHANNELS:
        rows.append(
            f"| `{c.path}` | `{c.kind}` | `{c.model.__name__}` | {'yes' if c.retained else 'no'}"
            f" | {c.qos} | {c.writer} | {c.doc} |"
        )
    rows += [
        "",
        "| command topic | kind | body | answer (kind) | answered by | what |",
        "|---|---|---|---|---|---|",
    ]
    for m in COMMANDS:
        rows.append(
            f"| `cmd/{m.name}/<user>` | `{m.kind}` | `{m.model.__name__}` | `{m.answer.__name__}`"
            f" (`{m.answer_kind}`) | {m.served_by} | {m.doc} |"
        )
    return "\n".join(rows)
