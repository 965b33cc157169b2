"""Who may read the balancer's admin endpoint (``--admin``): pure rules.

``/routes`` and ``/metrics`` tell whoever asks every app, host, path and replica endpoint.
The endpoint is on loopback unless told otherwise (``--admin 9090`` is ``127.0.0.1:9090``);
with an admin token (``$SHOAL_BALANCER_ADMIN_TOKEN`` or ``--admin-token-file``) every path
but ``/healthz`` needs ``Authorization: Bearer <token>``, and an address beyond loopback is
refused at start without one.
"""

from __future__ import annotations

import hmac
import ipaddress

#: Answered without a token: liveness probes carry none, and it tells nothing of the routes.
OPEN_PATHS = frozenset({"/healthz"})
#: Where ``--admin`` binds when it names only a port.
DEFAULT_HOST = "127.0.0.1"


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a name: it may resolve to anything


def bind_refusal(host: str, token: str | None) -> str | None:
    """Why ``--admin`` may not bind ``host`` (None: it may)."""
    if token or is_loopback(host):
        return None
    return (
        f"the admin endpoint on {host} would show every route to anyone who can reach it: "
        "bind it to loopback (--admin 127.0.0.1:PORT) or set an admin token "
        "($SHOAL_BALANCER_ADMIN_TOKEN or --admin-token-file)"
    )


def allowed(path: str, authorization: str | None, token: str | None) -> bool:
    """Whether a request for ``path`` with that ``Authorization`` header is answered."""
    if not token or path in OPEN_PATHS:
        return True
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer":
        return False
    return hmac.compare_digest(given.strip().encode(), token.encode())


def read_token(text: str) -> str:
    """A token file's token: its first line, stripped; it may not be empty."""
    lines = text.strip().splitlines()
    token = lines[0].strip() if lines else ""
    if not token:
        raise ValueError("the admin token is empty")
    return token
