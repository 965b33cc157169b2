"""The topic prefix, and MQTT wildcard matching.

Every topic is ``<prefix>/...``; the prefix (default ``shoal``) lets two clusters share a
broker. How each topic below it is spelled is the contract's business (``core.channels``).
"""

from __future__ import annotations

from dataclasses import dataclass

from core.channels import check_prefix, level, reply_topic

__all__ = ["Topics", "level", "matches"]


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str = "shoal"

    def __post_init__(self) -> None:
        check_prefix(self.prefix)

    def reply(self, user: str, client: str) -> str:
        return reply_topic(self.prefix, user, client)

    @property
    def everything(self) -> str:
        return f"{self.prefix}/#"


def matches(pattern: str, topic: str) -> bool:
    """MQTT wildcard matching (``+`` one level, ``#`` the rest); ``$share/g/`` is ignored."""
    if pattern.startswith("$share/"):
        pattern = pattern.split("/", 2)[2]
    p_parts = pattern.split("/")
    t_parts = topic.split("/")
    for i, p in enumerate(p_parts):
        if p == "#":
            return True
        if i >= len(t_parts):
            return False
        if p != "+" and p != t_parts[i]:
            return False
    return len(p_parts) == len(t_parts)
