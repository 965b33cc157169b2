"""Every message kind, written by a newer Shoal with fields this one does not know, still reads."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from core import codec
from core.channels import CHANNELS, COMMANDS, Channel
from core.commands import ApplyCommand, NodeCommand, Reply, ScaleCommand
from core.errors import CodecError
from core.spec import AppSpec, Resources
from core.state import (
    AcmeChallenge,
    AppHealth,
    AppState,
    AppVersion,
    AssignedReplica,
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
    ReplicaHealth,
    ReplicaRouteMetrics,
    ReplicaStatus,
    ReplicaUsage,
    RouteMetrics,
    ScalerStatus,
    SchedulerStatus,
    WakeUp,
)
from tests.support.skew import FIELD, with_unknown_fields

SPEC = AppSpec.model_validate(
    {
        "name": "web",
        "image": "x:1",
        "env": {"A": "1"},
        "ports": {"http": 80},
        "route": {"host": "web.local", "port": "http"},
        "health": {"readiness": {"http": "/healthz", "port": "http"}},
        "autoscale": {"min": 1, "max": 3, "target": {"rps_per_replica": 10}},
    }
)

#: One full message of every state channel's model.
SAMPLES: dict[type[BaseModel], BaseModel] = {
    AppState: AppState(
        namespace="default",
        name="web",
        revision=1,
        generation=1,
        spec=SPEC,
        replicas=1,
        versions=[AppVersion(revision=1, spec=SPEC, replicas=1)],
    ),
    NodeInfo: NodeInfo(node="n1", address="127.0.0.1", capacity=Resources(cpu=2, memory="1Gi")),
    NodeAssignment: NodeAssignment(
        node="n1",
        replicas=[AssignedReplica(id="default.web.1", namespace="default", app="web", revision=1)],
        specs={"default/web@1": SPEC},
    ),
    NodeReplicas: NodeReplicas(
        node="n1",
        replicas=[
            ReplicaStatus(
                id="default.web.1",
                namespace="default",
                app="web",
                revision=1,
                node="n1",
                phase="running",
                endpoints={"http": "127.0.0.1:3000"},
            )
        ],
    ),
    NodeCordon: NodeCordon(node="n1", drain=True),
    SchedulerStatus: SchedulerStatus(namespace="default", name="web", nodes={"n1": 1}),
    AppHealth: AppHealth(
        namespace="default",
        name="web",
        replicas=[
            ReplicaHealth(
                id="default.web.1", revision=1, node="n1", endpoint="127.0.0.1:3000", ready=True
            )
        ],
    ),
    ScalerStatus: ScalerStatus(
        namespace="default", name="web", current=1, desired=2, code="scale_up", reason="load"
    ),
    WakeUp: WakeUp(namespace="default", name="web", held=3),
    LbMetrics: LbMetrics(
        instance="lb1",
        apps={
            "default/web": RouteMetrics(
                rps=5, per_replica={"default.web.1": ReplicaRouteMetrics(rps=5)}
            )
        },
    ),
    NodeMetrics: NodeMetrics(
        node="n1", replicas={"default.web.1": ReplicaUsage(cpu=0.1, memory=1000)}
    ),
    LogsRequest: LogsRequest(id="r1", app="web"),
    LogChunk: LogChunk(request="r1", node="n1", replica="default.web.1", lines=["hi"]),
    Event: Event(kind="scaled", message="web scaled to 2", data={"to": 2}),
    Presence: Presence(service="health", instance="h1"),
    AcmeChallenge: AcmeChallenge(
        token="tok-1", key_authorization="tok-1.thumb", host="web.test", instance="b1", expires=2e9
    ),
}


def test_every_state_channel_has_a_sample() -> None:
    assert {c.model for c in CHANNELS} == set(SAMPLES)


@pytest.mark.parametrize("channel", CHANNELS, ids=lambda c: c.kind)
def test_a_newer_peer_s_message_reads_as_the_same_value(
    channel: Channel[BaseModel, object],
) -> None:
    sample = SAMPLES[channel.model]
    body = with_unknown_fields(sample)
    assert FIELD in body
    wire = codec.decode(codec.encode(codec.make(channel.kind, body)))
    assert wire is not None
    assert wire.open(channel.model, lenient=channel.lenient) == sample
    with pytest.raises(CodecError, match=FIELD):
        wire.open(channel.model)  # what users write stays strict


@pytest.mark.parametrize(
    "body",
    [
        ApplyCommand(apps=[]),
        ScaleCommand(name="web", replicas=2),
        NodeCommand(node="n1", action="drain"),
    ],
    ids=lambda b: type(b).__name__,
)
def test_command_bodies_refuse_unknown_fields(body: BaseModel) -> None:
    command = next(c for c in COMMANDS if c.model is type(body))
    wire = codec.make(command.kind, with_unknown_fields(body))
    with pytest.raises(CodecError, match=FIELD):
        wire.open(command.model)


def test_replies_from_a_newer_controller_still_read() -> None:
    reply = Reply(ok=True, revision=3)
    assert codec.make("reply", with_unknown_fields(reply)).open(Reply, lenient=True) == reply
