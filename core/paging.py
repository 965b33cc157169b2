"""Values larger than one broker message, sent as pages and assembled whole.

The broker refuses messages over its limit (mosquitto: ``message_size_limit``, 1 MiB in
``configs/mosquitto.conf``), and over MQTT 3.1.1 it does so silently: the publisher's PUBACK
arrives, the subscribers never see the message, the old retained value stays in force. So a
value that grows with the cluster (a node's assignment, an app's health) cannot be one
message. On a paged channel a value whose encoded envelope is larger than the bus's
``max_message`` is sent as:

- pages ``<topic>/page/<i>`` (kind ``page``, retained like the channel): the envelope's bytes
  cut into pieces, each carrying the ``digest`` (SHA-256) of the whole, first;
- then the head on ``<topic>`` itself (kind ``pages``): the digest, the page count, the size.

A reader delivers the value once it holds the head and every page of the head's digest, and
checks the digest: it sees the old value or the new one, never a mixture (pages of a newer
value that overwrite an older one's before its head arrives are held until that head comes).
A small value is sent whole as before, and the pages a paged value left behind are cleared.

``split`` and ``Assembler`` are pure; ``core.bus`` wires them to topics.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import os
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

#: What the shipped broker carries (configs/mosquitto.conf ``message_size_limit``); a bus
#: takes ``SHOAL_MAX_MESSAGE`` (bytes) from the environment when the broker is set otherwise.
DEFAULT_MAX_MESSAGE = 1024 * 1024
#: A page's envelope around its data (digest, index, kind, id, ts, src) stays under this.
PAGE_OVERHEAD = 1024
#: The largest value assembled from pages (and decoded): a node assignment of 100,000
#: replicas is about 7 MiB.
MAX_ASSEMBLED = 64 * 1024 * 1024
#: The most pages one value may have (a head naming more is refused).
MAX_PAGES = 4096

HEAD_KIND = "pages"
PAGE_KIND = "page"
PAGE_LEVEL = "page"


class PageHead(BaseModel):
    """The body of the head: which pages make the value."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    digest: str = Field(min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")
    pages: int = Field(ge=1, le=MAX_PAGES)
    size: int = Field(ge=1, le=MAX_ASSEMBLED)


class Page(BaseModel):
    """The body of one page: a piece of the value's envelope bytes (base64)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    digest: str = Field(min_length=64, max_length=64, pattern="^[0-9a-f]{64}$")
    index: int = Field(ge=0, lt=MAX_PAGES)
    data: str

    def raw(self) -> bytes:
        try:
            return base64.b64decode(self.data, validate=True)
        except binascii.Error as err:
            raise ValueError(f"page {self.index} data is not base64: {err}") from err


def max_message_from_env() -> int:
    """``SHOAL_MAX_MESSAGE`` (bytes) when set, else ``DEFAULT_MAX_MESSAGE``."""
    raw = os.environ.get("SHOAL_MAX_MESSAGE", "").strip()
    if not raw:
        return DEFAULT_MAX_MESSAGE
    try:
        value = int(raw)
    except ValueError as err:
        raise ValueError(f"SHOAL_MAX_MESSAGE={raw!r} is not a number of bytes") from err
    if value < 4 * PAGE_OVERHEAD:
        raise ValueError(f"SHOAL_MAX_MESSAGE={value} is too small (at least {4 * PAGE_OVERHEAD})")
    return value


def page_size(max_message: int) -> int:
    """How many value bytes one page carries so that its envelope fits ``max_message``."""
    return (max_message - PAGE_OVERHEAD) * 3 // 4  # base64 makes 4 characters of 3 bytes


def page_topic(topic: str, index: int) -> str:
    return f"{topic}/{PAGE_LEVEL}/{index}"


def page_pattern(pattern: str) -> str:
    """The subscription pattern of the pages of every topic ``pattern`` matches."""
    return f"{pattern}/{PAGE_LEVEL}/+"


def value_topic(topic: str) -> tuple[str, int] | None:
    """``(value topic, index)`` of a page topic; None when ``topic`` is not one."""
    base, sep, index = topic.rpartition(f"/{PAGE_LEVEL}/")
    if not sep or not base or not index.isdigit():
        return None
    return base, int(index)


def split(payload: bytes, max_message: int) -> tuple[PageHead, list[Page]]:
    """Cut ``payload`` (an encoded envelope) into pages that each fit ``max_message``."""
    size = page_size(max_message)
    count = max(1, math.ceil(len(payload) / size))
    if len(payload) > MAX_ASSEMBLED or count > MAX_PAGES:
        raise ValueError(
            f"a value of {len(payload)} bytes is larger than the {MAX_ASSEMBLED} bytes "
            f"(or {MAX_PAGES} pages of {size}) a paged value may have"
        )
    digest = hashlib.sha256(payload).hexdigest()
    pages = [
        Page(
            digest=digest,
            index=i,
            data=base64.b64encode(payload[i * size : (i + 1) * size]).decode("ascii"),
        )
        for i in range(count)
    ]
    return PageHead(digest=digest, pages=count, size=len(payload)), pages


@dataclass(slots=True)
class _Pending:
    head: PageHead | None = None
    delivered: str = ""  # the digest last assembled
    #: pages by digest: the head's, and the newest other one (a value whose head is coming)
    pages: dict[str, dict[int, bytes]] = field(default_factory=dict)


class Assembler:
    """Heads and pages of any number of topics in; whole values out, each once.

    Memory is bounded: per topic, the pages of the current head's digest and of at most one
    other (the newest), never more bytes than the head (or ``MAX_ASSEMBLED``) allows.
    """

    def __init__(self) -> None:
        self._topics: dict[str, _Pending] = {}

    def head(self, topic: str, head: PageHead) -> bytes | None:
        """A head arrived on ``topic``: the assembled value if every page is there."""
        state = self._topics.setdefault(topic, _Pending())
        state.head = head
        state.delivered = ""  # a head that comes again (a reconnect) delivers again
        self._trim(state)
        return self._complete(state)

    def page(self, topic: str, index: int, page: Page) -> bytes | None:
        """A page of the value on ``topic`` arrived: the assembled value if it completes one.

        Raises ``ValueError`` for a page that cannot belong to any value (bad data)."""
        if page.index != index:
            raise ValueError(f"page {page.index} arrived on the topic of page {index}")
        data = page.raw()
        state = self._topics.setdefault(topic, _Pending())
        head = state.head
        if (
            head is not None
            and head.digest == page.digest
            and (state.delivered == page.digest or index >= head.pages)
        ):
            return None
        if len(data) > MAX_ASSEMBLED:
            raise ValueError(f"page {index} is larger than a whole value may be")
        state.pages.setdefault(page.digest, {})[index] = data
        self._trim(state, newest=page.digest)
        return self._complete(state)

    def whole(self, topic: str) -> None:
        """A whole value (or a deletion) replaced the paged one on ``topic``."""
        self._topics.pop(topic, None)

    def known_pages(self, topic: str) -> int:
        """How many pages the latest head of ``topic`` names (0: none)."""
        state = self._topics.get(topic)
        return state.head.pages if state is not None and state.head is not None else 0

    def _trim(self, state: _Pending, newest: str = "") -> None:
        keep = {state.head.digest} if state.head is not None else set()
        if newest:
            keep.add(newest)
        for digest in [d for d in state.pages if d not in keep]:
            del state.pages[digest]
        for digest, pages in state.pages.items():
            limit = MAX_ASSEMBLED
            if state.head is not None and digest == state.head.digest:
                limit = state.head.size
            while pages and sum(len(p) for p in pages.values()) > limit:
                pages.pop(max(pages))

    def _complete(self, state: _Pending) -> bytes | None:
        head = state.head
        if head is None or state.delivered == head.digest:
            return None
        pages = state.pages.get(head.digest, {})
        if any(i not in pages for i in range(head.pages)):
            return None
        payload = b"".join(pages[i] for i in range(head.pages))
        if len(payload) != head.size or hashlib.sha256(payload).hexdigest() != head.digest:
            del state.pages[head.digest]
            raise ValueError(
                f"pages of {head.digest[:12]} do not make the value their head describes"
            )
        state.delivered = head.digest
        return payload
