"""Per-replica usage from Docker's one-shot stats: pure arithmetic over two samples."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.agent.containers import parse_time


@dataclass(frozen=True, slots=True)
class Sample:
    read: float  # unix seconds
    cpu_total: int  # ns of CPU time used so far
    memory: int  # bytes in use, page cache that can be dropped left out
    memory_limit: int


def parse_sample(data: dict[str, Any]) -> Sample | None:
    """One ``/containers/<id>/stats?stream=false&one-shot=true`` answer."""
    read = parse_time(data.get("read"))
    cpu = ((data.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    mem = data.get("memory_stats") or {}
    if read is None or cpu is None:
        return None
    usage = int(mem.get("usage") or 0)
    stats = mem.get("stats") or {}
    # cgroup v1 reports total_inactive_file, v2 inactive_file (what `docker stats` subtracts).
    inactive = int(stats.get("total_inactive_file", stats.get("inactive_file", 0)) or 0)
    return Sample(
        read=read,
        cpu_total=int(cpu),
        memory=max(0, usage - inactive) if inactive < usage else usage,
        memory_limit=int(mem.get("limit") or 0),
    )


def cpu_cores(previous: Sample | None, current: Sample) -> float:
    """Cores in use between two samples (0 without a previous one)."""
    if previous is None:
        return 0.0
    elapsed = current.read - previous.read
    used = current.cpu_total - previous.cpu_total
    if elapsed <= 0 or used < 0:
        return 0.0
    return round(used / 1e9 / elapsed, 4)
