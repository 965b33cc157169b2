"""Specs shared between messages (``core.wire_memo``): what is decoded and sent is exactly
what validating and dumping every time would give."""

from __future__ import annotations

import json

import pytest

from core import codec
from core.codec import CodecError, decode, encode, make
from core.spec import AppSpec
from core.state import AppState, AppVersion, AssignedReplica, NodeAssignment
from core.wire_memo import DecodeMemo, dumped

SPEC = {"name": "web", "image": "shoal-test/echo:v1", "ports": {"http": 8080}}


def state(spec: AppSpec, generation: int) -> AppState:
    return AppState(
        namespace="default",
        name=spec.name,
        revision=1,
        generation=generation,
        spec=spec,
        replicas=2,
        versions=[AppVersion(revision=1, spec=spec, replicas=2)],
    )


def memo() -> DecodeMemo:
    found = codec._WIRE_CONTEXTS[True]["shoal_memo"]
    assert isinstance(found, DecodeMemo)
    return found


def test_a_repeated_spec_is_validated_once_and_shared() -> None:
    spec = AppSpec.model_validate(SPEC)
    first = decode(encode(make("app", state(spec, 1))))
    second = decode(encode(make("app", state(spec, 2))))
    assert first is not None
    assert second is not None
    a = first.open(AppState, lenient=True)
    hits = memo().hits
    b = second.open(AppState, lenient=True)
    assert memo().hits > hits
    assert a == b.model_copy(update={"generation": 1})
    assert a.spec is b.spec  # one instance for both messages
    assert a.spec == spec


def test_strict_and_lenient_reads_do_not_share() -> None:
    """A lenient read drops unknown fields; a strict read of the same bytes must still
    refuse them."""
    body = state(AppSpec.model_validate(SPEC), 1).model_dump(mode="json")
    body["spec"]["from_a_newer_peer"] = True
    env = decode(encode(make("app", body)))
    assert env is not None
    assert env.open(AppState, lenient=True).spec.name == "web"
    with pytest.raises(CodecError, match="from_a_newer_peer"):
        env.open(AppState)


def test_an_invalid_spec_is_refused_every_time() -> None:
    body = state(AppSpec.model_validate(SPEC), 1).model_dump(mode="json")
    body["spec"]["route"] = {"host": "web.test", "port": "nope"}
    for _ in range(2):
        env = decode(encode(make("app", body)))
        assert env is not None
        with pytest.raises(CodecError, match="not among ports"):
            env.open(AppState, lenient=True)


def test_json_payloads_are_fully_checked() -> None:
    """JSON (commands) can carry a lone surrogate; the wire shortcut is msgpack's only."""
    body = {"name": "web", "image": "x", "env": {"A": "\ud800"}}
    env = decode(json.dumps({"v": 1, "kind": "spec", "body": body}).encode())
    assert env is not None
    assert env.was_json
    with pytest.raises(CodecError, match="not valid Unicode"):
        env.open(AppSpec, lenient=True)


def test_wire_dumps_equal_model_dumps() -> None:
    spec = AppSpec.model_validate(SPEC)
    app = state(spec, 3)
    assert app.wire_dump() == app.model_dump(mode="json")
    assignment = NodeAssignment(
        node="n1",
        replicas=[AssignedReplica(id="r1", namespace="default", app="web", revision=1)],
        specs={"default/web@1": spec},
    )
    assert assignment.wire_dump() == assignment.model_dump(mode="json")
    assert dumped(spec) is dumped(spec)


def test_a_copy_is_dumped_anew() -> None:
    spec = AppSpec.model_validate(SPEC)
    before = dumped(spec)
    changed = spec.model_copy(update={"image": "shoal-test/echo:v2"})
    assert dumped(changed)["image"] == "shoal-test/echo:v2"
    assert before["image"] == "shoal-test/echo:v1"


def test_the_memo_is_bounded() -> None:
    small = DecodeMemo(size=2)
    for i in range(5):
        data = {**SPEC, "name": f"web{i}"}
        small.validate(AppSpec, data, AppSpec.model_validate)
    assert len(small.values) == 2
    assert small.misses == 5
