"""Secret values at rest: AES-GCM bound to the row, and the key file."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from services.controller.secret_box import SecretBox, SecretKeyError, load_key, row_label


def test_a_value_round_trips_and_is_bound_to_its_row() -> None:
    box = SecretBox(os.urandom(32))
    token = box.seal(b"s3cret value", row_label("default", "db", 1))
    assert b"s3cret" not in token.encode()
    assert box.open(token, row_label("default", "db", 1)) == b"s3cret value"
    assert box.seal(b"s3cret value", row_label("default", "db", 1)) != token  # fresh nonce
    for other in (row_label("default", "db", 2), row_label("prod", "db", 1)):
        with pytest.raises(SecretKeyError, match="same key file"):
            box.open(token, other)
    with pytest.raises(SecretKeyError):
        SecretBox(os.urandom(32)).open(token, row_label("default", "db", 1))


def test_the_check_value_tells_the_store_key_from_another() -> None:
    box = SecretBox(os.urandom(32))
    check = box.check_value()
    assert box.opens(check)
    assert not SecretBox(os.urandom(32)).opens(check)


def test_the_key_file_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "data" / "secrets.key"
    key = load_key(path, create=True)
    assert len(key) == 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_key(path, create=True) == key
    assert load_key(path, create=False) == key


def test_a_missing_or_malformed_key_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SecretKeyError, match="cannot read the secrets key"):
        load_key(tmp_path / "absent.key", create=False)
    short = tmp_path / "short.key"
    short.write_text("c2hvcnQ=\n")
    with pytest.raises(SecretKeyError, match="holds 5 bytes, not 32"):
        load_key(short, create=False)
