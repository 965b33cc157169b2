"""The scaler's additions to the contract: its status topic and model on the wire."""

from __future__ import annotations

import pytest

from core import codec
from core.errors import TopicError
from core.state import ScalerStatus
from core.topics import Topics


def test_status_topic() -> None:
    t = Topics("shoal")
    assert t.scaler_status("prod", "web") == "shoal/status/scaler/prod/web"
    assert t.all_scaler_status == "shoal/status/scaler/+/+"
    with pytest.raises(TopicError):
        t.scaler_status("prod", "a/b")


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
