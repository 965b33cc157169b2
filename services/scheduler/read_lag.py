"""How far behind the bus the scheduler reads, measured on the heartbeats themselves.

A node is judged silent by when the scheduler last *read* word from it. A scheduler busy
for seconds (placing 20,000 replicas at once) reads every heartbeat late, and without a
correction it would call healthy nodes unreachable, then lost, because of its own backlog.
The heartbeats say when they were sent (``NodeInfo.heartbeat``, the node's clock), so:

- per node, ``offset`` is the smallest ``read - sent`` seen: the network's delay plus the
  node's clock skew, as measured while the scheduler kept up. It follows a lower sample
  at once and a higher one slowly (``OFFSET_CREEP`` of the way per heartbeat), so a node
  whose clock steps back is trusted again after a few minutes;
- a heartbeat's lag is ``read - sent - offset``: how long it waited unread;
- the current lag is the median of the last ``WINDOW`` heartbeats' lags, from any nodes:
  a backlog delays them all, one node's odd clock moves only its own samples.

The scheduler adds the current lag (at most ``MAX_LAG``) to both graces. Pure: times are
passed in.
"""

from __future__ import annotations

from collections import deque
from statistics import median

#: heartbeats the current lag is the median of
WINDOW = 64
#: how far a node's offset follows a higher sample per heartbeat
OFFSET_CREEP = 0.02
#: the largest lag added to a grace (a scheduler this far behind has other problems)
MAX_LAG = 60.0


class ReadLag:
    def __init__(self, window: int = WINDOW) -> None:
        self.offsets: dict[str, float] = {}
        self.lags: deque[float] = deque(maxlen=window)

    def observe(self, node: str, sent: float, read: float) -> None:
        """A heartbeat of ``node`` stamped ``sent`` (its clock) read at ``read`` (ours)."""
        delay = read - sent
        offset = self.offsets.get(node)
        if offset is None or delay < offset:
            offset = delay
        else:
            offset += OFFSET_CREEP * (delay - offset)
        self.offsets[node] = offset
        self.lags.append(delay - offset)

    def forget(self, node: str) -> None:
        self.offsets.pop(node, None)

    def current(self) -> float:
        """Seconds the scheduler is behind, as its latest heartbeats tell (0 without any)."""
        if not self.lags:
            return 0.0
        return min(MAX_LAG, max(0.0, median(self.lags)))
