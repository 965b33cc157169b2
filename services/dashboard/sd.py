"""Prometheus HTTP service discovery from presence: every live instance with a /metrics.

``GET /sd/prometheus`` answers the HTTP SD format: a JSON list of target groups, each
``{"targets": ["host:port"], "labels": {...}}``. One group per instance, labelled
``service``, ``instance`` and ``node`` (the host it runs on).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from core.keys import ServiceKey
from core.state import Presence


def targets(presence: Mapping[ServiceKey, Presence]) -> list[dict[str, Any]]:
    """Online instances that published a metrics address, sorted by service and instance."""
    groups = []
    for key, p in sorted(presence.items()):
        if p.status != "online" or not p.metrics:
            continue
        groups.append(
            {
                "targets": [p.metrics],
                "labels": {"service": key.service, "instance": key.instance, "node": p.host},
            }
        )
    return groups
