"""A histogram of durations as plain numbers: cheap to record on a hot path, turned into a
Prometheus histogram only when ``/metrics`` is scraped (``core.metrics``)."""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field

#: Upper bounds in seconds (Prometheus ``le``), from half a millisecond to ten seconds.
BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


@dataclass(slots=True)
class Durations:
    """Counts per bucket (the last one is +Inf, not cumulative), their sum and count."""

    buckets: list[int] = field(default_factory=lambda: [0] * (len(BUCKETS) + 1))
    total: float = 0.0
    count: int = 0

    def observe(self, seconds: float) -> None:
        self.buckets[bisect_left(BUCKETS, seconds)] += 1
        self.total += seconds
        self.count += 1

    def __add__(self, other: Durations) -> Durations:
        """Both histograms in one (the same buckets): ``sum(series, Durations())``."""
        return Durations(
            buckets=[a + b for a, b in zip(self.buckets, other.buckets, strict=True)],
            total=self.total + other.total,
            count=self.count + other.count,
        )

    def cumulative(self) -> list[tuple[str, int]]:
        """``(le, cumulative count)`` pairs as a Prometheus histogram lists them."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*BUCKETS, float("inf")), self.buckets, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out
