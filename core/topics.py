"""The topic map: the one place that knows how topics are spelled.

Every topic is ``<prefix>/...``; the prefix (default ``shoal``) lets two clusters share
a broker. Names placed in one topic level are checked so that a ``/``, ``+`` or ``#``
in user input can never address another topic.
"""

from __future__ import annotations

from dataclasses import dataclass

from core.errors import TopicError

COMMANDS = ("apply", "delete", "scale", "rollback", "node", "history", "rollout")


def level(name: str) -> str:
    """Check that ``name`` fits in one topic level."""
    if not name or any(c in name for c in "/+#\0"):
        raise TopicError(f"{name!r} cannot be used in a topic level")
    return name


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str = "shoal"

    def __post_init__(self) -> None:
        parts = self.prefix.split("/")
        if not self.prefix or any(not p or "+" in p or "#" in p for p in parts):
            raise TopicError(f"invalid topic prefix {self.prefix!r}")

    # -- commands (not retained) ------------------------------------------------------
    def cmd(self, command: str) -> str:
        if command not in COMMANDS:
            raise TopicError(f"unknown command {command!r}")
        return f"{self.prefix}/cmd/{command}"

    @property
    def all_commands(self) -> str:
        return f"{self.prefix}/cmd/+"

    def reply(self, client: str) -> str:
        return f"{self.prefix}/reply/{level(client)}"

    # -- desired state (controller) ---------------------------------------------------
    def app(self, namespace: str, name: str) -> str:
        return f"{self.prefix}/apps/{level(namespace)}/{level(name)}"

    @property
    def all_apps(self) -> str:
        return f"{self.prefix}/apps/+/+"

    # -- nodes ------------------------------------------------------------------------
    def node_info(self, node: str) -> str:
        return f"{self.prefix}/nodes/{level(node)}/info"

    def node_assign(self, node: str) -> str:
        return f"{self.prefix}/nodes/{level(node)}/assign"

    def node_replicas(self, node: str) -> str:
        return f"{self.prefix}/nodes/{level(node)}/replicas"

    @property
    def all_node_info(self) -> str:
        return f"{self.prefix}/nodes/+/info"

    @property
    def all_node_assign(self) -> str:
        return f"{self.prefix}/nodes/+/assign"

    @property
    def all_node_replicas(self) -> str:
        return f"{self.prefix}/nodes/+/replicas"

    def node_cordon(self, node: str) -> str:
        return f"{self.prefix}/nodes/{level(node)}/cordon"

    @property
    def all_node_cordon(self) -> str:
        return f"{self.prefix}/nodes/+/cordon"

    # -- scheduler status (scheduler) -------------------------------------------------
    def scheduler_status(self, namespace: str, name: str) -> str:
        return f"{self.prefix}/status/scheduler/{level(namespace)}/{level(name)}"

    @property
    def all_scheduler_status(self) -> str:
        return f"{self.prefix}/status/scheduler/+/+"

    # -- health -----------------------------------------------------------------------
    def health(self, namespace: str, name: str) -> str:
        return f"{self.prefix}/health/{level(namespace)}/{level(name)}"

    @property
    def all_health(self) -> str:
        return f"{self.prefix}/health/+/+"

    # -- metrics, events, presence ----------------------------------------------------
    def metrics_lb(self, instance: str) -> str:
        return f"{self.prefix}/metrics/lb/{level(instance)}"

    def metrics_node(self, node: str) -> str:
        return f"{self.prefix}/metrics/nodes/{level(node)}"

    @property
    def all_lb_metrics(self) -> str:
        return f"{self.prefix}/metrics/lb/+"

    @property
    def all_node_metrics(self) -> str:
        return f"{self.prefix}/metrics/nodes/+"

    def wake(self, namespace: str, name: str) -> str:
        return f"{self.prefix}/wake/{level(namespace)}/{level(name)}"

    @property
    def all_wake(self) -> str:
        return f"{self.prefix}/wake/+/+"

    # -- logs: request on one topic, each answer streamed on its own topic ------------
    @property
    def logs_request(self) -> str:
        return f"{self.prefix}/logs/request"

    def logs_stream(self, request_id: str) -> str:
        return f"{self.prefix}/logs/stream/{level(request_id)}"

    def scaler_status(self, namespace: str, name: str) -> str:
        return f"{self.prefix}/status/scaler/{level(namespace)}/{level(name)}"

    @property
    def all_scaler_status(self) -> str:
        return f"{self.prefix}/status/scaler/+/+"

    def event(self, kind: str) -> str:
        return f"{self.prefix}/events/{level(kind)}"

    @property
    def all_events(self) -> str:
        return f"{self.prefix}/events/#"

    def service(self, service: str, instance: str) -> str:
        return f"{self.prefix}/services/{level(service)}/{level(instance)}"

    def all_services(self, service: str = "+") -> str:
        return f"{self.prefix}/services/{service}/+"

    # -- parsing ----------------------------------------------------------------------
    def parts(self, topic: str) -> list[str]:
        """The levels after the prefix: ``shoal/apps/prod/web`` -> ``["apps", "prod", "web"]``."""
        head = self.prefix + "/"
        if not topic.startswith(head):
            raise TopicError(f"topic {topic!r} is not under {self.prefix!r}")
        return topic[len(head) :].split("/")

    def node_of(self, topic: str) -> str:
        parts = self.parts(topic)
        if len(parts) != 3 or parts[0] != "nodes":
            raise TopicError(f"{topic!r} is not a node topic")
        return parts[1]

    def app_of(self, topic: str) -> tuple[str, str]:
        """(namespace, name) of an ``apps/`` or ``health/`` topic."""
        parts = self.parts(topic)
        if len(parts) != 3 or parts[0] not in ("apps", "health"):
            raise TopicError(f"{topic!r} is not an app topic")
        return parts[1], parts[2]


def matches(pattern: str, topic: str) -> bool:
    """MQTT wildcard matching (``+`` one level, ``#`` the rest); ``$share/g/`` is ignored."""
    if pattern.startswith("$share/"):
        pattern = pattern.split("/", 2)[2]
    p_parts = pattern.split("/")
    t_parts = topic.split("/")
    for i, p in enumerate(p_parts):
        if p == "#":
            return True
        if i >= len(t_parts):
            return False
        if p != "+" and p != t_parts[i]:
            return False
    return len(p_parts) == len(t_parts)
