"""Header rules and request statistics."""

from __future__ import annotations

import pytest

from core.keys import AppKey
from services.balancer.headers import (
    CLIENT_FORWARDED,
    client_key,
    connection_tokens,
    forwarded_for,
    refuse_head,
    strip_hop_by_hop,
)
from services.balancer.stats import AppStats, Stats, percentile


def test_hop_by_hop_and_connection_listed_headers_are_stripped() -> None:
    items = [
        ("Host", "a"),
        ("Connection", "keep-alive, X-Private"),
        ("Keep-Alive", "timeout=5"),
        ("Transfer-Encoding", "chunked"),
        ("X-Private", "1"),
        ("TE", "trailers"),
        ("Upgrade", "h2c"),
        ("X-Kept", "yes"),
    ]
    assert strip_hop_by_hop(items, "keep-alive, X-Private") == [("Host", "a"), ("X-Kept", "yes")]
    assert connection_tokens(None) == frozenset()
    assert connection_tokens("Close , X-A") == {"close", "x-a"}


def test_client_sent_forwarding_headers_are_dropped() -> None:
    items = [
        ("X-Forwarded-For", "6.6.6.6"),
        ("X-Forwarded-Proto", "https"),
        ("x-forwarded-host", "admin.test"),
        ("Forwarded", "for=6.6.6.6"),
        ("X-Real-IP", "6.6.6.6"),
        ("X-Kept", "yes"),
    ]
    assert strip_hop_by_hop(items, None, CLIENT_FORWARDED) == [("X-Kept", "yes")]


def test_two_hosts_or_a_connection_header_naming_host_are_refused() -> None:
    assert refuse_head(1, "keep-alive, X-Private") is None
    assert refuse_head(0, None) is None
    assert refuse_head(2, None) == "more than one Host header"
    assert refuse_head(1, "close, HOST") == "the Connection header names Host"


def test_forwarded_for_and_hash_key() -> None:
    assert forwarded_for("1.2.3.4") == "1.2.3.4"  # what the client claimed is not kept
    assert forwarded_for(None) == "unknown"
    assert client_key("X-User", "alice", "1.2.3.4") == "alice"
    assert client_key("X-User", None, "1.2.3.4") == "1.2.3.4"
    assert client_key(None, None, "1.2.3.4") == "1.2.3.4"


def test_percentile() -> None:
    values = [float(i) for i in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile([], 0.5) == 0.0
    assert percentile([7.0], 0.99) == 7.0


def test_window_and_cumulative_counters() -> None:
    s = AppStats()
    for i in range(10):
        s.done("r1" if i % 2 else "r2", 200 if i < 8 else 502, 0.001 * (i + 1))
    m = s.flush(2.0)
    assert m.requests == 10
    assert m.errors == 2
    assert m.rps == 5.0
    assert m.replicas == {"r1": 2.5, "r2": 2.5}
    assert m.p50_ms == 5.0
    assert m.p99_ms == 10.0
    assert s.total == 10
    assert s.by_class[1] == 8
    assert s.by_class[4] == 2
    assert sum(s.latency.buckets) == 10
    assert m.per_replica["r1"].rps == 2.5
    assert m.per_replica["r2"].p99_ms == pytest.approx(9.0)  # r2 took 1, 3, 5, 7, 9 ms
    assert m.per_replica["r1"].errors == m.per_replica["r2"].errors == 1  # the two 502s
    assert s.flush(1.0).requests == 0  # a new window


def test_snapshot_skips_idle_apps_and_unrouted() -> None:
    stats = Stats()
    stats.app(AppKey("d", "web")).done("r", 200, 0.01)
    stats.app(AppKey("d", "idle"))
    stats.unrouted.done(None, 404, 0.0)
    snap = stats.snapshot("lb-1", 1.0, 123.0)
    assert list(snap.apps) == ["d/web"]
    assert snap.instance == "lb-1"
    assert snap.ts == 123.0
    held = stats.app(AppKey("d", "idle"))
    held.held = 2
    assert stats.snapshot("lb-1", 1.0, 124.0).apps["d/idle"].held == 2
