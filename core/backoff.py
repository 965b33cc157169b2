"""Jittered exponential backoff.

Shoal needs backoff *state* (per connection, per key, per replica: grows on failure,
resets after success), which retry decorators do not model; so this is a tiny value type
rather than a dependency.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass(slots=True)
class Backoff:
    initial: float = 0.1
    cap: float = 10.0
    factor: float = 2.0
    jitter: float = 0.2
    attempts: int = field(default=0)

    def next(self) -> float:
        """The delay before the next attempt; grows until ``cap``."""
        delay = min(self.cap, self.initial * self.factor**self.attempts)
        self.attempts += 1
        return delay * (1 + random.uniform(-self.jitter, self.jitter))

    def reset(self) -> None:
        self.attempts = 0
