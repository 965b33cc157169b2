"""The autoscaler's I/O shell: bus in, ``decide`` in the middle, scale commands out.

Every ``interval`` (and at once when a balancer sample or a wake-up arrives) each app with
``autoscale`` is evaluated: the app record, its readiness and the metrics book go into
``decide``; a change is sent to the controller as a ``scale`` command (the controller stays
the one writer of desired state). A refusal or a timeout is logged, reported as an event
and in the status, and retried with backoff. Each change is an event on
``events/scale``; the last decision per app is retained on ``status/scaler/<ns>/<app>``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from core.backoff import Backoff
from core.codec import Envelope
from core.commands import Reply, ScaleCommand
from core.config import ServiceConfig
from core.election import Candidate, candidates, choose_leader
from core.errors import CodecError, ShoalError
from core.runner import Reconciler
from core.service import Service
from core.state import (
    AppHealth,
    AppState,
    LbMetrics,
    NodeMetrics,
    Presence,
    ScalerStatus,
    WakeUp,
)
from services.scaler.decide import Decision, History, Policy, decide, observe_app, record
from services.scaler.metrics import MetricsBook

WAKE_TTL = 30.0


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
    status_at: float = 0.0


class ScalerService(Service):
    name = "scaler"

    def __init__(self, config: ServiceConfig, settings: ScalerSettings | None = None) -> None:
        super().__init__(config)
        self.settings = settings or ScalerSettings()
        self.policy = self.settings.policy
        self.book = MetricsBook(
            window=self.settings.metrics_window, node_ttl=self.settings.node_ttl
        )
        self.apps: dict[str, AppState] = {}
        self.health: dict[str, AppHealth] = {}
        self.wakes: dict[str, float] = {}
        self.state: dict[str, _AppBook] = {}
        self.runner: Reconciler[str] = Reconciler(
            "scaler", self.evaluate, keys=self._autoscaled, resync=self.settings.interval
        )
        self._leading = False
        self._lead_epoch = 0
        self.bus.on_connect(self._on_connect)

    # -- inputs ---------------------------------------------------------------------------

    async def setup(self) -> None:
        t = self.topics
        await self.bus.subscribe(t.all_apps, self._on_app)
        await self.bus.subscribe(t.all_health, self._on_health)
        await self.bus.subscribe(t.all_lb_metrics, self._on_lb, qos=0)
        await self.bus.subscribe(t.all_node_metrics, self._on_node, qos=0)
        await self.bus.subscribe(t.all_wake, self._on_wake, allow_json=True)
        await self.bus.subscribe(t.all_services(self.name), self._on_presence, cache=True)

    # -- leadership -----------------------------------------------------------------------

    def is_leader(self) -> bool:
        # a claim holds for the connection it was made on: after a reconnect the broker
        # has published our last will, and the claim must be won again
        return self._leading and self._lead_epoch == self.bus.connects

    async def _on_connect(self) -> None:
        await self.bus.sync(timeout=30)
        await self._elect()

    async def _on_presence(self, topic: str, env: Envelope | None) -> None:
        await self._elect()

    async def _elect(self) -> None:
        if not self.bus.connected:
            return
        others: list[Presence] = []
        for topic, env in self.bus.cached(self.topics.all_services(self.name)).items():
            presence = self.read(topic, env, Presence)
            if presence is None:
                continue
            if presence.instance != self.instance:
                others.append(presence)
        pool = [Candidate(self.started, self.instance, self.is_leader())]
        pool.extend(candidates(others, self.name))
        leader = choose_leader(pool)
        if leader == self.instance and not self.is_leader():
            self._leading, self._lead_epoch = True, self.bus.connects
            self.log.info("leading: sending scale commands")
            for entry in self.state.values():
                entry.status_sig = ()  # rewrite every status as the new writer
            self.runner.mark_all()
        elif leader != self.instance and self._leading:
            self.log.warning("standing by", leader=leader)
            self._leading = False
        else:
            return
        try:
            await self.announce()
        except ShoalError as err:
            self.log.warning("presence not published", error=str(err))

    def _key(self, topic: str, kind: str) -> str | None:
        parts = self.topics.parts(topic)
        if len(parts) != 3 or parts[0] != kind:
            self.log.warning("unexpected topic dropped", topic=topic)
            return None
        return f"{parts[1]}/{parts[2]}"

    def _on_app(self, topic: str, env: Envelope | None) -> None:
        key = self.track_app(topic, env, self.apps)
        if key is not None:
            self.runner.mark(key)

    def _on_health(self, topic: str, env: Envelope | None) -> None:
        key = self._key(topic, "health")
        if key is None:
            return
        if env is None:
            self.health.pop(key, None)
            return
        value = self.read(topic, env, AppHealth)
        if value is not None:
            self.health[key] = value

    def _on_lb(self, topic: str, env: Envelope | None) -> None:
        if env is None:
            return
        sample = self.read(topic, env, LbMetrics)
        if sample is None:
            return
        self.book.add_lb(sample, time.monotonic())
        # evaluate now (collapses with a queued mark) so a step in load, or a request held
        # for an app at zero, is acted on without waiting for the next tick
        for key, route in sample.apps.items():
            app = self.apps.get(key)
            if app is not None and app.spec.autoscale is not None and (route.held or app.replicas):
                self.runner.mark(key)

    def _on_node(self, topic: str, env: Envelope | None) -> None:
        if env is None:
            return
        sample = self.read(topic, env, NodeMetrics)
        if sample is not None:
            self.book.add_node(sample, time.monotonic())

    def _on_wake(self, topic: str, env: Envelope | None) -> None:
        key = self._key(topic, "wake")
        if key is None or env is None:
            return
        wake = self.read(topic, env, WakeUp)
        if wake is None:
            return
        if f"{wake.namespace}/{wake.name}" != key:
            self.log.warning("wake-up on the wrong topic dropped", topic=topic)
            return
        self.log.info("wake-up", app=key, held=wake.held)
        self.wakes[key] = time.monotonic()
        self.runner.mark(key)

    def _autoscaled(self) -> list[str]:
        keys = [k for k, a in self.apps.items() if a.spec.autoscale is not None]
        # apps we keep state for but that are gone or no longer autoscaled: to forget
        return keys + [k for k in self.state if k not in keys]

    # -- the loop -------------------------------------------------------------------------

    async def main(self) -> None:
        await self.runner.run()

    async def evaluate(self, key: str) -> float | None:
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
            app=key,
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
            env = await self.bus.request(
                self.topics.cmd("scale"),
                "scale",
                command,
                timeout=self.settings.request_timeout,
            )
            reply = env.open(Reply)
        except (ShoalError, CodecError) as err:
            error = str(err)
        else:
            error = "" if reply.ok else "; ".join(reply.errors) or "refused without a reason"
        if error:
            self.log.error(
                "scale command failed; will retry",
                app=d.key,
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
            return error
        self.log.info("scaled", app=d.key, frm=d.current, to=d.desired, reason=d.reason)
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
            await self.bus.publish(
                self.topics.scaler_status(d.namespace, d.name),
                "scaler_status",
                status,
                retain=True,
                timeout=self.settings.request_timeout,
            )
        except ShoalError as err:
            self.log.warning("status not published", app=d.key, error=str(err))
            return
        entry.status_sig = sig
        entry.status_at = now

    async def _forget(self, key: str) -> None:
        """The app is gone or no longer autoscaled: drop its history and retained status."""
        self.wakes.pop(key, None)
        if key not in self.state:
            return
        if not self.is_leader():
            self.state.pop(key, None)
            return
        ns, _, name = key.partition("/")
        await self.bus.clear(self.topics.scaler_status(ns, name))  # a failure is retried
        self.state.pop(key, None)
