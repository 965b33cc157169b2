"""Messages as a newer Shoal would write them: one unknown field in every model, at any depth."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

FIELD = "x_from_a_newer_shoal"


def with_unknown_fields(model: BaseModel) -> dict[str, Any]:
    """The wire form of ``model`` with ``FIELD`` added to every model in it, maps and lists
    of models included. A plain map such as ``env`` gets no new entry: a new key there would
    change its meaning rather than add a field."""
    data = model.model_dump(mode="json", exclude_none=True)
    _mark(model, data)
    return data


def _mark(value: Any, data: Any) -> None:
    if isinstance(value, BaseModel) and isinstance(data, dict):
        for name in type(value).model_fields:
            if name in data:
                _mark(getattr(value, name), data[name])
        data[FIELD] = {"nested": [1, 2], "note": "ignored by older readers"}
    elif isinstance(value, list | tuple) and isinstance(data, list):
        for item, item_data in zip(value, data, strict=False):
            _mark(item, item_data)
    elif isinstance(value, dict) and isinstance(data, dict):
        for key, item in value.items():
            if str(key) in data:
                _mark(item, data[str(key)])
