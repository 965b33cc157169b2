"""The scheduler's read lag: a backlog of unread heartbeats, told apart from clock skew."""

from __future__ import annotations

from services.scheduler.read_lag import MAX_LAG, ReadLag


def heartbeats(lag: ReadLag, nodes: dict[str, float], sent: float, delay: float) -> None:
    """Every node's heartbeat stamped ``sent`` by its clock (ours + skew), read ``delay``
    later by ours."""
    for node, skew in nodes.items():
        lag.observe(node, sent + skew, sent + delay)


def test_skewed_clocks_alone_are_no_lag() -> None:
    lag = ReadLag()
    nodes = {"n1": -3.0, "n2": 0.0, "n3": 40.0}  # one clock far ahead, one behind
    for t in range(20):
        heartbeats(lag, nodes, 5.0 * t, 0.01)
    assert lag.current() < 1e-6


def test_a_backlog_shows_and_passes() -> None:
    lag = ReadLag(window=9)
    nodes = {f"n{i}": 0.5 * i for i in range(3)}
    for t in range(5):
        heartbeats(lag, nodes, 5.0 * t, 0.01)
    for t in range(5, 8):  # the scheduler falls 8 s behind
        heartbeats(lag, nodes, 5.0 * t, 8.0)
    assert 7.5 < lag.current() <= 8.0
    for t in range(8, 12):  # and catches up
        heartbeats(lag, nodes, 5.0 * t, 0.01)
    assert lag.current() < 0.5


def test_one_node_whose_clock_steps_back_does_not_lag_the_others() -> None:
    lag = ReadLag(window=16)
    nodes = {f"n{i}": 0.0 for i in range(8)}
    for t in range(4):
        heartbeats(lag, nodes, 5.0 * t, 0.01)
    for t in range(4, 8):
        heartbeats(lag, nodes | {"n0": -30.0}, 5.0 * t, 0.01)  # n0's clock 30 s back
    assert lag.current() < 1e-6


def test_the_lag_is_bounded() -> None:
    lag = ReadLag()
    lag.observe("n1", 0.0, 0.0)
    lag.observe("n1", 10.0, 10.0 + 10 * MAX_LAG)
    assert lag.current() == MAX_LAG
    lag.forget("n1")
    assert "n1" not in lag.offsets
