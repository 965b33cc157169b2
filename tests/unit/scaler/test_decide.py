"""Table-driven and property tests of the autoscaler's decisions (pure: no broker, no clock)."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.spec import AppSpec
from core.state import AppState, AppVersion
from services.scaler.decide import (
    Decision,
    History,
    Observation,
    Policy,
    decide,
    observe_app,
    recommend,
    record,
)

POLICY = Policy(
    scale_down_window=30,
    up_cooldown=3,
    down_cooldown=10,
    tolerance=0.1,
    max_step_up=4,
    max_step_up_percent=100,
    max_step_down=1,
    max_step_down_percent=50,
    idle_after=60,
    surge_factor=2,
)


def app(
    replicas: int = 2,
    generation: int = 1,
    route: bool = True,
    **autoscale: Any,
) -> AppState:
    auto = {"min": 1, "max": 10, "target": {"rps_per_replica": 100}, **autoscale}
    doc: dict[str, Any] = {
        "name": "web",
        "image": "echo:v1",
        "ports": {"http": 8080},
        "resources": {"cpu": 0.5, "memory": "100Mi"},
        "autoscale": auto,
    }
    if route:
        doc["route"] = {"path": "/"}
    spec = AppSpec.model_validate(doc)
    return AppState(
        namespace="default",
        name="web",
        revision=1,
        generation=generation,
        spec=spec,
        replicas=replicas,
        versions=[AppVersion(revision=1, spec=spec, replicas=replicas)],
    )


def scaled(state: AppState, replicas: int, generation: int) -> AppState:
    """The app record after the controller applied a scale."""
    return state.model_copy(update={"replicas": replicas, "generation": generation})


def lb(rps: float, inflight: float = 0.0, p95: float | None = None, held: int = 0) -> Observation:
    return Observation(
        rps=rps,
        inflight=inflight,
        p95_ms=p95,
        requests=int(rps),
        held=held,
        lb_fresh=True,
    )


def settled(now: float = 1000.0, last_change: float | None = None) -> History:
    """A history that has watched the app for a long time, no change recently."""
    return History(since=0.0, last_active=now, last_change=last_change)


# -- recommendations per target ------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "obs", "ready", "current", "expected"),
    [
        ({"rps_per_replica": 100}, lb(350), 2, 2, 4),
        ({"rps_per_replica": 100}, lb(205), 2, 2, 2),  # within tolerance: hold
        ({"rps_per_replica": 100}, lb(50), 2, 2, 1),
        ({"rps_per_replica": 100}, lb(0), 2, 2, 0),
        ({"rps_per_replica": 100}, lb(600), 0, 2, 6),  # nobody ready yet: total / target
        ({"inflight_per_replica": 5}, lb(10, inflight=32), 2, 2, 7),
        ({"p95_latency_ms": 100}, lb(10, p95=300), 2, 2, 6),
        ({"p95_latency_ms": 100}, lb(10, p95=105), 2, 2, 2),
        ({"p95_latency_ms": 100}, lb(10, p95=70), 3, 3, 3),  # below target: hold
        ({"p95_latency_ms": 100}, lb(10, p95=20), 3, 3, 2),  # well below: release one
        ({"cpu_utilization": 0.5}, Observation(cpu=1.5, usage_replicas=2), 2, 2, 6),
        ({"cpu_utilization": "50%"}, Observation(cpu=0.5, usage_replicas=2), 2, 2, 2),
        ({"memory_utilization": 0.5}, Observation(memory=300 * 1024**2, usage_replicas=3), 3, 3, 6),
        # several targets: the largest recommendation wins
        ({"rps_per_replica": 100, "cpu_utilization": 0.5},
         Observation(rps=100, cpu=2.0, usage_replicas=2, lb_fresh=True), 2, 2, 8),
        ({"rps_per_replica": 100, "p95_latency_ms": 50}, lb(700, p95=60), 2, 2, 7),
    ],
)  # fmt: skip
def test_recommend_per_target(
    target: dict[str, Any], obs: Observation, ready: int, current: int, expected: int
) -> None:
    spec = app(target=target).spec
    assert spec.autoscale is not None
    rec, readings = recommend(
        spec.autoscale.target, obs, ready, current, spec.resources.cpu, spec.resources.memory,
        POLICY,
    )  # fmt: skip
    assert rec == expected
    assert readings


def test_no_metrics_gives_no_recommendation_and_no_change() -> None:
    d = decide(app(), Observation(), 2, settled(), 1000.0, POLICY)
    assert (d.change, d.code) == (False, "no_metrics")
    # a cpu target without agent samples has no data either
    d = decide(app(target={"cpu_utilization": 0.5}), lb(500), 2, settled(), 1000.0, POLICY)
    assert (d.change, d.code) == (False, "no_metrics")


# -- decisions -------------------------------------------------------------------------------

T = 1000.0


@pytest.mark.parametrize(
    ("case", "state", "obs", "ready", "history", "policy", "wake", "code", "desired"),
    [
        ("load up: fast", app(2), lb(550), 2, settled(), POLICY, False, "scale_up", 6),
        ("step cap up", app(2), lb(2000), 2, settled(), POLICY, False, "scale_up", 6),
        ("step cap up, percent", app(8, max=40), lb(4000), 8, settled(), POLICY, False,
         "scale_up", 16),
        ("clamped to max", app(8), lb(5000), 8, settled(), POLICY, False, "scale_up", 10),
        ("at max already", app(10), lb(5000), 10, settled(), POLICY, False, "hold", 10),
        ("on target", app(4), lb(400), 4, settled(), POLICY, False, "hold", 4),
        ("up cooldown", app(2), lb(550), 2, settled(last_change=T - 1), POLICY, False,
         "cooldown", 2),
        ("down after window", app(6), lb(150), 6, settled(), POLICY, False, "scale_down", 3),
        ("down step cap (1 or 50%)", app(10), lb(100), 10, settled(), POLICY, False,
         "scale_down", 5),
        ("down cooldown", app(6), lb(150), 6, settled(last_change=T - 5), POLICY, False,
         "cooldown", 6),
        ("down never below min", app(3, min=2), lb(0), 3, settled(), POLICY, False,
         "scale_down", 2),
        ("down never below 1 with min 0", app(2, min=0), lb(1), 2, settled(), POLICY, False,
         "scale_down", 1),
        ("not watched a full window", app(6), lb(150), 6, History(since=T - 5), POLICY, False,
         "stabilising", 6),
        ("below min: at once", app(1, min=3), lb(0), 1, settled(last_change=T), POLICY, False,
         "bounds", 3),
        ("above max: at once", app(12), lb(5000), 12, settled(last_change=T), POLICY, False,
         "bounds", 10),
        ("zero after idle", app(1, min=0), lb(0), 1, History(since=0, last_active=T - 61), POLICY,
         False, "to_zero", 0),
        ("not idle long enough", app(1, min=0), lb(0), 1, History(since=0, last_active=T - 30),
         POLICY, False, "hold", 1),
        ("idle but no balancer reporting", app(1, min=0), Observation(), 1,
         History(since=0, last_active=T - 600), POLICY, False, "no_metrics", 1),
        ("idle with min 1 stays", app(1, min=1), lb(0), 1, History(since=0, last_active=T - 600),
         POLICY, False, "hold", 1),
        ("wake from zero", app(0, min=0), lb(0), 0, settled(last_change=T - 1), POLICY, True,
         "wake", 1),
        ("held request wakes", app(0, min=0), lb(0, held=3), 0, settled(), POLICY, False,
         "wake", 1),
        ("at zero, quiet", app(0, min=0), lb(0), 0, settled(), POLICY, False, "at_zero", 0),
        ("at zero, no balancer", app(0, min=0), Observation(), 0, settled(), POLICY, False,
         "at_zero", 0),
    ],
)  # fmt: skip
def test_decide(
    case: str,
    state: AppState,
    obs: Observation,
    ready: int,
    history: History,
    policy: Policy,
    wake: bool,
    code: str,
    desired: int,
) -> None:
    d = decide(state, obs, ready, history, T, policy, wake=wake)
    assert (d.code, d.desired) == (code, desired), f"{case}: {d.reason}"
    assert d.reason


def test_reason_names_the_metric_values() -> None:
    d = decide(app(2), lb(550), 2, settled(), T, POLICY)
    assert "rps/replica 275" in d.reason
    assert "target 100" in d.reason
    assert "2 -> 6" in d.reason
    assert d.metrics["rps"] == 550
    assert d.metrics["ready"] == 2


def test_scale_down_waits_for_the_highest_recommendation_of_the_window() -> None:
    h = settled()
    state = app(6)
    # a burst 20 s ago recommended 6; now load says 2
    burst = decide(state, lb(600), 6, h, T - 20, POLICY)
    h = record(h, burst, T - 20, POLICY, applied=False)
    d = decide(state, lb(200), 6, h, T, POLICY)
    assert (d.code, d.desired) == ("stabilising", 6)
    # once the burst leaves the window, down to the largest remaining recommendation
    mid = decide(state, lb(400), 6, h, T + 5, POLICY)
    h = record(h, mid, T + 5, POLICY, applied=False)
    d = decide(state, lb(200), 6, h, T + 11, POLICY)
    assert (d.code, d.desired) == ("scale_down", 4)


def test_reversal_after_scale_down_waits_for_the_window_unless_load_surges() -> None:
    state = app(6)
    h = settled()
    down = decide(state, lb(300), 6, h, T, POLICY)
    assert down.code == "scale_down"
    h = record(h, down, T, POLICY, applied=True)
    state = scaled(state, down.desired, 2)
    h = observe_app(h, state, T + 1, POLICY)
    assert h.last_source == "autoscaler"
    # a little more load soon after: holds (no flapping)
    d = decide(state, lb(420), 3, h, T + 5, POLICY)
    assert (d.code, d.desired) == ("stabilising", 3)
    # a surge (twice the count) goes up at once
    d = decide(state, lb(700), 3, h, T + 5, POLICY)
    assert (d.code, d.desired) == ("scale_up", 7)
    # after the window, a moderate rise goes up too
    d = decide(state, lb(420), 3, h, T + 31, POLICY)
    assert (d.code, d.desired) == ("scale_up", 5)


def test_a_capped_step_up_holds_for_a_window() -> None:
    state = app(2, max=40)
    h = settled()
    up = decide(state, lb(3000), 2, h, T, POLICY)
    assert up.desired == 6
    h = record(h, up, T, POLICY, applied=True)
    assert h.window_max(T, 30) == 30


def test_pending_change_counts_as_current_until_the_record_lands() -> None:
    state = app(2)
    h = observe_app(settled(), state, T, POLICY)
    up = decide(state, lb(550), 2, h, T, POLICY)
    h = record(h, up, T, POLICY, applied=True)
    # the controller has not republished yet: no second command
    again = decide(state, lb(550), 2, h, T + 4, POLICY)
    assert (again.change, again.current) == (False, 6)
    # the record lands: our own change, not a manual one
    h = observe_app(h, scaled(state, 6, 2), T + 5, POLICY)
    assert (h.pending, h.last_source, h.last_change) == (None, "autoscaler", T)


def test_manual_scale_up_is_the_new_starting_point_for_a_window() -> None:
    state = app(2)
    h = observe_app(settled(), state, T, POLICY)
    manual = scaled(state, 8, 2)
    h = observe_app(h, manual, T + 1, POLICY)
    assert (h.last_source, h.last_direction, h.last_change) == ("manual", 1, T + 1)
    d = decide(manual, lb(200), 8, h, T + 20, POLICY)
    assert (d.code, d.desired) == ("stabilising", 8)
    d = decide(manual, lb(200), 8, h, T + 32, POLICY)
    assert (d.code, d.desired) == ("scale_down", 4)


def test_manual_scale_down_under_load_is_corrected_after_the_up_cooldown() -> None:
    state = app(6)
    h = observe_app(settled(), state, T, POLICY)
    manual = scaled(state, 2, 2)
    h = observe_app(h, manual, T + 1, POLICY)
    assert decide(manual, lb(600), 2, h, T + 2, POLICY).code == "cooldown"
    d = decide(manual, lb(600), 2, h, T + 5, POLICY)
    assert (d.code, d.desired) == ("scale_up", 6)


def test_wake_resets_idleness() -> None:
    state = app(0, min=0)
    h = settled()
    wake = decide(state, lb(0, held=1), 0, h, T, POLICY, wake=True)
    h = record(h, wake, T, POLICY, applied=True)
    up = scaled(state, 1, 2)
    h = observe_app(h, up, T + 1, POLICY)
    d = decide(up, lb(0), 1, h, T + 30, POLICY)
    assert d.code != "to_zero"
    d = decide(up, lb(0), 1, h, T + 61, POLICY)
    assert d.code == "to_zero"


def test_min_zero_without_route_is_refused_by_the_spec() -> None:
    with pytest.raises(ValueError, match="needs a route"):
        app(1, min=0, route=False)


def test_autoscaling_off() -> None:
    spec = app().spec.model_copy(update={"autoscale": None})
    state = app().model_copy(update={"spec": spec})
    d = decide(state, lb(10_000), 1, settled(), T, POLICY)
    assert (d.change, d.reason) == (False, "autoscaling is off")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"tolerance": 1.5},
        {"max_step_up": 0},
        {"surge_factor": 1.0},
        {"idle_after": 0},
        {"scale_down_window": -1},
        {"max_step_down_percent": -1},
    ],
)
def test_bad_policy_is_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):  # noqa: PT011
        Policy(**kwargs)


# -- simulation: the decisions over time, as the service would drive them --------------------


def simulate(
    loads: list[float], policy: Policy = POLICY, start: int = 2, **autoscale: Any
) -> list[tuple[float, Decision]]:
    """One evaluation per second; every change is applied and lands at once."""
    state = app(start, **autoscale)
    h = History.start(0.0)
    changes: list[tuple[float, Decision]] = []
    for t, load in enumerate(loads):
        now = float(t)
        h = observe_app(h, state, now, policy)
        d = decide(state, lb(load), state.replicas, h, now, policy)
        h = record(h, d, now, policy, applied=True)
        if d.change:
            changes.append((now, d))
            state = scaled(state, d.desired, state.generation + 1)
    return changes


def test_simulated_load_up_then_gone() -> None:
    loads = [150.0] * 40 + [900.0] * 20 + [0.0] * 120
    changes = simulate(loads)
    counts = [d.desired for _, d in changes]
    # load up: 2 -> 9 in two fast steps (step cap 4 from 2, then the rest)
    assert counts[:2] == [6, 9]
    assert changes[1][0] - changes[0][0] <= POLICY.up_cooldown + 1
    # load gone: no scale-down before the window has passed since the load stopped
    first_down = next(t for t, d in changes if d.direction < 0)
    assert first_down >= 60 + POLICY.scale_down_window
    assert counts[-1] == 1
    assert all(d.direction < 0 for _, d in changes[2:])


def test_simulated_scale_to_zero_and_back() -> None:
    loads = [50.0] * 10 + [0.0] * 100
    changes = simulate(loads, start=1, min=0)
    assert [(d.code, d.desired) for _, d in changes] == [("to_zero", 0)]
    assert changes[0][0] >= 10 + POLICY.idle_after - 1


def direction_changes(changes: list[tuple[float, Decision]]) -> list[float]:
    out: list[float] = []
    last = 0
    for t, d in changes:
        if last and d.direction != last:
            out.append(t)
        last = d.direction
    return out


@settings(max_examples=150, deadline=None)
@given(
    mean=st.floats(min_value=50, max_value=2000),
    noise=st.lists(st.floats(min_value=-0.3, max_value=0.3), min_size=120, max_size=240),
)
def test_no_flapping_under_noisy_steady_load(mean: float, noise: list[float]) -> None:
    """Under a steady load with +-30% noise, at most one direction change per window."""
    changes = simulate([mean * (1 + n) for n in noise], start=4, max=50)
    flips = direction_changes(changes)
    for a, b in itertools.pairwise(flips):
        assert b - a >= POLICY.scale_down_window, (flips, [(t, d.reason) for t, d in changes])


@settings(max_examples=150, deadline=None)
@given(
    loads=st.lists(st.floats(min_value=0, max_value=5000), min_size=1, max_size=120),
    start=st.integers(min_value=0, max_value=12),
    low=st.integers(min_value=0, max_value=5),
    span=st.integers(min_value=0, max_value=10),
)
def test_decisions_stay_in_bounds_and_steps_are_capped(
    loads: list[float], start: int, low: int, span: int
) -> None:
    high = max(low, 1) + span
    state = app(start, min=low, max=high)
    h = History.start(0.0)
    for t, load in enumerate(loads):
        now = float(t)
        h = observe_app(h, state, now, POLICY)
        d = decide(state, lb(load), state.replicas, h, now, POLICY)
        h = record(h, d, now, POLICY, applied=True)
        if not d.change:
            continue
        in_bounds = low <= state.replicas <= high
        assert low <= d.desired <= high
        if d.code in ("scale_up", "scale_down") and in_bounds:
            step = abs(d.desired - d.current)
            cap_up = max(POLICY.max_step_up, d.current)
            cap_down = max(POLICY.max_step_down, d.current // 2)
            assert step <= (cap_up if d.direction > 0 else cap_down)
        if d.desired == 0:
            assert d.code == "to_zero"
        state = scaled(state, d.desired, state.generation + 1)
