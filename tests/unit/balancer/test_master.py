"""The balancer master's pure parts: restart policy, worker naming, the spec on the pipe."""

from __future__ import annotations

import os
import socket

import pytest

from core.backoff import Backoff
from core.config import ServiceConfig
from services.balancer.master import (
    WorkerSpec,
    encode_spec,
    read_spec,
    restart_delay,
    worker_instance,
    worker_metrics,
)
from services.balancer.policy import ProxyOptions
from services.balancer.service import BalancerOptions


def test_a_steady_worker_is_replaced_at_once_and_a_crash_loop_backs_off() -> None:
    backoff = Backoff(initial=0.5, cap=10.0, jitter=0.0)
    assert restart_delay(3600.0, backoff) == 0.0
    assert restart_delay(0.1, backoff) == 1.0  # died young right after a restart
    assert restart_delay(0.1, backoff) == 2.0
    assert restart_delay(0.1, backoff) == 4.0
    assert restart_delay(60.0, backoff) == 0.0  # ran steadily again: back to no delay


def test_a_first_quick_death_is_replaced_at_once() -> None:
    backoff = Backoff(initial=0.5, cap=10.0, jitter=0.0)
    assert restart_delay(0.2, backoff) == 0.0
    assert restart_delay(0.2, backoff) == 1.0


def test_each_worker_has_its_own_metrics_port() -> None:
    assert worker_metrics(("0.0.0.0", 9468), 0) == ("0.0.0.0", 9468)
    assert worker_metrics(("0.0.0.0", 9468), 2) == ("0.0.0.0", 9470)
    assert worker_metrics(("127.0.0.1", 0), 3) == ("127.0.0.1", 0)  # any free port each
    assert worker_metrics(None, 1) is None


def test_worker_instance_names() -> None:
    assert worker_instance("lb", 0, 1) == "lb"  # alone: the balancer's own name
    assert [worker_instance("lb", i, 3) for i in range(3)] == ["lb-w0", "lb-w1", "lb-w2"]


def test_the_spec_crosses_a_pipe_intact() -> None:
    spec = WorkerSpec(
        config=ServiceConfig(prefix="p", instance="lb-w1"),
        options=BalancerOptions(admin=("127.0.0.1", 9091), proxy=ProxyOptions(retries=5)),
        slot=1,
        listen_fd=7,
        admin_fd=None,
    )
    r, w = os.pipe()
    try:
        os.write(w, encode_spec(spec) + b"more")
        assert read_spec(r) == spec
        assert os.read(r, 4) == b"more"  # exactly one frame read: the rest is the lifeline
    finally:
        os.close(r)
        os.close(w)


def test_a_pipe_closed_early_is_an_error() -> None:
    r, w = os.pipe()
    os.write(w, encode_spec(WorkerSpec(ServiceConfig(), BalancerOptions(), 0, 3, None))[:10])
    os.close(w)
    with pytest.raises(EOFError):
        read_spec(r)
    os.close(r)


def test_bind_reports_a_busy_address() -> None:
    from services.balancer.master import bind

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError, match="in use"):
            bind(taken.getsockname(), reuse_port=False)
