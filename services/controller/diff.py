"""Field-level differences between two app specs, as short human-readable lines.

``diff_specs(old, new)`` -> ``["image: shoal-test/echo:v1 -> shoal-test/echo:v2",
"env.MODE: added (fast)", "replicas: 3 -> 5"]``. Used for ``apply`` results, ``shoal diff``
and the ``changes`` column of ``shoal rollout history``.
"""

from __future__ import annotations

import json
from typing import Any

from core.spec import TEMPLATE_FIELDS, AppSpec

MAX_VALUE = 60


def show(value: Any) -> str:
    """A value as it appears in a diff line: compact JSON, shortened."""
    text = value if isinstance(value, str) else json.dumps(value, sort_keys=True)
    if len(text) > MAX_VALUE:
        text = text[: MAX_VALUE - 3] + "..."
    return text


def diff_values(old: Any, new: Any, path: str = "") -> list[str]:
    """Recursive diff of two JSON-like values; maps are compared key by key."""
    if isinstance(old, dict) and isinstance(new, dict):
        lines: list[str] = []
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                if new[key] is not None:
                    lines.append(f"{sub}: added ({show(new[key])})")
            elif key not in new:
                if old[key] is not None:
                    lines.append(f"{sub}: removed (was {show(old[key])})")
            else:
                lines.extend(diff_values(old[key], new[key], sub))
        return lines
    if old == new:
        return []
    if old is None:
        return [f"{path}: added ({show(new)})"]
    if new is None:
        return [f"{path}: removed (was {show(old)})"]
    return [f"{path}: {show(old)} -> {show(new)}"]


def spec_data(spec: AppSpec) -> dict[str, Any]:
    return spec.model_dump(mode="json")


def diff_specs(old: AppSpec, new: AppSpec) -> list[str]:
    """Every changed field of ``new`` relative to ``old``, template fields first."""
    a, b = spec_data(old), spec_data(new)
    lines = diff_values(a, b)

    def rank(line: str) -> int:
        top = line.split(":", 1)[0].split(".", 1)[0]
        return 0 if top in TEMPLATE_FIELDS else 1

    return sorted(lines, key=rank)


def template_changed(old: AppSpec, new: AppSpec) -> bool:
    return old.template_hash() != new.template_hash()
