"""The autoscaler's I/O shell: bus in, ``decide`` in the middle, scale commands out.

Every ``interval`` (and at once when a balancer sample or a wake-up arrives) each app with
``autoscale`` is evaluated: the app record, its readiness and the metrics book go into
``decide``; a change is sent to the controller as a ``scale`` command (the controller stays
the one writer of desired state). A refusal or a timeout is logged, reported as an event
and in the status, and retried with backoff. Each change is an event on
``events/scale``; the last decision per app is retained on ``status/scaler/<ns>/<app>``.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

from core.backoff import Backoff
from core.channels import APPS, HEALTH, LB_METRICS, NODE_METRICS, SCALE, SCALER_STATUS, WAKE
from core.commands import ScaleCommand
from core.config import ServiceConfig
from core.errors import ShoalError
from core.keys import AppKey
from core.runner import Reconciler
from core.service import Service
from core.state import AppHealth, AppState, LbMetrics, NodeMetrics, ScalerStatus, WakeUp
from core.view import View
from services.scaler.decide import Decision, History, Policy, decide, observe_app, record
from services.scaler.metrics import MetricsBook
from services.scaler.prom import ScalerCollector

WAKE_TTL = 30.0


def _app_key(text: str) -> AppKey | None:
    """The app a balancer sample names (``ns/name``), or None when it names none."""
    try:
        return AppKey.parse(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ScalerSettings:
    policy: Policy = field(default_factory=Policy)
    interval: float = 1.0
    metrics_window: float = 3.0
    node_ttl: float = 15.0
    request_timeout: float = 5.0
    status_interval: float = 5.0


@dataclass
class _AppBook:
    history: History
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=1.0, cap=30.0))
    retry_at: float = 0.0
    last_scaled: float | None = None
    status_sig: tuple[object, ...] = ()
    desired: int | None = None  # what the last decision wanted
    status_at: float = 0.0


class ScalerService(Service):
    name = "scaler"

    apps: View[AppKey, AppState]
    health: View[AppKey, AppHealth]

    def __init__(self, config: ServiceConfig, settings: ScalerSettings | None = None) -> None:
        super().__init__(config)
        self.settings = settings or ScalerSettings()
        self.policy = self.settings.policy
        self.book = MetricsBook(
            window=self.settings.metrics_window, node_ttl=self.settings.node_ttl
        )
        self.wakes: dict[AppKey, float] = {}
        self.state: dict[AppKey, _AppBook] = {}
        self.runner: Reconciler[AppKey] = Reconciler(
            "scaler", self.evaluate, keys=self._autoscaled, resync=self.settings.interval
        )
        self.leadership = self.elect_leader(
            on_elected=self._on_elected,
        )
        self.prom = ScalerCollector(self)
        self.metrics.register(self.prom)

    def wanted(self) -> dict[AppKey, int]:
        """What the last decision wanted for each app scaled now (for ``/metrics``)."""
        return {key: e.desired for key, e in self.state.items() if e.desired is not None}

    # -- inputs ---------------------------------------------------------------------------

    async def setup(self) -> None:
        self.apps = await self.bus.view(APPS, on_change=self._on_app)
        self.health = await self.bus.view(HEALTH)
        await self.bus.subscribe(LB_METRICS, self._on_lb)
        await self.bus.subscribe(NODE_METRICS, self._on_node)
        await self.bus.subscribe(WAKE, self._on_wake)
        await self.leadership.setup()

    def _on_app(self, key: AppKey, app: AppState | None) -> None:
        self.runner.mark(key)

    def _on_lb(self, instance: str, sample: LbMetrics | None) -> None:
        if sample is None:
            return
        self.book.add_lb(sample, time.monotonic())
        # evaluate now (collapses with a queued mark) so a step in load, or a request held
        # for an app at zero, is acted on without waiting for the next tick
        for name, route in sample.apps.items():
            key = _app_key(name)
            if key is None:
                continue
            app = self.apps.get(key)
            if app is not None and app.spec.autoscale is not None and (route.held or app.replicas):
                self.runner.mark(key)

    def _on_node(self, node: str, sample: NodeMetrics | None) -> None:
        if sample is not None:
            self.book.add_node(sample, time.monotonic())

    def _on_wake(self, key: AppKey, wake: WakeUp | None) -> None:
        if wake is None:
            return
        self.log.info("wake-up", app=str(key), held=wake.held)
        self.wakes[key] = time.monotonic()
        self.runner.mark(key)

    def _autoscaled(self) -> list[AppKey]:
        keys = [k for k, a in self.apps.items() if a.spec.autoscale is not None]
        # apps we keep state for but that are gone or no longer autoscaled: to forget
        return keys + [k for k in self.state if k not in keys]

    # -- leadership -----------------------------------------------------------------------

    def _on_elected(self) -> None:
        for entry in self.state.values():
            entry.status_sig = ()  # rewrite every status as the new writer
        self.runner.mark_all()

    # -- the loop -------------------------------------------------------------------------

    async def main(self) -> None:
        async with asyncio.TaskGroup() as tasks:
            # standbys evaluate too: a takeover starts with a warm window
            tasks.create_task(self.runner.run(), name="scaler-runner")
            await self.bus.wait_connected()
            await self.bus.settle()  # elect once the retained apps and presences are in
            tasks.create_task(self.leadership.run(), name="scaler-leadership")

    async def evaluate(self, key: AppKey) -> float | None:
        app = self.apps.get(key)
        if app is None or app.spec.autoscale is None:
            await self._forget(key)
            return None
        now = time.monotonic()
        entry = self.state.get(key)
        if entry is None:
            entry = self.state[key] = _AppBook(History.start(now))
        history = observe_app(entry.history, app, now, self.policy)
        health = self.health.get(key)
        ready = len(health.ready) if health is not None else 0
        wake_at = self.wakes.get(key)
        wake = wake_at is not None and now - wake_at < WAKE_TTL
        if wake and app.replicas > 0:
            self.wakes.pop(key, None)
        decision = decide(
            app, self.book.observe(key, now), ready, history, now, self.policy, wake=wake
        )
        self.log.debug(
            "evaluated",
            app=str(key),
            generation=app.generation,
            replicas=app.replicas,
            current=decision.current,
            desired=decision.desired,
            ready=ready,
            code=decision.code,
            reason=decision.reason,
        )
        if not self.is_leader():
            # standing by: keep the window warm for a takeover, act on nothing
            entry.history = record(history, decision, now, self.policy, applied=False)
            return None
        applied = False
        error = ""
        if decision.change:
            if now < entry.retry_at:
                entry.history = record(history, decision, now, self.policy, applied=False)
                return None
            error = await self._send(decision)
            applied = not error
            if applied:
                entry.backoff.reset()
                entry.retry_at = 0.0
                entry.last_scaled = time.time()
                if decision.code == "wake":
                    self.wakes.pop(key, None)
            else:
                entry.retry_at = now + entry.backoff.next()
        entry.history = record(history, decision, now, self.policy, applied=applied)
        await self._publish_status(entry, decision, error)
        return None

    async def _send(self, d: Decision) -> str:
        """Send the scale command; return an error message, or "" when the controller agreed."""
        command = ScaleCommand(
            namespace=d.namespace,
            name=d.name,
            replicas=d.desired,
            source="autoscaler",
            reason=d.reason[:500],
        )
        try:
            reply = await self.bus.request(SCALE, command, timeout=self.settings.request_timeout)
        except ShoalError as err:
            error = str(err)
        else:
            error = "" if reply.ok else "; ".join(reply.errors) or "refused without a reason"
        if error:
            self.log.error(
                "scale command failed; will retry",
                app=str(d.key),
                replicas=d.desired,
                error=error,
            )
            await self.emit(
                "scale",
                f"{d.key}: scaling {d.current} -> {d.desired} failed: {error}",
                namespace=d.namespace,
                app=d.name,
                severity="error",
                data={
                    "from": d.current,
                    "to": d.desired,
                    "code": d.code,
                    "error": error,
                    **d.metrics,
                },
            )
            self.prom.failed[d.namespace, d.name] += 1
            return error
        direction = "up" if d.desired > d.current else "down"
        self.prom.scaled[d.namespace, d.name, direction] += 1
        self.log.info("scaled", app=str(d.key), frm=d.current, to=d.desired, reason=d.reason)
        await self.emit(
            "scale",
            f"{d.key}: {d.current} -> {d.desired}: {d.reason}",
            namespace=d.namespace,
            app=d.name,
            data={"from": d.current, "to": d.desired, "code": d.code, **d.metrics},
        )
        return ""

    async def _publish_status(self, entry: _AppBook, d: Decision, error: str) -> None:
        code = "error" if error else d.code
        reason = f"{d.reason}; controller: {error}" if error else d.reason
        sig = (code, d.current, d.desired, error)
        entry.desired = d.desired
        now = time.monotonic()
        if sig == entry.status_sig and now - entry.status_at < self.settings.status_interval:
            return
        status = ScalerStatus(
            namespace=d.namespace,
            name=d.name,
            current=d.current,
            desired=d.desired,
            code=code,
            reason=reason,
            metrics=d.metrics,
            last_scaled=entry.last_scaled,
            ts=time.time(),
        )
        try:
            await self.bus.publish(SCALER_STATUS, status, timeout=self.settings.request_timeout)
        except ShoalError as err:
            self.log.warning("status not published", app=str(d.key), error=str(err))
            return
        entry.status_sig = sig
        entry.status_at = now

    async def _forget(self, key: AppKey) -> None:
        """The app is gone or no longer autoscaled: drop its history and retained status."""
        self.wakes.pop(key, None)
        if key not in self.state:
            return
        if not self.is_leader():
            self.state.pop(key, None)
            return
        await self.bus.clear(SCALER_STATUS, key)  # a failure is retried
        self.state.pop(key, None)
