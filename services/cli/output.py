"""How the CLI prints: human units, RFC 3339 times, label selectors and the ``-o`` formats.

Pure functions over plain values; the commands build rows and hand them here.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import click
import yaml

#: ``-o`` formats of ``get``: ``table`` (default), ``wide`` (more columns), ``name``
#: (``app/default/web``, one a line), ``json`` and ``yaml`` (the same document).
FORMATS = ("table", "wide", "name", "json", "yaml")

#: Keys of the state models holding unix times; JSON/YAML output shows them as RFC 3339.
TIME_KEYS = frozenset(
    {"updated", "heartbeat", "since", "ts", "started_at", "started", "last_scaled", "at"}
)


def human_memory(n: int) -> str:
    """Bytes as a short binary size: ``512Mi``, ``23.5Gi``, ``1Ki``, ``900``."""
    if n < 1024:
        return str(n)
    for unit, size in (("Ti", 1024**4), ("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if n >= size:
            value = n / size
            if value >= 100 or n % size == 0:
                return f"{round(value)}{unit}"
            text = f"{value:.1f}".rstrip("0").rstrip(".")
            return f"{text}{unit}"
    return str(n)  # unreachable: n >= 1024 matches Ki


def human_duration(seconds: float) -> str:
    """A span as kubectl prints ages: ``45s``, ``3m20s``, ``5h2m``, ``3d4h``, ``400d``."""
    s = max(0, int(seconds))
    if s < 60:
        return f"{s}s"
    if s < 600:
        return f"{s // 60}m{s % 60}s" if s % 60 else f"{s // 60}m"
    if s < 3600:
        return f"{s // 60}m"
    if s < 8 * 3600:
        h, m = divmod(s // 60, 60)
        return f"{h}h{m}m" if m else f"{h}h"
    if s < 2 * 86400:
        return f"{s // 3600}h"
    if s < 8 * 86400:
        d, h = divmod(s // 3600, 24)
        return f"{d}d{h}h" if h else f"{d}d"
    return f"{s // 86400}d"


def age(ts: float | None, now: float | None = None) -> str:
    """Time since unix time ``ts`` (``-`` when unset)."""
    if not ts:
        return "-"
    return human_duration((time.time() if now is None else now) - ts)


def rfc3339(ts: float) -> str:
    """Unix time as RFC 3339 in UTC with microseconds: ``2026-12-01T22:06:54.123456Z``."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def with_rfc3339(value: Any) -> Any:
    """``value`` (JSON-ready) with every time key's number as RFC 3339 (unset, 0: null)."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if k in TIME_KEYS and isinstance(v, int | float) and not isinstance(v, bool):
                out[k] = rfc3339(float(v)) if v > 0 else None
            else:
                out[k] = with_rfc3339(v)
        return out
    if isinstance(value, list | tuple):
        return [with_rfc3339(v) for v in value]
    return value


def render_document(value: Any, fmt: str) -> str:
    """A JSON-ready value as ``json`` or ``yaml`` text, times in RFC 3339."""
    doc = with_rfc3339(value)
    if fmt == "yaml":
        return str(
            yaml.safe_dump(doc, sort_keys=True, default_flow_style=False, allow_unicode=True)
        )
    return json.dumps(doc, indent=2, sort_keys=True)


def parse_selector(text: str | None) -> dict[str, str]:
    """``-l zone=a,tier=web`` -> ``{"zone": "a", "tier": "web"}`` (``==`` also accepted)."""
    if not text:
        return {}
    selector: dict[str, str] = {}
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        key, sep, value = part.replace("==", "=").partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"{part!r}: expected key=value", param_hint="-l")
        selector[key.strip()] = value.strip()
    return selector


def matches(labels: Mapping[str, str], selector: Mapping[str, str]) -> bool:
    """Every ``key=value`` of the selector is among ``labels``."""
    return all(labels.get(k) == v for k, v in selector.items())


def format_labels(labels: Mapping[str, str]) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) or "-"


def name_lines(kind: str, names: Sequence[str]) -> str:
    """``-o name``: ``app/default/web`` lines."""
    return "".join(f"{kind}/{n}\n" for n in names)
