"""Load-balancing algorithms (pure): pick one backend among an app's ready replicas.

Each picker keeps its own small state (a counter, current weights) across table
rebuilds, and skips ``exclude`` (ejected replicas, replicas already tried for this request).

- ``round_robin``: each backend in turn.
- ``least_conn``: the fewest requests in flight (this balancer's count); ties in turn.
- ``weighted``: smooth weighted round robin (nginx's), by ``Backend.weight``: a canary
  revision at weight 10 gets every tenth request, evenly spread, not in bursts.
- ``hash``: rendezvous hashing of a key (client IP or a header): the same key sticks to
  the same replica on every balancer instance, and only the keys of a replica that leaves
  move.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence

from services.balancer.routes import Backend

_EMPTY: frozenset[str] = frozenset()


class Picker:
    algorithm = "base"

    def pick(
        self,
        backends: Sequence[Backend],
        *,
        key: str = "",
        exclude: Collection[str] = _EMPTY,
        inflight: Mapping[str, int] | None = None,
    ) -> Backend | None:
        raise NotImplementedError


class RoundRobin(Picker):
    algorithm = "round_robin"

    def __init__(self) -> None:
        self.next = 0

    def pick(
        self,
        backends: Sequence[Backend],
        *,
        key: str = "",
        exclude: Collection[str] = _EMPTY,
        inflight: Mapping[str, int] | None = None,
    ) -> Backend | None:
        n = len(backends)
        if n == 0:
            return None
        start = self.next
        if not exclude:
            self.next = start + 1
            return backends[start % n]
        for i in range(n):
            b = backends[(start + i) % n]
            if b.id not in exclude:
                self.next = start + i + 1
                return b
        return None


class LeastConn(Picker):
    algorithm = "least_conn"

    def __init__(self) -> None:
        self.next = 0

    def pick(
        self,
        backends: Sequence[Backend],
        *,
        key: str = "",
        exclude: Collection[str] = _EMPTY,
        inflight: Mapping[str, int] | None = None,
    ) -> Backend | None:
        n = len(backends)
        if n == 0:
            return None
        counts = inflight or {}
        best: Backend | None = None
        best_count = 0
        start = self.next
        for i in range(n):
            b = backends[(start + i) % n]
            if b.id in exclude:
                continue
            c = counts.get(b.id, 0)
            if best is None or c < best_count:
                best, best_count = b, c
        self.next = start + 1
        return best


class Weighted(Picker):
    algorithm = "weighted"

    def __init__(self) -> None:
        self.current: dict[str, float] = {}

    def pick(
        self,
        backends: Sequence[Backend],
        *,
        key: str = "",
        exclude: Collection[str] = _EMPTY,
        inflight: Mapping[str, int] | None = None,
    ) -> Backend | None:
        total = 0.0
        best: Backend | None = None
        best_cw = 0.0
        current = self.current
        for b in backends:
            if b.id in exclude or b.weight <= 0:
                continue
            cw = current.get(b.id, 0.0) + b.weight
            current[b.id] = cw
            total += b.weight
            if best is None or cw > best_cw:
                best, best_cw = b, cw
        if best is None:
            return None
        current[best.id] = best_cw - total
        if len(current) > 2 * len(backends) + 8:  # forget replicas that are gone
            ids = {b.id for b in backends}
            self.current = {i: w for i, w in current.items() if i in ids}
        return best


def rendezvous_weight(key: bytes, backend_id: str) -> bytes:
    return hashlib.blake2b(key + b"\0" + backend_id.encode(), digest_size=8).digest()


class ConsistentHash(Picker):
    algorithm = "hash"

    def pick(
        self,
        backends: Sequence[Backend],
        *,
        key: str = "",
        exclude: Collection[str] = _EMPTY,
        inflight: Mapping[str, int] | None = None,
    ) -> Backend | None:
        raw = key.encode()
        best: Backend | None = None
        best_w = b""
        for b in backends:
            if b.id in exclude:
                continue
            w = rendezvous_weight(raw, b.id)
            if best is None or w > best_w:
                best, best_w = b, w
        return best


PICKERS: dict[str, type[Picker]] = {
    p.algorithm: p for p in (RoundRobin, LeastConn, Weighted, ConsistentHash)
}


def make_picker(algorithm: str) -> Picker:
    return PICKERS.get(algorithm, RoundRobin)()
