"""The probe state machine shared by the health monitor (http/tcp) and the agent (exec).

Pure: one ``ProbeState`` per probe of one container start; ``step`` feeds it a result.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from core.spec import Probe

__all__ = ["ProbeRole", "ProbeState", "step"]

ProbeRole = Literal["readiness", "liveness"]


@dataclass(frozen=True, slots=True)
class ProbeState:
    """Consecutive results of one probe of one container start.

    Readiness starts not ready; liveness starts alive (a container is presumed live
    until proven otherwise). ``ok`` flips only when a threshold is reached.
    """

    ok: bool
    successes: int = 0
    failures: int = 0
    results: int = 0
    since: float = 0.0
    reason: str = ""

    @classmethod
    def initial(cls, role: ProbeRole, now: float, *, seeded: bool | None = None) -> ProbeState:
        """``seeded``: a verdict already published for the same container start (by this
        service before it restarted, or by a peer it takes over from), continued instead of
        flapping back to "no verdict"."""
        if seeded is not None:
            return cls(ok=seeded, results=1, since=now, reason="" if seeded else "not ready")
        if role == "readiness":
            return cls(ok=False, since=now, reason="no successful probe yet")
        return cls(ok=True, since=now)


def step(state: ProbeState, probe: Probe, success: bool, reason: str, now: float) -> ProbeState:
    """Feed one probe result: ``successes`` in a row make it ok, ``failures`` not ok."""
    if success:
        successes, failures = state.successes + 1, 0
        ok = state.ok or successes >= probe.successes
    else:
        successes, failures = 0, state.failures + 1
        ok = state.ok and failures < probe.failures
    return ProbeState(
        ok=ok,
        successes=successes,
        failures=failures,
        results=state.results + 1,
        since=now if ok != state.ok else state.since,
        reason="" if success else reason,
    )
