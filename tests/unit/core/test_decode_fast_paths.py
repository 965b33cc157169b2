"""The fast paths of decoding (floats as durations, depth checked over containers only)
answer exactly as the general ones."""

from __future__ import annotations

import math

import msgpack
import pytest

from core.codec import MAX_DEPTH, CodecError, decode
from core.units import MAX_DURATION, parse_duration


def test_float_durations_as_before() -> None:
    assert parse_duration(0.5) == 0.5
    assert parse_duration(MAX_DURATION) == MAX_DURATION
    zero = parse_duration(-0.0)
    assert zero == 0.0
    assert math.copysign(1, zero) == 1
    for bad in (-0.5, math.nan, math.inf, MAX_DURATION * 1.0000001):
        with pytest.raises(ValueError, match="duration"):
            parse_duration(bad)
    assert parse_duration(2) == 2.0
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(True)


def nested(depth: int, container: str) -> object:
    value: object = 1
    for _ in range(depth - 1):
        value = [value] if container == "list" else {"k": value}
    return value


@pytest.mark.parametrize("container", ["list", "map"])
def test_depth_limit_over_lists_and_map_values(container: str) -> None:
    ok = {"v": 1, "kind": "x", "body": {"deep": nested(MAX_DEPTH - 3, container)}}
    assert decode(msgpack.packb(ok)) is not None
    deep = {"v": 1, "kind": "x", "body": {"deep": nested(MAX_DEPTH + 2, container)}}
    with pytest.raises(CodecError, match="nested deeper"):
        decode(msgpack.packb(deep))


@pytest.mark.parametrize("container", ["list", "map"])
def test_depth_limit_is_exact(container: str) -> None:
    """The envelope and its body are two levels: MAX_DEPTH containers in all pass, one
    more does not."""
    at_limit = {"v": 1, "kind": "x", "body": {"deep": nested(MAX_DEPTH - 1, container)}}
    assert decode(msgpack.packb(at_limit)) is not None
    over = {"v": 1, "kind": "x", "body": {"deep": nested(MAX_DEPTH, container)}}
    with pytest.raises(CodecError, match="nested deeper"):
        decode(msgpack.packb(over))


def test_cpu_and_memory_fast_paths_as_before() -> None:
    from core.units import MAX_CPU, MAX_MEMORY, parse_cpu, parse_memory

    assert parse_cpu(0.25) == 0.25
    assert parse_cpu(MAX_CPU) == MAX_CPU
    assert math.copysign(1, parse_cpu(-0.0)) == 1
    for bad in (-0.5, math.nan, math.inf, MAX_CPU * 1.0000001):
        with pytest.raises(ValueError, match="cpu"):
            parse_cpu(bad)
    assert parse_memory(134217728) == 134217728
    assert parse_memory(MAX_MEMORY) == MAX_MEMORY
    for bad_memory in (-1, MAX_MEMORY + 1):
        with pytest.raises(ValueError, match="memory"):
            parse_memory(bad_memory)
    with pytest.raises(ValueError, match="memory"):
        parse_memory(True)
