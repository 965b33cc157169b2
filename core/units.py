"""Parsing of the human units used in specs: durations, memory sizes and CPU amounts.

Pure functions; they raise ``ValueError`` (never anything else, whatever the input) with a
message meant for the user. Every result is finite and bounded (``MAX_*`` below), so it
can travel on the bus and be stored.

- Durations follow Go's ``time.ParseDuration`` (what compose and Docker take): one or more
  ``<number><unit>`` with units ``h``, ``m``, ``s``, ``ms``, ``us``/``µs``, ``ns``, largest
  first (``1m30s``, ``1h2m3.5s``, ``500ms``); a bare number is seconds.
- Memory follows Docker (``docker run -m``, compose): ``k``, ``m``, ``g``, ``t`` (also
  ``kb``...) are powers of 1024, as are Kubernetes' ``Ki``, ``Mi``, ``Gi``, ``Ti`` (also
  ``KiB``...). ``K``, ``M``, ``G``, ``T`` and ``KB``, ``MB``... are refused as ambiguous:
  Docker reads ``512M`` as 512 MiB, Kubernetes as 512,000,000 bytes. A bare number is bytes.
- CPU: cores (``0.5``) or millicores (``500m``).
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

#: The longest duration: one year (any timer or timeout longer than that is a mistake).
MAX_DURATION = 365 * 24 * 3600.0
#: The largest memory size: 256 TiB (an app's total at 10,000 replicas still fits 63 bits).
MAX_MEMORY = 2**48
#: The most CPU cores one amount may name.
MAX_CPU = 10_000.0

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_DURATION_PART = re.compile(rf"({_NUMBER})\s*(h|ms|m|s|us|µs|μs|ns)\s*")
_DURATION_UNITS: dict[str, Fraction] = {
    "h": Fraction(3600),
    "m": Fraction(60),
    "s": Fraction(1),
    "ms": Fraction(1, 1000),
    "us": Fraction(1, 10**6),
    "µs": Fraction(1, 10**6),  # MICRO SIGN
    "μs": Fraction(1, 10**6),  # GREEK SMALL LETTER MU
    "ns": Fraction(1, 10**9),
}
_BARE_NUMBER = re.compile(rf"^{_NUMBER}$")

_MEMORY = re.compile(rf"^({_NUMBER})\s*([A-Za-z]*)$")
_MEMORY_UNITS: dict[str, int] = {
    "": 1,
    "b": 1,
    "B": 1,
    # Docker's units: lowercase, powers of 1024
    "k": 1024,
    "kb": 1024,
    "m": 1024**2,
    "mb": 1024**2,
    "g": 1024**3,
    "gb": 1024**3,
    "t": 1024**4,
    "tb": 1024**4,
    # Kubernetes' (and IEC's) binary units
    "Ki": 1024,
    "KiB": 1024,
    "Mi": 1024**2,
    "MiB": 1024**2,
    "Gi": 1024**3,
    "GiB": 1024**3,
    "Ti": 1024**4,
    "TiB": 1024**4,
}
#: Units Docker reads as powers of 1024 and Kubernetes (or SI) as powers of 1000.
_AMBIGUOUS_MEMORY = {"K", "M", "G", "T", "KB", "MB", "GB", "TB"}

_CPU = re.compile(rf"^({_NUMBER})(m?)$")


def shown(value: object) -> str:
    """``repr(value)`` cut to a length fit for a message (inputs may be huge)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"<an integer of {value.bit_length()} bits>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _number(value: object, what: str) -> Fraction | None:
    """An int or float as an exact fraction; None if ``value`` is not a number.

    Refuses booleans, NaN, infinities and negative numbers.
    """
    if isinstance(value, bool):
        raise ValueError(f"invalid {what} {shown(value)}")
    if isinstance(value, int):
        exact = Fraction(value)
    elif isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"invalid {what} {shown(value)}: it must be a finite number")
        exact = Fraction(value)
    else:
        return None
    if exact < 0:
        raise ValueError(f"{what} must not be negative, got {shown(value)}")
    return exact


def _exact(number: str, value: object, what: str) -> Fraction:
    """The exact value of a decimal ``number`` (digits checked by a regex) from ``value``."""
    if len(number) > 64:
        raise ValueError(f"invalid {what} {shown(value)}: too many digits")
    return Fraction(number)


def parse_duration(value: object) -> float:
    """Seconds: ``"500ms"`` -> 0.5, ``"1m30s"`` -> 90.0, ``"2"`` or ``2`` -> 2.0."""
    if type(value) is float and 0.0 <= value <= MAX_DURATION:
        # the common case (a decoded message carries seconds as floats): no Fraction needed,
        # as a float compares exactly with MAX_DURATION
        return value + 0.0  # + 0.0 turns -0.0 into 0.0
    seconds = _number(value, "duration")
    if seconds is None:
        if not isinstance(value, str):
            raise ValueError(f"invalid duration {shown(value)}: use e.g. 500ms, 2s, 1m30s")
        seconds = _duration_text(value)
    if seconds > MAX_DURATION:
        raise ValueError(f"duration {shown(value)} is longer than the maximum of one year (8760h)")
    return float(seconds) + 0.0  # + 0.0 turns -0.0 into 0.0


def _duration_text(value: str) -> Fraction:
    text = value.strip()
    if text.startswith("-"):
        raise ValueError(f"duration must not be negative, got {shown(value)}")
    if _BARE_NUMBER.match(text):
        return _exact(text, value, "duration")
    total = Fraction(0)
    position = 0
    last_unit: Fraction | None = None
    while position < len(text):
        match = _DURATION_PART.match(text, position)
        if match is None:
            raise ValueError(
                f"invalid duration {shown(value)}: use a number of seconds or "
                "<number><unit> parts, units h, m, s, ms, us, ns (e.g. 500ms, 2s, 1m30s)"
            )
        unit = _DURATION_UNITS[match.group(2)]
        if last_unit is not None and unit >= last_unit:
            raise ValueError(
                f"invalid duration {shown(value)}: give each unit once, the largest first "
                "(e.g. 1h2m3s)"
            )
        total += _exact(match.group(1), value, "duration") * unit
        last_unit = unit
        position = match.end()
    if last_unit is None:
        raise ValueError(f"invalid duration {shown(value)}: use e.g. 500ms, 2s, 1m30s")
    return total


def parse_memory(value: object) -> int:
    """Bytes: ``"128Mi"`` and ``"128m"`` -> 134217728; bare numbers are bytes.

    Fractions of a byte are dropped, as Docker does (``"1.5k"`` -> 1536).
    """
    if type(value) is int and 0 <= value <= MAX_MEMORY:
        return value  # bytes, as a decoded message carries them
    size = _number(value, "memory size")
    if size is None:
        if not isinstance(value, str):
            raise ValueError(
                f"invalid memory size {shown(value)}: use bytes or e.g. 128Mi, 512m, 1g"
            )
        size = _memory_text(value)
    if size > MAX_MEMORY:
        raise ValueError(f"memory size {shown(value)} is larger than the maximum of 256Ti")
    return math.floor(size)


def _memory_text(value: str) -> Fraction:
    match = _MEMORY.match(value.strip())
    if match is None:
        if value.strip().startswith("-"):
            raise ValueError(f"memory must not be negative, got {shown(value)}")
        raise ValueError(f"invalid memory size {shown(value)}: use bytes or e.g. 128Mi, 512m, 1g")
    number, unit = match.groups()
    if unit in _AMBIGUOUS_MEMORY:
        power = "KMGT".index(unit[0]) + 1
        raise ValueError(
            f"memory size {shown(value)} is ambiguous: Docker reads {unit} as 1024^{power} bytes, "
            f"Kubernetes as 1000^{power}; write {number}{unit[0]}i "
            f"(or Docker's {number}{unit[0].lower()}) for 1024^{power}, or a number of bytes"
        )
    if unit not in _MEMORY_UNITS:
        raise ValueError(
            f"invalid memory size {shown(value)}: unknown unit {unit!r}; use bytes, "
            "k/m/g/t (Docker, 1024-based) or Ki/Mi/Gi/Ti"
        )
    return _exact(number, value, "memory size") * _MEMORY_UNITS[unit]


def parse_cpu(value: object) -> float:
    """Cores: ``"250m"`` -> 0.25; ``0.5`` or ``"0.5"`` -> 0.5."""
    if type(value) is float and 0.0 <= value <= MAX_CPU:
        return value + 0.0  # as parse_duration: what a decoded message carries, as is
    cores = _number(value, "cpu amount")
    if cores is None:
        match = _CPU.match(value.strip()) if isinstance(value, str) else None
        if match is None:
            raise ValueError(
                f"invalid cpu amount {shown(value)}: use cores (0.25) or millicores (250m)"
            )
        cores = _exact(match.group(1), value, "cpu amount") / (1000 if match.group(2) else 1)
    if cores > MAX_CPU:
        raise ValueError(f"cpu amount {shown(value)} is more than the maximum of {MAX_CPU:g} cores")
    return float(cores) + 0.0


def format_memory(n: int) -> str:
    """134217728 -> ``"128Mi"``; used in tables and messages."""
    for unit, size in (("Gi", 1024**3), ("Mi", 1024**2), ("Ki", 1024)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    if n >= 1024**2:
        return f"{n / 1024**2:.1f}Mi"
    return str(n)
