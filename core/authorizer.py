"""Authorisation of commands, for the services that answer them (controller, scheduler).

``Authorizer(path)`` reads the identities file (``core.identities``); ``None`` means
authorisation is off (``shoal up``, the demo: a broker on loopback that anyone local may
use). The file is read again when it changes (``shoal auth grant`` then takes effect at
the next command, no restart); a file that stops reading back is logged and the last good
one kept, so a typo never opens the cluster.

``check(env, verb, namespace)`` raises ``SpecError`` with the "not allowed" line when the
requester (``env.user``, vouched for by the broker's ACL) may not; ``who(env)`` is the name
the audit trail records.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from core.codec import Envelope
from core.errors import SpecError
from core.identities import AuthError, AuthFile, authorize, authorize_secret_values, load_auth
from core.logs import get_logger

log = get_logger("shoal.authz")


class Authorizer:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._stamp: tuple[int, int] | None = None
        self._auth: AuthFile | None = None
        if path is not None:
            self._auth = load_auth(path)  # a bad file at start is an error, at once
            self._stamp = self._stat()

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def _stat(self) -> tuple[int, int] | None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size)

    def current(self) -> AuthFile | None:
        """The identities in force (None: authorisation off)."""
        if self.path is None:
            return None
        stamp = self._stat()
        if stamp != self._stamp:
            self._stamp = stamp
            try:
                self._auth = load_auth(self.path)
                log.info("identities file read", path=str(self.path))
            except AuthError as err:
                log.error("identities file unreadable; the last good one stays", error=str(err))
        return self._auth

    def who(self, env: Envelope) -> str:
        """Who the audit trail names: the vouched user, else (bare topic, authorisation
        off) what the sender says it is."""
        return env.user or env.src

    def check(self, env: Envelope, verb: str, namespace: str | None) -> None:
        self.check_all(env, verb, [namespace])

    def check_all(self, env: Envelope, verb: str, namespaces: Iterable[str | None]) -> None:
        auth = self.current()
        if auth is None:
            return
        refusals = [
            line
            for ns in dict.fromkeys(namespaces)
            if (line := authorize(auth, env.user, verb, ns)) is not None
        ]
        if refusals:
            raise SpecError(refusals)

    def allows(self, env: Envelope, verb: str, namespace: str) -> bool:
        auth = self.current()
        return auth is None or authorize(auth, env.user, verb, namespace) is None

    def check_secret_values(self, env: Envelope, role: str, node: str) -> None:
        auth = self.current()
        if auth is None:
            return
        line = authorize_secret_values(auth, env.user, role, node)
        if line is not None:
            raise SpecError([line])
