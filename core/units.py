"""Parsing of the human units used in specs: durations, memory sizes and CPU amounts.

Pure functions; they raise ``ValueError`` with a message meant for the user.
"""

from __future__ import annotations

import re

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}

_MEMORY = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?|[kmgt]|B)?\s*$")
_MEMORY_UNITS = {
    None: 1,
    "B": 1,
    "k": 1000,
    "K": 1000,
    "M": 1000**2,
    "m": 1000**2,
    "G": 1000**3,
    "g": 1000**3,
    "T": 1000**4,
    "t": 1000**4,
    "Ki": 1024,
    "Mi": 1024**2,
    "Gi": 1024**3,
    "Ti": 1024**4,
}


def parse_duration(value: object) -> float:
    """``"500ms"`` -> 0.5, ``"2s"`` -> 2.0, ``"1m"`` -> 60.0; bare numbers are seconds."""
    if isinstance(value, bool):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"duration must not be negative, got {value}")
        return float(value)
    if isinstance(value, str):
        match = _DURATION.match(value)
        if match:
            return float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    raise ValueError(f"invalid duration {value!r}: use a number of seconds or e.g. 500ms, 2s, 1m")


def parse_memory(value: object) -> int:
    """``"128Mi"`` -> 134217728 bytes; ``"1G"`` -> 10**9; bare numbers are bytes."""
    if isinstance(value, bool):
        raise ValueError(f"invalid memory size {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"memory must not be negative, got {value}")
        return int(value)
    if isinstance(value, str):
        match = _MEMORY.match(value)
        if match:
            return int(float(match.group(1)) * _MEMORY_UNITS[match.group(2)])
    raise ValueError(f"invalid memory size {value!r}: use bytes or e.g. 128Mi, 1Gi, 512M")


def parse_cpu(value: object) -> float:
    """``"250m"`` -> 0.25 cores; ``0.5`` -> 0.5 cores."""
    if isinstance(value, bool):
        raise ValueError(f"invalid cpu amount {value!r}")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError(f"cpu must not be negative, got {value}")
        return float(value)
    if isinstance(value, str):
        text = value.strip()
        try:
            if text.endswith("m"):
                return parse_cpu(float(text[:-1]) / 1000)
            return parse_cpu(float(text))
        except ValueError:
            pass
    raise ValueError(f"invalid cpu amount {value!r}: use cores (0.25) or millicores (250m)")


def format_memory(n: int) -> str:
    """134217728 -> ``"128Mi"``; used in tables and messages."""
    for unit, size in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    if n >= 1024**2:
        return f"{n / 1024**2:.1f}Mi"
    return str(n)
