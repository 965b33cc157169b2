"""ACME decisions with time passed in: which hosts, when to renew, how long to back off."""

from __future__ import annotations

from typing import Any

import pytest

from core.keys import AppKey
from core.spec import AppSpec, Route
from core.state import AppState, AppVersion
from services.balancer.acme_plan import (
    Failures,
    Held,
    acme_hosts,
    failed,
    plan,
    renew_at,
    retry_at,
)

DAY = 86400.0


def app(name: str, tls: dict[str, Any] | None, host: str = "web.test", ns: str = "d") -> AppState:
    doc: dict[str, Any] = {"name": name, "image": "x:1", "ports": {"http": 8080}}
    doc["route"] = {"host": host, "port": "http", **({"tls": tls} if tls else {})}
    spec = AppSpec.model_validate(doc)
    version = AppVersion(revision=1, spec=spec, replicas=1)
    return AppState(
        namespace=ns, name=name, revision=1, generation=1, spec=spec, replicas=1, versions=[version]
    )


def test_only_routes_asking_acme_need_a_certificate_first_app_by_key_wins() -> None:
    apps = [
        app("b", {"acme": True}, "web.test"),
        app("a", {"acme": True}, "web.test"),
        app("c", {"cert": "c-cert", "key": "c-key"}, "other.test"),
        app("d", None, "plain.test"),
    ]
    assert acme_hosts(apps) == {"web.test": AppKey("d", "a")}


def test_a_route_says_acme_or_cert_and_key_and_acme_needs_an_exact_host() -> None:
    with pytest.raises(ValueError, match="not both"):
        Route.model_validate({"host": "a.test", "tls": {"acme": True, "cert": "c", "key": "k"}})
    with pytest.raises(ValueError, match="needs cert and key"):
        Route.model_validate({"host": "a.test", "tls": {"redirect": True}})
    with pytest.raises(ValueError, match="wildcard"):
        Route.model_validate({"host": "*.a.test", "tls": {"acme": True}})
    route = Route.model_validate({"host": "a.test", "tls": {"acme": True, "redirect": True}})
    assert route.tls is not None
    assert route.tls.secret_names() == []


def test_renewal_at_a_third_of_the_lifetime_left_at_most_thirty_days_ahead() -> None:
    assert renew_at(Held(0, 90 * DAY)) == 60 * DAY  # Let's Encrypt: 30 days ahead
    assert renew_at(Held(0, 365 * DAY)) == 335 * DAY  # capped at 30 days
    assert renew_at(Held(0, 3 * 3600)) == 2 * 3600  # short-lived: two thirds in


def test_backoff_doubles_to_a_cap_and_honours_retry_after() -> None:
    first = failed(None, 100.0, "refused")
    assert first == Failures(1, 100.0, "refused")
    assert retry_at(first, 60, 3600) == 160.0
    third = failed(failed(first, 200.0, "x"), 300.0, "y")
    assert third.count == 3
    assert retry_at(third, 60, 3600) == 300.0 + 240.0
    many = Failures(20, 0.0, "z")
    assert retry_at(many, 60, 3600) == 3600.0
    limited = Failures(1, 0.0, "rateLimited", retry_after=5000.0)
    assert retry_at(limited, 60, 3600) == 5000.0


def test_plan_orders_missing_and_due_and_says_when_to_look_again() -> None:
    now = 1000 * DAY
    held = {
        "fresh.test": Held(now - DAY, now + 89 * DAY),  # due in 59 days
        "old.test": Held(now - 70 * DAY, now + 20 * DAY),  # due 10 days ago
    }
    failures = {"broken.test": Failures(2, now - 30, "timeout")}  # next at now + 90
    p = plan(
        now,
        ["new.test", "fresh.test", "old.test", "broken.test"],
        held,
        failures,
        base=60,
        cap=3600,
    )
    assert p.issue == ["new.test", "old.test"]
    assert p.wake_at == now + 90
    later = plan(now + 90, ["broken.test"], held, failures, base=60, cap=3600)
    assert later.issue == ["broken.test"]
    assert later.wake_at is None


def test_a_failed_renewal_keeps_backing_off_while_the_old_certificate_serves() -> None:
    now = 100 * DAY
    held = {"web.test": Held(now - 80 * DAY, now + 10 * DAY)}
    failures = {"web.test": Failures(1, now, "dns")}
    p = plan(now, ["web.test"], held, failures, base=60, cap=3600)
    assert p.issue == []
    assert p.wake_at == now + 60
