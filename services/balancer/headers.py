"""Header rules of a reverse proxy (pure): hop-by-hop headers stay on their hop, and the
upstream learns who the client was (X-Forwarded-*, X-Request-Id)."""

from __future__ import annotations

from collections.abc import Iterable

HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
    }
)

# What the client says about where it came from is never passed on: the balancer sets
# X-Forwarded-For/Proto/Host and X-Real-IP itself (it is the edge), and drops Forwarded.
CLIENT_FORWARDED = frozenset(
    {"x-forwarded-for", "x-forwarded-proto", "x-forwarded-host", "x-real-ip", "forwarded"}
)

#: The largest request head (request line and headers) read: 64 KiB, beyond it 431.
MAX_HEAD = 64 * 1024
#: Requests parsed ahead on one connection (pipelining) before reading stops.
MAX_PIPELINED = 64


def refuse_head(hosts: int, connection: str | None) -> str | None:
    """Why a request head is refused (400), or None: a request names one Host, and a
    ``Connection`` header naming Host would strip it on the way up."""
    if hosts > 1:
        return "more than one Host header"
    if "host" in connection_tokens(connection):
        return "the Connection header names Host"
    return None


# Set by aiohttp's websocket client itself; the client's own values must not be forwarded.
WEBSOCKET_HANDSHAKE = frozenset(
    {"sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions"}
)


def connection_tokens(value: str | None) -> frozenset[str]:
    """Header names listed in a ``Connection`` header are hop-by-hop too (RFC 9110 7.6.1)."""
    if not value:
        return frozenset()
    return frozenset(t.strip().lower() for t in value.split(",") if t.strip())


def strip_hop_by_hop(
    items: Iterable[tuple[str, str]], connection: str | None, extra: frozenset[str] = frozenset()
) -> list[tuple[str, str]]:
    drop = HOP_BY_HOP | connection_tokens(connection) | extra
    return [(k, v) for k, v in items if k.lower() not in drop]


def forwarded_for(client_ip: str | None) -> str:
    """X-Forwarded-For as the balancer sets it: the address it was connected from."""
    return client_ip or "unknown"


def client_key(hash_header: str | None, header_value: str | None, client_ip: str | None) -> str:
    """The key of the ``hash`` algorithm: a header's value, else the client's address."""
    if hash_header is not None and header_value:
        return header_value
    return client_ip or ""


IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})
