"""Issue 8 end to end: the autoscaler follows real load through the balancer, without
flapping, takes an idle app to zero and wakes it on its first request, and bad autoscale
specs are refused.

The whole stack runs as processes on mosquitto and real Docker (``shoal-test/echo``), the
scaler with a short window (8 s), cooldowns and idle time. Load is clients on slow
requests (``/cgi-bin/sleep``) with random pauses, so the balancer's in-flight count is
noisy around a known mean: an ``inflight_per_replica`` target then asks for a known range
of replicas, and single samples keep calling for fewer replicas than the app has. The
scaling history is the controller's retained app record as it changes (the authority),
plus the scaler's ``events/scale``.
"""

from __future__ import annotations

import asyncio
import http.client
import itertools
import math
import random
import statistics
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from core.channels import APPS, EVENTS, HEALTH, LB_METRICS
from core.keys import AppKey
from core.state import AppHealth, AppState, Event, LbMetrics
from core.topics import matches
from tests.support.cluster import Cluster, HttpResult, http_get, wait_for
from tests.support.observer import Observer

pytestmark = pytest.mark.e2e

WINDOW = 8.0  # the scaler's --scale-down-window in these tests
IDLE_AFTER = 3.0
SCALER_ARGS = [
    "--interval", "0.5s",
    "--scale-down-window", f"{WINDOW:g}s",
    "--up-cooldown", "1s",
    "--cooldown", "2s",
    "--metrics-window", "2s",
    "--idle-after", f"{IDLE_AFTER:g}s",
]  # fmt: skip

APP = """
name: {name}
image: shoal-test/echo:v1
replicas: 1
resources: {{cpu: 0.05, memory: 32Mi}}
ports: {{http: 8080}}
health:
  readiness: {{http: /healthz, port: http, interval: 200ms, timeout: 500ms, failures: 1}}
route: {{host: {name}.test, path: /, port: http}}
termination: {{drain: 500ms, grace: 2s}}
autoscale: {autoscale}
"""

# Noisy steady load: clients with a 300 ms request and then a random pause of up to 300 ms
# each. In flight per client about 2/3 on average, so 9 clients keep about 6 requests in
# flight, but any one sample ranges widely: at 2 in flight per replica wanted, samples
# alone would recommend anything from 2 to 5 replicas. The window must keep the app at the
# top of that range rather than follow every dip.
BUSY_CLIENTS = 9
BUSY_TARGET = 2
BUSY_AUTOSCALE = f"{{min: 1, max: 6, target: {{inflight_per_replica: {BUSY_TARGET}}}}}"
SLEEPY_AUTOSCALE = "{min: 0, max: 2, target: {rps_per_replica: 50}}"


class BusWatch:
    """An ``Observer`` on its own thread and event loop, for synchronous tests."""

    def __init__(self, cluster: Cluster) -> None:
        self.observer = Observer(cluster.broker.url, cluster.prefix)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> BusWatch:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.observer.__aenter__(), self._loop).result(30)
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            asyncio.run_coroutine_threadsafe(
                self.observer.__aexit__(None, None, None), self._loop
            ).result(10)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            self._loop.close()

    def app(self, name: str) -> AppState | None:
        return self.observer.value(APPS, AppKey("default", name))

    def replicas(self, name: str) -> int | None:
        app = self.app(name)
        return None if app is None else app.replicas

    def ready(self, name: str) -> int:
        health = self.observer.value(HEALTH, AppKey("default", name))
        return 0 if health is None else len(health.ready)

    def ready_since(self, name: str, since: float) -> float | None:
        """Seconds from ``since`` until the health record first showed a ready replica."""
        topic = self.observer.topic(HEALTH, AppKey("default", name))
        for ts, seen_topic, env in list(self.observer.seen):
            if (
                ts >= since
                and seen_topic == topic
                and env is not None
                and env.open(AppHealth).ready
            ):
                return ts - since
        return None

    def history(self, name: str) -> list[tuple[float, int]]:
        """``(time, replicas)`` each time the controller's record of the app changed count."""
        topic = self.observer.topic(APPS, AppKey("default", name))
        out: list[tuple[float, int]] = []
        for ts, seen_topic, env in list(self.observer.seen):
            if seen_topic != topic or env is None:
                continue
            replicas = env.open(AppState).replicas
            if not out or out[-1][1] != replicas:
                out.append((ts, replicas))
        return out

    def inflight_samples(self, name: str, since: float) -> list[int]:
        """The in-flight counts the balancer reported for the app since ``since``."""
        lb = LB_METRICS.pattern(self.observer.prefix)
        out: list[int] = []
        for ts, seen_topic, env in list(self.observer.seen):
            if ts >= since and matches(lb, seen_topic) and env is not None:
                route = env.open(LbMetrics).apps.get(str(AppKey("default", name)))
                if route is not None:
                    out.append(route.inflight)
        return out

    def scale_events(self, name: str) -> list[tuple[float, Event]]:
        topic = self.observer.topic(EVENTS, "scale")
        events = [
            (ts, env.open(Event))
            for ts, seen_topic, env in list(self.observer.seen)
            if seen_topic == topic and env is not None
        ]
        return [(ts, e) for ts, e in events if e.app == name]


@dataclass(frozen=True)
class Change:
    at: float
    frm: int
    to: int

    @property
    def direction(self) -> int:
        return 1 if self.to > self.frm else -1


def changes(history: list[tuple[float, int]]) -> list[Change]:
    return [Change(t, a, b) for (_, a), (t, b) in itertools.pairwise(history)]


def reversals(steps: list[Change]) -> list[float]:
    """When the direction of scaling flipped."""
    return [b.at for a, b in itertools.pairwise(steps) if a.direction != b.direction]


class NoisyLoad:
    """Closed-loop clients on keep-alive connections: a request, then a random pause."""

    def __init__(
        self, port: int, vhost: str, path: str, *, workers: int, pause: float, seed: int = 8
    ) -> None:
        self.port, self.vhost, self.path = port, vhost, path
        self.pause = pause
        self.ok = 0
        self.errors: list[str] = []
        self.replicas: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._client, args=(random.Random(seed + i),), daemon=True)
            for i in range(workers)
        ]

    def __enter__(self) -> NoisyLoad:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def _client(self, rng: random.Random) -> None:
        conn: http.client.HTTPConnection | None = None
        while not self._stop.is_set():
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
                conn.request("GET", self.path, headers={"Host": self.vhost})
                resp = conn.getresponse()
                body = resp.read().decode(errors="replace")
                with self._lock:
                    if resp.status == 200:
                        self.ok += 1
                        self.replicas[body.split()[-1]] += 1
                    else:
                        self.errors.append(f"{resp.status}: {body[:200]}")
            except (OSError, http.client.HTTPException) as err:
                with self._lock:
                    self.errors.append(f"{type(err).__name__}: {err}")
                if conn is not None:
                    conn.close()
                conn = None
            self._stop.wait(rng.uniform(0, self.pause))
        if conn is not None:
            conn.close()


def start(cluster: Cluster) -> Cluster:
    return cluster.start(scaler_args=SCALER_ARGS)


def timed_get(cluster: Cluster, host: str, path: str = "/") -> tuple[float, HttpResult]:
    sent = time.monotonic()
    result = http_get(cluster.lb_url + path, host, timeout=60)
    return time.monotonic() - sent, result


def wait_at_zero(cluster: Cluster, watch: BusWatch, name: str, timeout: float = 40) -> None:
    wait_for(lambda: watch.replicas(name) == 0, timeout, message=f"{name} scaled to zero")
    wait_for(
        lambda: not cluster.containers(app=name, all_states=True) and watch.ready(name) == 0,
        30,
        message=f"{name}'s containers gone",
    )


# -- 1. follow load up and down, without flapping -------------------------------------


def test_load_scales_up_holds_under_noisy_load_and_returns_to_min_after_the_window(
    cluster: Cluster,
) -> None:
    start(cluster)
    with BusWatch(cluster) as watch:
        cluster.apply_text(APP.format(name="busy", autoscale=BUSY_AUTOSCALE), "--wait")
        assert watch.replicas("busy") == 1
        load = NoisyLoad(
            cluster.listen_port, "busy.test", "/cgi-bin/sleep?ms=300",
            workers=BUSY_CLIENTS, pause=0.3,
        )  # fmt: skip
        with load:
            load_on = time.monotonic()
            wait_for(lambda: watch.ready("busy") >= 3, 60, message="3 replicas ready under load")
            followed = time.monotonic() - load_on
            apps = cluster.get_json("apps")
            # steady (if noisy) load for 1.5 windows: the count rises to the load's peaks
            # and does not follow its dips
            steady_from = time.monotonic()
            time.sleep(WINDOW * 1.5)
            steady_count = watch.replicas("busy")
            assert steady_count is not None
            samples = watch.inflight_samples("busy", steady_from)
            load.stop()
        load_off = time.monotonic()
        print(f"1 -> 3 ready {followed:.1f}s after the load started; steady at {steady_count}")

        wait_for(
            lambda: watch.replicas("busy") == 1 and len(cluster.containers(app="busy")) == 1,
            WINDOW * 4 + 30,
            message="back to min 1 after the load stopped",
        )
        back = time.monotonic() - load_off
        print(f"{steady_count} -> 1 {back:.1f}s after the load stopped (window {WINDOW:g}s)")

        steps = changes(watch.history("busy"))
        events = [e for _, e in watch.scale_events("busy") if e.severity == "info"]

    # the load went through the balancer and spread over the new replicas, without a loss
    assert load.ok > 100, load.ok
    assert load.errors == [], load.errors[:5]
    assert len(load.replicas) >= 3, load.replicas

    # the load was noisy: one sample alone often called for fewer replicas than the app
    # had, and the samples' recommendations went up and down many times
    assert len(samples) >= WINDOW, samples
    sample_recs = [math.ceil(n / BUSY_TARGET) for n in samples]
    top = max(c.to for c in steps if c.at < load_off)
    assert top >= 3, steps
    assert min(sample_recs) < top, (samples, steps)
    levels = [r for i, r in enumerate(sample_recs) if i == 0 or r != sample_recs[i - 1]]
    sample_flips = reversals(changes([(float(i), r) for i, r in enumerate(levels)]))
    assert len(sample_flips) >= 2, sample_recs

    # up fast while loaded; a scale-up holds for a window before any step down
    ups = [c for c in steps if c.direction > 0]
    assert ups, steps
    assert ups[0].frm == 1, steps
    assert all(c.at < load_off for c in ups), steps
    for up, down in itertools.pairwise(steps):
        if up.direction > 0 and down.direction < 0:
            assert down.at - up.at >= WINDOW - 0.5, steps
    # no flapping: never two changes of direction within a window
    flips = reversals(steps)
    assert flips, steps
    assert all(b - a >= WINDOW - 0.5 for a, b in itertools.pairwise(flips)), steps
    # load gone: back to min, only once the load's last recommendations left the window
    assert steps[-1].to == 1, steps
    assert steps[-1].at - load_off >= WINDOW - 1.0, (steps[-1].at - load_off, steps)

    # `shoal get apps` shows the autoscaler's reason; each change was an event carrying
    # the metric values behind it
    scaler = apps[0]["autoscaler"]
    assert isinstance(scaler, dict), apps
    assert "inflight" in str(scaler["reason"]), scaler
    codes = [e.data.get("code") for e in events]
    assert "scale_up" in codes, codes
    assert "scale_down" in codes, codes
    up_event = next(e for e in events if e.data.get("code") == "scale_up")
    assert float(up_event.data["inflight"]) > BUSY_TARGET, up_event  # type: ignore[arg-type]
    assert "ready" in up_event.data, up_event


# -- 2. scale to zero, and back on the first request -----------------------------------


def test_idle_app_goes_to_zero_and_its_first_request_wakes_it_and_is_answered(
    cluster: Cluster,
) -> None:
    start(cluster)
    with BusWatch(cluster) as watch:
        cluster.apply_text(APP.format(name="sleepy", autoscale=SLEEPY_AUTOSCALE), "--wait")
        assert watch.replicas("sleepy") == 1
        # idle for --idle-after: to zero (the balancer keeps the route and holds requests)
        wait_at_zero(cluster, watch, "sleepy")
        routes = http_get(f"http://127.0.0.1:{cluster.admin_port}/routes").body
        assert "sleepy" in routes, routes

        # three clients at once while at zero: all held, all answered by the woken replica
        with ThreadPoolExecutor(3) as pool:
            answers = list(pool.map(lambda _: timed_get(cluster, "sleepy.test"), range(3)))
        for took, answer in answers:
            assert answer.status == 200, (took, answer)
            assert answer.body.startswith("v1 "), answer
        cold = [took for took, _ in answers]
        print(f"cold start from zero: median {statistics.median(cold):.2f}s, max {max(cold):.2f}s")
        assert watch.replicas("sleepy") == 1
        _, warm = timed_get(cluster, "sleepy.test")
        assert warm.status == 200, warm
        assert {a.body for _, a in answers} == {warm.body}, (answers, warm)  # one replica

        # idle again: back to zero, and woken again by one request
        wait_at_zero(cluster, watch, "sleepy")
        took, again = timed_get(cluster, "sleepy.test")
        assert again.status == 200, again
        print(f"second cold start: {took:.2f}s")

        codes = [e.data.get("code") for _, e in watch.scale_events("sleepy")]
        counts = [n for _, n in watch.history("sleepy")]
    assert codes.count("wake") == 2, codes
    assert codes.count("to_zero") >= 2, codes
    assert counts[:5] == [1, 0, 1, 0, 1], counts


# -- 3. bad specs -------------------------------------------------------------------


BAD_SPECS = [
    ("{min: 5, max: 2, target: {rps_per_replica: 10}}",
     "autoscale: autoscale min (5) is greater than max (2)"),
    ("{min: 1, max: 4, target: {cpu_utilization: 80}}",
     "autoscale.target.cpu_utilization: utilisation target 80 must be a fraction of the request"),
    ("{min: 1, max: 4, target: {memory_utilization: lots%}}",
     "autoscale.target.memory_utilization: invalid percentage 'lots%'"),
    ("{min: 1, max: 4, target: {}}",
     "autoscale.target: autoscale target needs at least one metric"),
    ("{min: 1, max: 4}", "autoscale.target: required field is missing"),
    ("{min: 1, max: 0, target: {rps_per_replica: 10}}", "autoscale.max: "),
    ("{min: -1, max: 3, target: {rps_per_replica: 10}}", "autoscale.min: "),
    ("{min: 1, max: 20000, target: {rps_per_replica: 10}}", "autoscale.max: "),
    ("{min: 1, max: 4, target: {rps_per_replica: 0}}", "autoscale.target.rps_per_replica: "),
    ("{min: 1, max: 4, target: {requests: 10}}", "autoscale.target.requests: unknown field"),
]  # fmt: skip

NO_ROUTE = """
name: hidden
image: shoal-test/echo:v1
ports: {http: 8080}
autoscale: {min: 0, max: 2, target: {rps_per_replica: 10}}
"""


def test_bad_autoscale_specs_are_refused_with_clear_errors(cluster: Cluster) -> None:
    start(cluster)
    # one at a time: exit 1 and the problem named
    single = cluster.apply_text(APP.format(name="bad", autoscale=BAD_SPECS[0][0]), check=False)
    assert single.returncode == 1, single
    assert BAD_SPECS[0][1] in single.stdout + single.stderr, single
    single = cluster.apply_text(NO_ROUTE, check=False)
    assert single.returncode == 1, single
    assert "autoscale min 0 (scale to zero) needs a route" in single.stdout + single.stderr

    # all in one file, with a good app: nothing is applied, one line per problem, each
    # naming its document
    docs = [APP.format(name=f"bad{i}", autoscale=spec) for i, (spec, _) in enumerate(BAD_SPECS)]
    docs.append(APP.format(name="good", autoscale="{min: 1, max: 2, target: {p95_latency_ms: 50}}"))
    result = cluster.apply_text("---".join(docs), check=False)
    output = result.stdout + result.stderr
    assert result.returncode == 1, output
    assert "Traceback" not in output, output
    lines = output.splitlines()
    for i, (spec, expected) in enumerate(BAD_SPECS):
        mine = [line for line in lines if f"(bad{i}):" in line]
        assert any(expected in line for line in mine), (spec, expected, mine)
    assert not [line for line in lines if "(good)" in line], output
    assert cluster.get_json("apps") == []

    # a manual scale outside [min, max] is refused; inside it is accepted
    cluster.apply_text(
        APP.format(name="ok", autoscale="{min: 1, max: 3, target: {rps_per_replica: 1000}}")
    )
    refused = cluster.shoal("scale", "ok", "5", check=False)
    assert refused.returncode == 1, refused
    assert "autoscales between 1 and 3" in refused.stdout + refused.stderr, refused
    cluster.shoal("scale", "ok", "2")
    assert cluster.get_json("apps")[0]["desired"] == 2
