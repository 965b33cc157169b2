"""Envelope round trips in msgpack and JSON, and refusal of everything else."""

from __future__ import annotations

import json

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core import codec
from core.commands import ApplyCommand, Reply
from core.errors import CodecError
from core.spec import AppSpec
from core.state import AppState, AppVersion


def test_msgpack_round_trip_of_a_full_app_state() -> None:
    spec = AppSpec(name="web", image="x:1", ports={"http": 80}, route={"port": "http"})
    state = AppState(
        namespace="default",
        name="web",
        revision=2,
        generation=3,
        spec=spec,
        replicas=3,
        versions=[AppVersion(revision=2, spec=spec, replicas=3)],
    )
    env = codec.make("app", state, src="controller/a")
    decoded = codec.decode(codec.encode(env), allow_json=False)
    assert decoded is not None
    assert decoded.kind == "app"
    assert decoded.id == env.id
    assert decoded.open(AppState) == state
    assert decoded.open_kind() == state
    assert not decoded.was_json


def test_json_round_trip_is_accepted_where_allowed() -> None:
    env = codec.make("apply", ApplyCommand(apps=[{"name": "a", "image": "x"}]), reply_to="r/1")
    raw = codec.encode_json(env)
    decoded = codec.decode(raw, allow_json=True)
    assert decoded is not None
    assert decoded.was_json
    assert decoded.reply_to == "r/1"
    assert decoded.open(ApplyCommand).apps == [{"name": "a", "image": "x"}]
    with pytest.raises(CodecError, match="command topics only"):
        codec.decode(raw, allow_json=False)


def test_hand_written_json_gets_defaults_for_id_and_ts() -> None:
    decoded = codec.decode(b' {"kind": "delete", "body": {"name": "web"}}')
    assert decoded is not None
    assert decoded.id
    assert decoded.ts > 0
    assert decoded.open_kind().model_dump() == {"namespace": "default", "name": "web"}


def test_empty_payload_means_deleted() -> None:
    assert codec.decode(b"") is None


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"\xc1garbage", "neither msgpack nor JSON"),
        (b"{not json", "neither msgpack nor JSON"),
        (msgpack.packb([1, 2, 3]), "must be a map"),
        (msgpack.packb({"v": 9, "kind": "app"}), "unsupported wire version"),
        (msgpack.packb({"body": {}}), "not a Shoal envelope"),
        (json.dumps({"kind": 5}).encode(), "not a Shoal envelope"),
    ],
)
def test_malformed_payloads_raise_codec_error(payload: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.decode(payload)


def test_body_of_the_wrong_shape_is_a_codec_error() -> None:
    env = codec.make("reply", {"ok": "maybe"})
    with pytest.raises(CodecError, match="reply body is invalid"):
        env.open(Reply)
    with pytest.raises(CodecError, match="unknown message kind"):
        codec.make("nonsense", {}).open_kind()


@given(
    st.dictionaries(
        st.text(max_size=8),
        st.one_of(
            st.integers(-(2**63), 2**63 - 1),
            st.text(),
            st.floats(allow_nan=False, allow_infinity=False),
            st.booleans(),
            st.none(),
        ),
        max_size=6,
    )
)
def test_any_body_survives_both_encodings(body: dict[str, object]) -> None:
    env = codec.make("event", body)
    for raw in (codec.encode(env), codec.encode_json(env)):
        decoded = codec.decode(raw)
        assert decoded is not None
        assert decoded.body == body


@given(st.binary(max_size=64))
def test_arbitrary_bytes_never_crash_the_decoder(payload: bytes) -> None:
    try:
        codec.decode(payload)
    except CodecError:
        pass


def test_values_msgpack_cannot_carry_are_a_codec_error() -> None:
    with pytest.raises(CodecError, match="cannot be encoded"):
        codec.encode(codec.make("event", {"n": 2**64}))


def _nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth - 1):
        value = [value]
    return {"v": value}


@pytest.mark.parametrize(
    "payload",
    [
        b'{"kind":"x","body":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
        b'{"kind":"x","body":' + b'{"a":' * 65 + b"1" + b"}" * 65 + b"}",
        msgpack.packb({"kind": "x", "body": _nested(70)}),
        b"\x81\xa4body" + b"\x91" * 100_000 + b"\xc0",
    ],
    ids=["json-100k", "json-66", "msgpack-70", "msgpack-100k"],
)
def test_deep_payloads_are_refused_before_they_are_built(payload: bytes) -> None:
    with pytest.raises(CodecError, match=r"nested deeper than 64|neither msgpack nor JSON"):
        codec.decode(payload)


def test_nesting_up_to_the_limit_and_brackets_in_strings_decode() -> None:
    env = codec.decode(msgpack.packb({"kind": "x", "body": _nested(60)}))
    assert env is not None
    assert env.kind == "x"
    text = b'{"kind":"x","body":{"s":"' + b"[" * 1000 + b'\\"{"}}'
    decoded = codec.decode(text)
    assert decoded is not None
    assert decoded.body["s"] == "[" * 1000 + '"{'


def test_payloads_larger_than_the_limit_are_refused() -> None:
    big = msgpack.packb({"kind": "x", "body": {"s": "y" * codec.MAX_PAYLOAD}})
    with pytest.raises(CodecError, match="larger than"):
        codec.decode(big)


def test_the_largest_legitimate_messages_fit() -> None:
    """An app of the largest spec (1 MiB as JSON) and a 200-app apply decode."""
    spec = AppSpec(name="big", image="x:1", env={f"K{i}": "v" * 1000 for i in range(1000)})
    state = codec.encode(codec.make("apps", {"spec": spec.model_dump(mode="json")}))
    assert 1_000_000 < len(state) < codec.MAX_PAYLOAD
    assert codec.decode(state) is not None
    many = [AppSpec(name=f"a{i}", image="x:1").model_dump(mode="json") for i in range(200)]
    assert codec.decode(codec.encode(codec.make("apply", {"apps": many}))) is not None
