"""Typed keys for the things the bus names: an app (``AppKey``) and a service instance.

A key is what a topic's variable levels spell (``apps/<namespace>/<name>``) and what a
message's body says about itself; ``core.channels`` checks that the two agree. Keys are
tuples, so they hash, sort and unpack; ``str(key)`` is the ``ns/name`` form used in
messages that map apps to values (``LbMetrics.apps``) and in logs.
"""

from __future__ import annotations

from typing import NamedTuple


class AppKey(NamedTuple):
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}/{self.name}"

    @classmethod
    def parse(cls, text: str) -> AppKey:
        """``"prod/web"`` -> ``AppKey("prod", "web")``; ValueError when it is not that form."""
        namespace, sep, name = text.partition("/")
        if not sep or not namespace or not name or "/" in name:
            raise ValueError(f"{text!r} is not an app key of the form <namespace>/<name>")
        return cls(namespace, name)


class ServiceKey(NamedTuple):
    """One instance of one service: ``services/<service>/<instance>``."""

    service: str
    instance: str

    def __str__(self) -> str:
        return f"{self.service}/{self.instance}"
