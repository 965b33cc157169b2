"""The mesh's DNS messages: queries read, answers and name errors built (pure bytes)."""

from __future__ import annotations

import ipaddress
import struct

import pytest

from services.mesh import dnswire

VIP = ipaddress.IPv4Address("10.200.7.130")


def test_an_a_query_is_answered_with_the_vip() -> None:
    query = dnswire.parse_query(dnswire.build_query("db.prod", qid=77))
    assert (query.id, query.name, query.qtype, query.qclass) == (77, "db.prod", 1, 1)
    reply = dnswire.answer(query, [VIP])
    qid, flags = struct.unpack("!HH", reply[:4])
    assert qid == 77
    assert flags & 0x8000  # a response
    assert flags & 0x0100  # recursion desired, copied
    assert dnswire.answer_addresses(reply) == (0, [VIP])


def test_other_types_get_an_empty_answer_and_unknown_names_a_name_error() -> None:
    aaaa = dnswire.parse_query(dnswire.build_query("db", dnswire.TYPE_AAAA))
    assert dnswire.answer_addresses(dnswire.answer(aaaa, [VIP])) == (0, [])
    query = dnswire.parse_query(dnswire.build_query("nope.prod"))
    assert dnswire.answer_addresses(dnswire.name_error(query)) == (3, [])


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"\x00\x01", "shorter than a DNS header"),
        (dnswire.build_query("db")[:-3], "truncated"),
        (b"\x00\x01\x81\x00" + dnswire.build_query("db")[4:], "a response"),
        (b"\x00\x01\x08\x00" + dnswire.build_query("db")[4:], "not a standard query"),
        (b"\x00\x01\x01\x00\x00\x00" + dnswire.build_query("db")[6:], "no question"),
        (dnswire.build_query("db")[:12] + b"\xc0\x0c\x00\x01\x00\x01", "compressed"),
        (dnswire.build_query("db")[:12] + b"\x05ab", "truncated label"),
        (dnswire.build_query("db")[:12] + (b"\x3f" + b"a" * 63) * 5 + b"\0\0\1\0\1", "too long"),
    ],
)
def test_malformed_queries_are_refused(data: bytes, error: str) -> None:
    with pytest.raises(dnswire.DnsError, match=error):
        dnswire.parse_query(data)


def test_format_error_keeps_the_id_when_there_is_one() -> None:
    reply = dnswire.format_error(b"\x12\x34garbage")
    assert reply is not None
    assert struct.unpack("!HH", reply[:4]) == (0x1234, 0x8001)
    assert dnswire.format_error(b"\x01") is None
