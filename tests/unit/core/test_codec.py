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
