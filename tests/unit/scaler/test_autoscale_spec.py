"""Bad autoscale specs are refused with one clear line each (``core.spec`` validation,
which the controller applies to every ``apply``)."""

from __future__ import annotations

from typing import Any

import pytest

from core.errors import SpecError
from core.spec import validate_apps

BASE: dict[str, Any] = {"name": "web", "image": "echo:v1", "ports": {"http": 8080}}


def spec(autoscale: Any, **extra: Any) -> dict[str, Any]:
    return {**BASE, "route": {"path": "/"}, "autoscale": autoscale, **extra}


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        (spec({"min": 5, "max": 2, "target": {"rps_per_replica": 100}}),
         "autoscale: autoscale min (5) is greater than max (2)"),
        (spec({"min": 1, "max": 0, "target": {"rps_per_replica": 100}}),
         "autoscale.max: Input should be greater than or equal to 1"),
        (spec({"min": -1, "max": 3, "target": {"rps_per_replica": 100}}),
         "autoscale.min: Input should be greater than or equal to 0"),
        (spec({"max": 100_000, "target": {"rps_per_replica": 100}}),
         "autoscale.max: Input should be less than or equal to 10000"),
        (spec({"min": 1, "target": {"rps_per_replica": 100}}),
         "autoscale.max: required field is missing"),
        (spec({"max": 3}), "autoscale.target: required field is missing"),
        (spec({"max": 3, "target": {}}),
         "autoscale.target: autoscale target needs at least one metric: rps_per_replica, "
         "inflight_per_replica, p95_latency_ms, cpu_utilization, memory_utilization"),
        (spec({"max": 3, "target": {"rps": 100}}), "autoscale.target.rps: unknown field"),
        (spec({"max": 3, "target": {"rps_per_replica": 0}}),
         "autoscale.target.rps_per_replica: Input should be greater than 0"),
        (spec({"max": 3, "target": {"p95_latency_ms": -5}}),
         "autoscale.target.p95_latency_ms: Input should be greater than 0"),
        (spec({"max": 3, "target": {"cpu_utilization": 80}}),
         "autoscale.target.cpu_utilization: utilisation target 80 must be a fraction of the "
         "request in (0, 1], e.g. 0.7 or '70%'"),
        (spec({"max": 3, "target": {"memory_utilization": "eighty%"}}),
         "autoscale.target.memory_utilization: invalid percentage 'eighty%': use e.g. 70% or 0.7"),
        (spec({"max": 3, "target": {"cpu_utilization": "150%"}}),
         "autoscale.target.cpu_utilization: Input should be less than or equal to 1"),
        (spec({"max": 3, "target": {"rps_per_replica": "lots"}}),
         "autoscale.target.rps_per_replica: Input should be a valid number, unable to parse "
         "string as a number"),
        (spec({"max": 3, "target": {"rps_per_replica": 10}, "step": 2}),
         "autoscale.step: unknown field"),
        (spec("yes"), "autoscale: Input should be a valid dictionary or instance of Autoscale"),
        ({**BASE, "autoscale": {"min": 0, "max": 3, "target": {"rps_per_replica": 10}}},
         "autoscale min 0 (scale to zero) needs a route: only the balancer can hold a request "
         "and wake the app"),
    ],
)  # fmt: skip
def test_bad_autoscale_spec_is_refused_with_a_clear_error(
    doc: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError) as err:
        validate_apps([doc])
    assert err.value.errors == [f"app 1 (web): {message}"]


@pytest.mark.parametrize(
    ("target", "field", "value"),
    [
        ({"cpu_utilization": "70%"}, "cpu_utilization", 0.7),
        ({"memory_utilization": 0.5}, "memory_utilization", 0.5),
        ({"rps_per_replica": 12.5}, "rps_per_replica", 12.5),
    ],
)
def test_good_autoscale_specs(target: dict[str, Any], field: str, value: float) -> None:
    (app,) = validate_apps([spec({"min": 0, "max": 5, "target": target})])
    assert app.autoscale is not None
    assert getattr(app.autoscale.target, field) == pytest.approx(value)
