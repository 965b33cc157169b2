"""The scaler's additions to the contract: its status topic and model on the wire."""

from __future__ import annotations

import pytest

from core import codec
from core.channels import SCALER_STATUS
from core.errors import TopicError
from core.keys import AppKey
from core.state import ScalerStatus


def test_status_topic() -> None:
    assert SCALER_STATUS.topic("shoal", AppKey("prod", "web")) == "shoal/status/scaler/prod/web"
    assert SCALER_STATUS.pattern("shoal") == "shoal/status/scaler/+/+"
    with pytest.raises(TopicError):
        SCALER_STATUS.topic("shoal", AppKey("prod", "a/b"))
    assert (SCALER_STATUS.kind, SCALER_STATUS.model, SCALER_STATUS.retained) == (
        "scaler_status",
        ScalerStatus,
        True,
    )


def test_status_round_trips_through_the_codec() -> None:
    status = ScalerStatus(
        namespace="default",
        name="web",
        current=2,
        desired=5,
        code="scale_up",
        reason="rps/replica 240 (target 100) -> 5: 2 -> 5",
        metrics={"rps": 480.0, "ready": 2.0},
        last_scaled=1.5,
        ts=2.0,
    )
    env = codec.decode(codec.encode(codec.make("scaler_status", status)))
    assert env is not None
    assert env.open_kind() == status
