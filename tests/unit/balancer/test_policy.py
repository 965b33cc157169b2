"""The request policy with a scripted exchange: no sockets, every decision both engines share."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from core.keys import AppKey
from services.balancer.policy import (
    ACME_CHALLENGE_PATH,
    Closed,
    ConnectTimeout,
    Failure,
    Invalid,
    Policy,
    ProxyOptions,
    ReadTimeout,
    Refused,
)
from services.balancer.routes import AppRoute, Backend, RouteTable

WEB = AppKey("d", "web")


@dataclass
class Scripted:
    """An exchange whose attempts fail (or succeed) as scripted, per replica id."""

    outcomes: dict[str, Failure | None] = field(default_factory=dict)
    content_length: int | None = None
    too_large: bool = False
    retriable: bool = True
    upgrade: bool = False
    attempts: list[str] = field(default_factory=list)
    replies: list[tuple[int, str, bool]] = field(default_factory=list)
    secure: bool = False
    target: str = "/"
    responses: list[tuple[int, bytes, list[tuple[str, str]]]] = field(default_factory=list)

    def respond(self, status: int, body: bytes, headers: Sequence[tuple[str, str]]) -> int:
        self.responses.append((status, body, list(headers)))
        return status

    def hash_key(self, header: str | None) -> str:
        return "10.0.0.1"

    def reply(self, status: int, message: str, *, close: bool = False) -> int:
        self.replies.append((status, message, close))
        return status

    async def forward(self, backend: Backend) -> int:
        self.attempts.append(backend.id)
        failure = self.outcomes.get(backend.id)
        if failure is not None:
            raise failure
        return 200

    async def tunnel(self, backend: Backend) -> int:
        await self.forward(backend)
        return 101


def policy(*ids: str, scale_to_zero: bool = False, **options: float) -> Policy:
    p = Policy(ProxyOptions(**options), instance="lb1")  # type: ignore[arg-type]
    backends = [Backend(rid, 1, "127.0.0.1", 8000 + i) for i, rid in enumerate(ids)]
    route = AppRoute(WEB, None, "/", "round_robin", "client_ip", backends)
    route.scale_to_zero = scale_to_zero
    p.set_table(RouteTable([route]))
    return p


async def test_a_success_is_counted_and_leaves_nothing_in_flight() -> None:
    p = policy("a", "b")
    ex = Scripted()
    await p.serve(ex, "any.test", "/")
    assert ex.attempts == ["a"]
    assert ex.replies == []
    stats = p.stats.app(WEB)
    assert stats.total == 1
    assert stats.by_class[1] == 1  # 2xx
    assert stats.inflight == 0
    assert p.inflight == {}


async def test_no_route_is_404() -> None:
    p = Policy(ProxyOptions(), instance="lb1")
    ex = Scripted()
    await p.serve(ex, "nothing.test", "/x")
    assert ex.replies == [(404, "no route for host 'nothing.test' and path '/x'", False)]
    assert p.stats.unrouted.total == 1


async def test_refused_ejects_and_retries_any_method() -> None:
    p = policy("a", "b")
    ex = Scripted({"a": Refused("Connection refused")}, retriable=False)
    await p.serve(ex, "", "/")
    assert ex.attempts == ["a", "b"]
    assert ex.replies == []
    assert "a" in p.ejected
    stats = p.stats.app(WEB)
    assert (stats.ejections, stats.retries, stats.upstream_errors) == (1, 1, 1)
    ex = Scripted()
    await p.serve(ex, "", "/")
    await p.serve(ex, "", "/")
    assert ex.attempts == ["b", "b"]  # ejected: skipped


async def test_every_replica_refused_is_502_and_all_ejected_are_still_tried() -> None:
    p = policy("a", "b", retries=5)
    ex = Scripted({"a": Refused("x"), "b": Refused("x")})
    await p.serve(ex, "", "/")
    assert ex.attempts == ["a", "b"]
    assert ex.replies == [(502, "replica b refused the connection", False)]
    assert "a" in p.ejected
    assert "b" in p.ejected
    # one hiccup refused every replica (an engine restart reloading its port rules):
    # health still finds them ready, so the next request tries them rather than a 503
    ex = Scripted()
    await p.serve(ex, "", "/")
    assert ex.replies == []
    assert len(ex.attempts) == 1


async def test_an_ejected_replica_is_skipped_while_another_is_left() -> None:
    p = policy("a", "b", "c", retries=5)
    await p.serve(Scripted({"a": Refused("x"), "b": Refused("x")}), "", "/")
    ex = Scripted({"c": Refused("x")})
    await p.serve(ex, "", "/")
    assert ex.attempts[0] == "c"  # the one not ejected goes first
    assert len(ex.attempts) == 2
    assert ex.attempts[1] in ("a", "b")
    assert ex.replies == []


async def test_connect_timeout_on_every_replica_is_504() -> None:
    p = policy("a", "b")
    ex = Scripted({"a": ConnectTimeout(2), "b": ConnectTimeout(2)})
    await p.serve(ex, "", "/")
    assert ex.replies == [(504, "replica b did not accept a connection within 2s", False)]


async def test_a_closed_connection_is_retried_only_when_safe() -> None:
    p = policy("a", "b")
    ex = Scripted({"a": Closed("reset")})
    await p.serve(ex, "", "/")
    assert ex.attempts == ["a", "b"]
    assert "a" not in p.ejected  # a pooled connection may just have idled out

    ex = Scripted({"a": Closed("reset"), "b": Closed("reset")}, retriable=False)
    await p.serve(ex, "", "/")
    assert len(ex.attempts) == 1
    assert ex.replies == [(502, f"replica {ex.attempts[0]} closed the connection: reset", False)]

    ex = Scripted({"a": Closed(new=True), "b": Closed(new=True)}, retriable=False)
    await p.serve(ex, "", "/")
    assert ex.attempts[0] in p.ejected  # a new connection closed unanswered: the replica is gone


async def test_read_timeouts_and_invalid_responses_are_not_retried() -> None:
    p = policy("a", "b")
    ex = Scripted({"a": ReadTimeout(0.5), "b": ReadTimeout(0.5)})
    await p.serve(ex, "", "/")
    assert ex.replies == [(504, "replica a did not answer within 0.5s", False)]
    ex = Scripted({"a": Invalid("junk"), "b": Invalid("junk")})
    await p.serve(ex, "", "/")
    assert len(ex.attempts) == 1
    assert ex.replies[0][0] == 502
    assert "sent an invalid response: junk" in ex.replies[0][1]


async def test_bodies_over_the_limit_are_413_and_close() -> None:
    p = policy("a", max_body=1024)
    ex = Scripted(content_length=2048)
    await p.serve(ex, "", "/")
    assert ex.attempts == []
    assert ex.replies == [
        (413, "request body of 2048 bytes exceeds the limit of 1024", True),
    ]
    ex = Scripted({"a": Closed()})
    ex.retriable = False

    async def over_the_limit(backend: Backend) -> int:
        ex.too_large = True  # the body outgrew the limit while it streamed
        raise Closed()

    ex.forward = over_the_limit  # type: ignore[method-assign]
    await p.serve(ex, "", "/")
    assert ex.replies == [(413, "request body exceeds the limit of 1024 bytes", True)]


async def test_an_upgrade_is_tried_once() -> None:
    p = policy("a", "b")
    ex = Scripted({"a": Refused("x")}, upgrade=True)
    await p.serve(ex, "", "/")
    assert ex.attempts == ["a"]
    assert ex.replies == [(502, "replica a refused the connection", False)]
    ex = Scripted(upgrade=True)
    await p.serve(ex, "", "/")
    assert ex.attempts == ["b"]
    assert ex.replies == []


async def test_a_request_for_an_app_at_zero_waits_for_a_replica() -> None:
    holds: list[AppRoute] = []
    p = policy(scale_to_zero=True, hold_timeout=5)
    p.on_hold = holds.append
    ex = Scripted()
    served = asyncio.create_task(p.serve(ex, "", "/"))
    await asyncio.sleep(0.01)
    assert p.stats.app(WEB).held == 1
    assert [r.key for r in holds] == [WEB]
    ready = AppRoute(WEB, None, "/", "round_robin", "client_ip", [Backend("a", 1, "h", 1)])
    p.set_table(RouteTable([ready]))
    await asyncio.wait_for(served, 1)
    assert ex.attempts == ["a"]
    assert p.stats.app(WEB).held == 0


async def test_a_request_for_an_app_at_zero_gives_up_in_time() -> None:
    p = policy(scale_to_zero=True, hold_timeout=0.05, hold_max=1)
    first, second = Scripted(), Scripted()
    await asyncio.gather(p.serve(first, "", "/"), p.serve(second, "", "/"))
    expired = "app d/web is scaled to zero and no replica became ready within 0.05s"
    assert first.replies == [(503, expired, False)]
    assert second.replies == [(503, expired, False)]  # over hold_max: answered at once


# -- redirect to HTTPS and ACME challenges ---------------------------------------------


def redirecting(https_port: int | None = None) -> Policy:
    p = policy("a")
    route = p.table.routes[WEB]
    route.redirect = True
    p.https_port = https_port
    return p


async def test_a_redirect_route_answers_plain_http_308_keeping_path_and_query() -> None:
    p = redirecting(8443)
    ex = Scripted(target="/a/b?x=1&y=%20")
    await p.serve(ex, "web.test", "/a/b")
    assert ex.attempts == []
    assert ex.responses == [(308, b"", [("Location", "https://web.test:8443/a/b?x=1&y=%20")])]
    assert p.stats.app(WEB).total == 1


async def test_a_redirect_names_no_port_for_443_and_https_is_forwarded() -> None:
    p = redirecting(443)
    ex = Scripted(target="/")
    await p.serve(ex, "web.test", "/")
    assert ex.responses[0][2] == [("Location", "https://web.test/")]
    secure = Scripted(secure=True)
    await p.serve(secure, "web.test", "/")
    assert secure.attempts == ["a"]
    assert secure.responses == []


async def test_a_challenge_is_answered_on_plain_http_from_any_route_or_none() -> None:
    p = redirecting()
    p.challenges = {"tok1": ("web.test", "tok1.thumb"), "tok2": ("new.test", "tok2.thumb")}
    ex = Scripted(target=ACME_CHALLENGE_PATH + "tok1")
    await p.serve(ex, "web.test", ACME_CHALLENGE_PATH + "tok1")
    assert ex.responses == [(200, b"tok1.thumb", [("Content-Type", "application/octet-stream")])]
    assert ex.attempts == []
    other = Scripted()  # a host no route serves yet
    await p.serve(other, "new.test", ACME_CHALLENGE_PATH + "tok2")
    assert other.responses[0][:2] == (200, b"tok2.thumb")
    wrong = Scripted()  # a token is answered only for the host it was ordered for
    await p.serve(wrong, "web.test", ACME_CHALLENGE_PATH + "tok2")
    assert wrong.responses == []
    assert wrong.attempts == ["a"]


async def test_an_unknown_challenge_path_is_forwarded_never_redirected() -> None:
    p = redirecting()
    p.challenges = {"tok1": ("web.test", "tok1.thumb")}
    ex = Scripted(target=ACME_CHALLENGE_PATH + "other")
    await p.serve(ex, "web.test", ACME_CHALLENGE_PATH + "other")
    assert ex.responses == []
    assert ex.attempts == ["a"]


async def test_challenges_are_not_answered_over_https() -> None:
    p = policy("a")
    p.challenges = {"tok1": ("web.test", "tok1.thumb")}
    ex = Scripted(secure=True)
    await p.serve(ex, "web.test", ACME_CHALLENGE_PATH + "tok1")
    assert ex.responses == []
    assert ex.attempts == ["a"]


async def test_a_host_that_is_no_name_is_never_put_in_a_location() -> None:
    p = redirecting()
    ex = Scripted(target="/x")
    await p.serve(ex, "evil.test/x.web.test", "/x")
    assert ex.responses == []
    assert ex.replies[0][0] == 400
