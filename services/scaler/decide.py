"""Scaling decisions: pure functions over core models (no bus, no Docker, no clock).

``decide(app, observation, ready, history, now, policy, wake)`` returns a frozen
``Decision``: the replica count the app should have, a machine-readable ``code`` and a
human ``reason`` naming the metric values behind it. ``record`` folds a decision into the
app's ``History`` (the recommendations of the stabilisation window, the last change, the
last activity); ``observe_app`` folds in changes made by someone else (``shoal scale``).

How a recommendation is made (target tracking, as Kubernetes' HPA does it):

- additive metrics (requests/s, in-flight requests, cpu and memory in use) give
  ``ceil(total / what one replica should carry at the target)``;
- p95 latency is not additive: above target it scales proportionally
  (``ceil(ready * p95 / target)``), well below target (under ``latency_release`` of it)
  it releases one replica, in between it holds;
- a metric within ``tolerance`` of its target recommends the current count;
- several targets: the largest recommendation wins.

How the recommendation becomes a change:

- up at once (after ``up_cooldown`` since the last change), at most ``max(max_step_up,
  max_step_up_percent of current)`` replicas per step;
- down only to the *largest* recommendation of the last ``scale_down_window`` seconds
  (so a dip in load does not shrink the app), after ``down_cooldown``, at most
  ``max(max_step_down, max_step_down_percent of current)`` per step;
- no flapping: after the autoscaler scaled down, scaling up again within the window needs
  a surge (``surge_factor`` times the current count), so under steady load there is at
  most one change of direction per window;
- clamped to ``[max(min, 1), max]`` while the app runs; a count outside ``[min, max]`` is
  corrected at once;
- scale to zero: with ``min: 0`` and a route, an app without a request for ``idle_after``
  seconds (while a balancer reports) goes to 0; a wake-up (or a held request) brings it
  to ``max(1, min)`` at once, bypassing cooldowns.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Literal

from core.keys import AppKey
from core.spec import Autoscale, ScaleTarget
from core.state import AppState, ScalerCode

__all__ = [
    "Decision",
    "History",
    "Observation",
    "Policy",
    "Reading",
    "decide",
    "observe_app",
    "recommend",
    "record",
]

EPS = 1e-9


@dataclass(frozen=True, slots=True)
class Policy:
    """The autoscaler's tuning; every field is a command-line option of the service."""

    scale_down_window: float = 30.0
    up_cooldown: float = 3.0
    down_cooldown: float = 10.0
    tolerance: float = 0.1
    max_step_up: int = 4
    max_step_up_percent: float = 100.0
    max_step_down: int = 1
    max_step_down_percent: float = 50.0
    idle_after: float = 60.0
    surge_factor: float = 2.0
    latency_release: float = 0.5
    pending_timeout: float = 10.0

    def __post_init__(self) -> None:
        if self.scale_down_window < 0 or self.up_cooldown < 0 or self.down_cooldown < 0:
            raise ValueError("windows and cooldowns must not be negative")
        if not 0 <= self.tolerance < 1:
            raise ValueError("tolerance must be in [0, 1)")
        if self.max_step_up < 1 or self.max_step_down < 1:
            raise ValueError("step caps must be at least 1")
        if self.max_step_up_percent < 0 or self.max_step_down_percent < 0:
            raise ValueError("step percentages must not be negative")
        if self.idle_after <= 0:
            raise ValueError("idle_after must be positive")
        if self.surge_factor <= 1:
            raise ValueError("surge_factor must be greater than 1")
        if not 0 < self.latency_release < 1:
            raise ValueError("latency_release must be in (0, 1)")


@dataclass(frozen=True, slots=True)
class Observation:
    """What the metrics say about one app right now (averaged over a short window).

    ``None`` means "nobody reported it": no balancer sample (``rps``, ``inflight``), no
    request in the window (``p95_ms``), no agent sample (``cpu``, ``memory``).
    """

    rps: float | None = None
    inflight: float | None = None
    p95_ms: float | None = None
    requests: int = 0
    held: int = 0
    cpu: float | None = None
    memory: float | None = None
    usage_replicas: int = 0
    lb_fresh: bool = False

    @property
    def active(self) -> bool:
        """Did the app see any request (served, in flight or held) in the window?"""
        return bool(
            self.requests > 0
            or self.held > 0
            or (self.rps or 0.0) > EPS
            or (self.inflight or 0.0) > EPS
        )


@dataclass(frozen=True, slots=True)
class History:
    """What the autoscaler remembers about one app between evaluations.

    ``recommendations`` is a monotonic queue of ``(time, replicas)``: each entry larger
    than every later one, so its head is the largest recommendation of the window.
    """

    since: float
    recommendations: tuple[tuple[float, int], ...] = ()
    last_change: float | None = None
    last_direction: int = 0
    last_source: Literal["autoscaler", "manual", ""] = ""
    last_active: float | None = None
    seen_replicas: int | None = None
    seen_generation: int | None = None
    pending: int | None = None
    pending_since: float = 0.0

    @classmethod
    def start(cls, now: float) -> History:
        return cls(since=now, last_active=now)

    def window_max(self, now: float, window: float) -> int | None:
        for ts, value in self.recommendations:
            if ts >= now - window:
                return value
        return None

    def current(self, app: AppState, now: float, policy: Policy) -> int:
        """The app's replica count, counting a change we asked for that has not landed yet."""
        if self.pending is not None and now - self.pending_since < policy.pending_timeout:
            return self.pending
        return app.replicas


@dataclass(frozen=True, slots=True)
class Reading:
    """One target's view: the measured value, the target and the count it recommends."""

    metric: str
    value: float
    target: float
    replicas: int
    unit: str = ""

    def describe(self) -> str:
        return (
            f"{self.metric} {_num(self.value)}{self.unit} (target {_num(self.target)}{self.unit})"
        )


@dataclass(frozen=True, slots=True)
class Decision:
    namespace: str
    name: str
    current: int
    desired: int
    code: ScalerCode
    reason: str
    recommendation: int | None = None
    readings: tuple[Reading, ...] = ()
    metrics: dict[str, float] = field(default_factory=dict)
    active: bool = False

    @property
    def change(self) -> bool:
        return self.desired != self.current

    @property
    def direction(self) -> int:
        return (self.desired > self.current) - (self.desired < self.current)

    @property
    def key(self) -> AppKey:
        return AppKey(self.namespace, self.name)


def _num(value: float) -> str:
    if value == int(value) and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


def _ceil(x: float) -> int:
    return max(0, math.ceil(x - EPS))


def _additive(total: float, capacity: float, n: int, current: int, tolerance: float) -> int:
    """Replicas needed to carry ``total`` at ``capacity`` each; hold within tolerance."""
    if n > 0 and abs(total / (n * capacity) - 1.0) <= tolerance:
        return current
    return _ceil(total / capacity)


def recommend(
    target: ScaleTarget,
    obs: Observation,
    ready: int,
    current: int,
    cpu_request: float,
    memory_request: int,
    policy: Policy,
) -> tuple[int | None, tuple[Reading, ...]]:
    """The largest recommendation over the app's targets (None when no target has data)."""
    readings: list[Reading] = []
    tol = policy.tolerance
    serving = ready if ready > 0 else current
    if target.rps_per_replica is not None and obs.rps is not None:
        rec = _additive(obs.rps, target.rps_per_replica, serving, current, tol)
        per = obs.rps / serving if serving else obs.rps
        readings.append(Reading("rps/replica", per, target.rps_per_replica, rec))
    if target.inflight_per_replica is not None and obs.inflight is not None:
        rec = _additive(obs.inflight, target.inflight_per_replica, serving, current, tol)
        per = obs.inflight / serving if serving else obs.inflight
        readings.append(Reading("inflight/replica", per, target.inflight_per_replica, rec))
    if target.p95_latency_ms is not None and obs.p95_ms is not None and serving > 0:
        ratio = obs.p95_ms / target.p95_latency_ms
        if ratio > 1 + tol:
            rec = _ceil(serving * ratio)
        elif ratio < policy.latency_release:
            rec = serving - 1
        else:
            rec = current
        readings.append(Reading("p95", obs.p95_ms, target.p95_latency_ms, rec, "ms"))
    if target.cpu_utilization is not None and obs.cpu is not None:
        capacity = cpu_request * target.cpu_utilization
        rec = _additive(obs.cpu, capacity, obs.usage_replicas, current, tol)
        util = obs.cpu / (obs.usage_replicas * cpu_request) if obs.usage_replicas else 0.0
        readings.append(Reading("cpu", util, target.cpu_utilization, rec))
    if target.memory_utilization is not None and obs.memory is not None:
        capacity = memory_request * target.memory_utilization
        rec = _additive(obs.memory, capacity, obs.usage_replicas, current, tol)
        util = obs.memory / (obs.usage_replicas * memory_request) if obs.usage_replicas else 0.0
        readings.append(Reading("memory", util, target.memory_utilization, rec))
    if not readings:
        return None, ()
    return max(r.replicas for r in readings), tuple(readings)


def _metrics(obs: Observation, ready: int) -> dict[str, float]:
    out: dict[str, float] = {"ready": float(ready)}
    for name in ("rps", "inflight", "p95_ms", "cpu", "memory"):
        value = getattr(obs, name)
        if value is not None:
            out[name] = round(float(value), 3)
    if obs.held:
        out["held"] = float(obs.held)
    return out


def _step_up(current: int, policy: Policy) -> int:
    return max(policy.max_step_up, _ceil(current * policy.max_step_up_percent / 100))


def _step_down(current: int, policy: Policy) -> int:
    return max(policy.max_step_down, int(current * policy.max_step_down_percent / 100 + EPS))


def decide(
    app: AppState,
    obs: Observation,
    ready: int,
    history: History,
    now: float,
    policy: Policy,
    wake: bool = False,
) -> Decision:
    """What the app's replica count should be now, and why."""
    current = history.current(app, now, policy)
    metrics = _metrics(obs, ready)
    auto: Autoscale | None = app.spec.autoscale
    active = obs.active

    def change(
        desired: int,
        code: ScalerCode,
        reason: str,
        rec: int | None = None,
        readings: tuple[Reading, ...] = (),
    ) -> Decision:
        return Decision(
            namespace=app.namespace,
            name=app.name,
            current=current,
            desired=desired,
            code=code,
            reason=reason,
            recommendation=rec,
            readings=readings,
            metrics=metrics,
            active=active,
        )

    def hold(
        code: ScalerCode, reason: str, rec: int | None = None, readings: tuple[Reading, ...] = ()
    ) -> Decision:
        return change(current, code, reason, rec, readings)

    if auto is None:
        return hold("hold", "autoscaling is off")

    floor = max(auto.min, 1)

    # 1. Scaled to zero: only a request brings it back, and at once.
    if current == 0 and auto.min == 0:
        if wake or obs.held > 0 or active:
            why = f"{obs.held} request(s) held" if obs.held else "a request arrived"
            return change(min(floor, auto.max), "wake", f"wake-up: {why}")
        return hold("at_zero", "scaled to zero; the balancer wakes the app on its first request")

    # 2. Outside [min, max] (a spec change, a manual scale): corrected at once.
    if current < auto.min:
        return change(auto.min, "bounds", f"{current} is below autoscale min {auto.min}")
    if current > auto.max:
        return change(auto.max, "bounds", f"{current} is above autoscale max {auto.max}")

    sample_rec, readings = recommend(
        auto.target,
        obs,
        ready,
        current,
        app.spec.resources.cpu,
        app.spec.resources.memory,
        policy,
    )
    rec = None if sample_rec is None else min(max(sample_rec, floor), auto.max)
    since_change = math.inf if history.last_change is None else now - history.last_change
    what = "; ".join(f"{r.describe()} -> {r.replicas}" for r in readings)

    # 3. Scale to zero after a quiet spell.
    if (
        auto.min == 0
        and app.spec.route is not None
        and obs.lb_fresh
        and not active
        and history.last_active is not None
        and now - history.last_active >= policy.idle_after
    ):
        idle = now - history.last_active
        if since_change < policy.down_cooldown:
            return hold(
                "cooldown", f"idle {_num(round(idle))}s but changed {since_change:.0f}s ago"
            )
        return change(0, "to_zero", f"no request for {_num(round(idle))}s: scaling to zero", rec)

    if rec is None:
        return hold("no_metrics", "no metrics for the autoscale targets yet")

    if rec > current:
        desired = min(rec, current + _step_up(current, policy))
        if since_change < policy.up_cooldown:
            return hold(
                "cooldown",
                f"{what}; up cooldown ({since_change:.0f}s since the last change)",
                rec,
                readings,
            )
        if (
            history.last_direction < 0
            and history.last_source == "autoscaler"
            and since_change < policy.scale_down_window
            and rec < current * policy.surge_factor
        ):
            return hold(
                "stabilising",
                f"{what}; scaled down {since_change:.0f}s ago, going back up waits for the "
                f"window ({_num(policy.scale_down_window)}s) unless load reaches "
                f"{_num(policy.surge_factor)}x",
                rec,
                readings,
            )
        capped = " (step cap)" if desired < rec else ""
        return change(desired, "scale_up", f"{what}: {current} -> {desired}{capped}", rec, readings)

    if rec < current:
        observed = now - history.since
        if observed < policy.scale_down_window:
            return hold(
                "stabilising",
                f"{what}; observed for {observed:.0f}s of the "
                f"{_num(policy.scale_down_window)}s window",
                rec,
                readings,
            )
        peak = max(rec, history.window_max(now, policy.scale_down_window) or rec)
        if peak >= current:
            return hold(
                "stabilising",
                f"{what}; highest recommendation in the last "
                f"{_num(policy.scale_down_window)}s is {peak}",
                rec,
                readings,
            )
        if since_change < policy.down_cooldown:
            return hold(
                "cooldown",
                f"{what}; down cooldown ({since_change:.0f}s since the last change)",
                rec,
                readings,
            )
        desired = max(peak, current - _step_down(current, policy))
        capped = " (step cap)" if desired > peak else ""
        return change(
            desired,
            "scale_down",
            f"{what}: {current} -> {desired} (highest in window {peak}){capped}",
            rec,
            readings,
        )

    if sample_rec is not None and sample_rec > auto.max:
        return hold("hold", f"{what}: at autoscale max {auto.max}", rec, readings)
    if sample_rec is not None and sample_rec < floor:
        return hold("hold", f"{what}: at the floor {floor}", rec, readings)
    return hold("hold", f"{what}: on target at {current}", rec, readings)


def _push(
    recs: tuple[tuple[float, int], ...], ts: float, value: int, window: float
) -> tuple[tuple[float, int], ...]:
    kept = tuple((t, v) for t, v in recs if t >= ts - window and v > value)
    return (*kept, (ts, value))


def record(
    history: History, decision: Decision, now: float, policy: Policy, applied: bool
) -> History:
    """The history after ``decision`` was evaluated (and, when ``applied``, carried out)."""
    recs = history.recommendations
    if decision.recommendation is not None:
        recs = _push(recs, now, decision.recommendation, policy.scale_down_window)
    out = replace(
        history,
        recommendations=recs,
        last_active=now if decision.active else history.last_active,
    )
    if applied and decision.change:
        if decision.desired > decision.current:
            # an up step holds for a window even if its recommendation was capped lower
            out = replace(
                out,
                recommendations=_push(
                    out.recommendations,
                    now,
                    max(decision.desired, decision.recommendation or 0),
                    policy.scale_down_window,
                ),
            )
        out = replace(
            out,
            last_change=now,
            last_direction=decision.direction,
            last_source="autoscaler",
            pending=decision.desired,
            pending_since=now,
        )
        if decision.code == "wake":
            out = replace(out, last_active=now)
    return out


def observe_app(history: History, app: AppState, now: float, policy: Policy) -> History:
    """Fold the app record into the history.

    A replica count we did not ask for (``shoal scale``, an apply) is a change by someone
    else: it restarts the cooldowns and, when it went up, holds for a stabilisation window,
    so a manual scale-up is not undone at once; the autoscaler keeps tracking from there.
    """
    if history.seen_generation == app.generation:
        return history
    out = replace(history, seen_generation=app.generation, seen_replicas=app.replicas)
    previous = history.seen_replicas
    ours = history.pending is not None and app.replicas == history.pending
    out = replace(out, pending=None)
    if previous is None or app.replicas == previous or ours:
        return out
    direction = 1 if app.replicas > previous else -1
    recs = out.recommendations
    if direction > 0:
        recs = _push(recs, now, app.replicas, policy.scale_down_window)
    elif app.replicas == 0:
        recs = ()
    return replace(
        out,
        recommendations=recs,
        last_change=now,
        last_direction=direction,
        last_source="manual",
        last_active=now if app.replicas > 0 and previous == 0 else out.last_active,
    )
