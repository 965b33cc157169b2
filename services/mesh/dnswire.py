"""The few DNS messages the mesh speaks (RFC 1035), as pure functions over bytes.

The mesh answers ``A`` queries for cluster names itself and forwards every other query
unchanged to the host's resolvers; it only needs to read a query's question and to build
an answer, an empty answer or a name error for it.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

TYPE_A = 1
TYPE_AAAA = 28
TYPE_ANY = 255
CLASS_IN = 1
RCODE_OK = 0
RCODE_FORMERR = 1
RCODE_NXDOMAIN = 3

MAX_NAME = 255


class DnsError(ValueError):
    """A message that is not a query we can read."""


@dataclass(frozen=True, slots=True)
class Query:
    id: int
    flags: int
    name: str
    qtype: int
    qclass: int
    question: bytes  # the question section as received (echoed in the answer)


def parse_query(data: bytes) -> Query:
    """The first question of a standard query; ``DnsError`` if it is not one."""
    if len(data) < 12:
        raise DnsError("shorter than a DNS header")
    qid, flags, qdcount = struct.unpack("!HHH", data[:6])
    if flags & 0x8000:
        raise DnsError("a response, not a query")
    if (flags >> 11) & 0xF != 0:
        raise DnsError("not a standard query")
    if qdcount < 1:
        raise DnsError("no question")
    labels: list[str] = []
    pos = 12
    length = 0
    while True:
        if pos >= len(data):
            raise DnsError("truncated name")
        n = data[pos]
        pos += 1
        if n == 0:
            break
        if n & 0xC0:
            raise DnsError("compressed name in a question")
        label = data[pos : pos + n]
        if len(label) != n:
            raise DnsError("truncated label")
        length += n + 1
        if length > MAX_NAME:
            raise DnsError("name too long")
        labels.append(label.decode("ascii", errors="replace"))
        pos += n
    if pos + 4 > len(data):
        raise DnsError("truncated question")
    qtype, qclass = struct.unpack("!HH", data[pos : pos + 4])
    return Query(qid, flags, ".".join(labels), qtype, qclass, data[12 : pos + 4])


def _header(query: Query, rcode: int, ancount: int) -> bytes:
    rd = query.flags & 0x0100
    flags = 0x8000 | 0x0400 | rd | 0x0080 | rcode  # response, authoritative, RD copied, RA
    return struct.pack("!HHHHHH", query.id, flags, 1, ancount, 0, 0)


def answer(query: Query, addresses: list[ipaddress.IPv4Address], ttl: int = 5) -> bytes:
    """An authoritative answer: A records for an A (or ANY) query, none for other types
    (the name exists, it has no record of that type)."""
    records = b""
    count = 0
    if query.qtype in (TYPE_A, TYPE_ANY) and query.qclass == CLASS_IN:
        for ip in addresses:
            # 0xC00C: a pointer to the question's name at offset 12.
            records += struct.pack("!HHHIH", 0xC00C, TYPE_A, CLASS_IN, ttl, 4) + ip.packed
            count += 1
    return _header(query, RCODE_OK, count) + query.question + records


def name_error(query: Query) -> bytes:
    """NXDOMAIN: no such name (a cluster name that does not exist, or is not allowed)."""
    return _header(query, RCODE_NXDOMAIN, 0) + query.question


def format_error(data: bytes) -> bytes | None:
    """FORMERR for an unreadable query, when it has at least an id; else nothing."""
    if len(data) < 2:
        return None
    (qid,) = struct.unpack("!H", data[:2])
    return struct.pack("!HHHHHH", qid, 0x8000 | RCODE_FORMERR, 0, 0, 0, 0)


def build_query(name: str, qtype: int = TYPE_A, qid: int = 0x1234) -> bytes:
    """A standard recursive query (tests and the benchmark use it)."""
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    header = struct.pack("!HHHHHH", qid, 0x0100, 1, 0, 0, 0)
    return header + question + struct.pack("!HH", qtype, CLASS_IN)


def answer_addresses(data: bytes) -> tuple[int, list[ipaddress.IPv4Address]]:
    """(rcode, A records) of an answer built by ``answer`` (names as pointers)."""
    if len(data) < 12:
        raise DnsError("shorter than a DNS header")
    _, flags, qdcount, ancount = struct.unpack("!HHHH", data[:8])
    pos = 12
    for _ in range(qdcount):
        while data[pos] != 0:
            pos += data[pos] + 1
        pos += 5
    out: list[ipaddress.IPv4Address] = []
    for _ in range(ancount):
        pos += 2  # the name pointer
        rtype, _cls, _ttl, rdlen = struct.unpack("!HHIH", data[pos : pos + 10])
        pos += 10
        if rtype == TYPE_A and rdlen == 4:
            out.append(ipaddress.IPv4Address(data[pos : pos + 4]))
        pos += rdlen
    return flags & 0xF, out
