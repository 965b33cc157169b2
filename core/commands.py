"""Command bodies (``cmd/...`` topics) and the reply every command gets."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from core.bounds import MAX_COUNT, Count, Serial
from core.spec import Model, check_dns_label
from core.state import Event


class ApplyCommand(Model):
    """Apps stay raw here: the controller validates each and reports every error."""

    apps: list[Any]
    dry_run: bool = False
    source: str = ""


class DeleteCommand(Model):
    namespace: str = "default"
    name: str

    _ns = field_validator("namespace")(classmethod(lambda cls, v: check_dns_label(v, "namespace")))
    _name = field_validator("name")(classmethod(lambda cls, v: check_dns_label(v, "name")))


class ScaleCommand(Model):
    namespace: str = "default"
    name: str
    replicas: int = Field(ge=0, le=MAX_COUNT)
    source: Literal["manual", "autoscaler"] = "manual"
    reason: str = ""

    _ns = field_validator("namespace")(classmethod(lambda cls, v: check_dns_label(v, "namespace")))
    _name = field_validator("name")(classmethod(lambda cls, v: check_dns_label(v, "name")))


class RollbackCommand(Model):
    namespace: str = "default"
    name: str
    to_revision: Serial | None = None


class HistoryQuery(Model):
    """``cmd/history``: the revision history of one app (answered with kind ``revisions``)."""

    namespace: str = "default"
    name: str


class RolloutCommand(Model):
    """``cmd/rollout``: ``promote`` a paused canary to a full rollout, or ``abort`` it
    (back to the last good revision)."""

    namespace: str = "default"
    name: str
    action: Literal["promote", "abort"]


class RevisionInfo(Model):
    revision: Count
    created: float
    source: str = ""
    template_hash: str = ""
    image: str = ""
    changes: list[str] = Field(default_factory=list)
    status: str = Field(default="", description="'' or e.g. 'failed: ...' after a rollback")
    current: bool = False


class History(Model):
    """The answer to ``history``: revisions oldest first."""

    namespace: str
    name: str
    revision: Count
    phase: str = ""
    message: str = ""
    revisions: list[RevisionInfo] = Field(default_factory=list)


class NodeCommand(Model):
    """``cmd/node``: maintenance of one node, handled by the scheduler (its leader replies).

    ``cordon`` stops new placements on the node; ``drain`` cordons it and moves every
    replica off, each replacement ready before the replica it replaces is stopped;
    ``uncordon`` undoes both.
    """

    node: str
    action: Literal["cordon", "uncordon", "drain"]
    reason: str = ""


class RebalanceCommand(Model):
    """``cmd/rebalance``: move replicas to even out the nodes (the scheduler's leader answers).

    At most ``max_moves`` replicas move, each readiness-gated as a drain moves them (the
    replacement on the target ready before the old one stops); ``dry_run`` only plans.
    """

    dry_run: bool = False
    max_moves: int = Field(default=10, ge=1, le=1000)
    tolerance: float = Field(
        default=0.1, ge=0.0, le=1.0, description="stop once nodes' loads differ by this or less"
    )
    reason: str = Field(default="", max_length=500)


class RebalanceMove(Model):
    replica: str
    namespace: str
    app: str
    source: str
    target: str
    reason: str = ""


class RebalancePlan(Model):
    """The answer to ``rebalance``: the moves planned (and started unless a dry run)."""

    dry_run: bool = False
    moves: list[RebalanceMove] = Field(default_factory=list)
    message: str = ""


AppChange = Literal["created", "updated", "scaled", "unchanged", "deleted"]


class AppResult(Model):
    namespace: str
    name: str
    revision: Count
    change: AppChange
    changes: list[str] = Field(
        default_factory=list, description="field-level diff summary, e.g. 'image: a -> b'"
    )


class Reply(Model):
    """The answer to every command: success, or the exact validation errors."""

    ok: bool
    revision: Count | None = None
    errors: list[str] = Field(default_factory=list)
    results: list[AppResult] = Field(default_factory=list)


class EventsQuery(Model):
    """``cmd/events``: the recent events a dashboard kept, oldest first (``shoal events``)."""

    namespace: str | None = None
    app: str | None = None
    limit: int = Field(default=100, ge=1, le=10_000)


class RecentEvent(Event):
    """An event as kept for later readers: when it arrived, and its number there."""

    ts: float = 0.0
    seq: Count = 0


class EventList(Model):
    """The answer to ``events``."""

    events: list[RecentEvent] = Field(default_factory=list)
    kept: Count = Field(default=0, description="how many events the answerer keeps at most")
