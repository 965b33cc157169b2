"""Which retained ``apps/`` values a leader may clear: only garbage, and what its own store
wrote and has since deleted; never what another (or a newer copy of its) store wrote."""

from __future__ import annotations

from core import codec
from core.channels import APPS
from core.keys import AppKey
from services.controller.strays import may_clear
from tests.unit.controller.helpers import created

WEB = AppKey("default", "web")


def stamped(store_id: str, seq: int) -> codec.Envelope:
    state = created().state.model_copy(update={"store_id": store_id, "store_seq": seq})
    return codec.make(APPS.kind, state)


def test_what_this_store_wrote_and_deleted_is_cleared() -> None:
    assert may_clear(WEB, stamped("s1", 4), "s1", 4)
    assert may_clear(WEB, stamped("s1", 1), "s1", 9)


def test_another_stores_apps_are_never_cleared() -> None:
    assert not may_clear(WEB, stamped("s2", 1), "s1", 9)
    assert not may_clear(WEB, stamped("", 0), "s1", 9)  # written before stamps existed
    assert not may_clear(WEB, stamped("s1", 1), "", 9)


def test_a_store_behind_what_it_wrote_clears_nothing_newer() -> None:
    # a copy of the store taken before the app was written
    assert not may_clear(WEB, stamped("s1", 10), "s1", 9)


def test_garbage_is_cleared() -> None:
    assert may_clear(AppKey("default", "other"), stamped("s2", 1), "s1", 1)  # misfiled
    assert may_clear(WEB, codec.make("node", {"x": 1}), "s1", 1)
    assert may_clear(WEB, codec.make(APPS.kind, {"name": "web"}), "s1", 1)
