"""Values shared between the bus messages that repeat them, both ways.

An app's spec travels in many messages: the app's state on every rollout step (once per
version), every node assignment that runs one of its replicas. Turning it into a dict to
send, and validating it again on receipt (its cross-field checks are Python), is most of
what those messages cost, and nearly always the very same spec went by a moment before.

Receiving: a model opts in with ``memoized`` in a ``wrap`` model validator;
``Envelope.open`` passes a ``DecodeMemo`` in the validation context when it reads a
msgpack payload, so a value whose encoded form was seen before is taken from the memo
instead of validated again. Models are frozen, so sharing one instance is safe. The
context also says the value came off the wire (``WIRE``): checks that only guard what a
user wrote before it is sent (its size as JSON, text that cannot be encoded) can skip
themselves, since a msgpack payload that decoded is valid UTF-8 and within the bus's size
limit.

Sending: ``dumped(model)`` is ``model.model_dump(mode="json")``, computed once per
instance while it is among the last ``MEMO_SIZE`` dumped (by identity: a copy made with
``model_copy(update=...)`` is a new instance, dumped anew). The dict is shared: read it,
never change it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, TypeVar

import msgpack
from pydantic import BaseModel, ValidationInfo
from pydantic_core.core_schema import ValidatorFunctionWrapHandler

#: Validation-context keys.
MEMO = "shoal_memo"
WIRE = "shoal_wire"

#: Values kept per memo: every spec of a 1,000-app fleet, with one rollout under way.
MEMO_SIZE = 4096

M = TypeVar("M", bound=BaseModel)


class DecodeMemo:
    """The last ``size`` values validated, by model and encoded input (least recently
    used first out)."""

    def __init__(self, size: int = MEMO_SIZE) -> None:
        self.size = size
        self.values: OrderedDict[tuple[type[BaseModel], bytes], BaseModel] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def validate(self, model: type[M], data: dict[str, Any], handler: Any) -> M:
        try:
            key = (model, msgpack.packb(data, use_bin_type=True))
        except (OverflowError, TypeError, ValueError):
            return handler(data)  # type: ignore[no-any-return]  # not encodable: validate
        found = self.values.get(key)
        if found is not None:
            self.values.move_to_end(key)
            self.hits += 1
            return found  # type: ignore[return-value]  # keyed by model
        value = handler(data)
        self.misses += 1
        self.values[key] = value
        if len(self.values) > self.size:
            self.values.popitem(last=False)
        return value  # type: ignore[no-any-return]


def memoized(
    model: type[M], data: Any, handler: ValidatorFunctionWrapHandler, info: ValidationInfo
) -> M:
    """The body of a model's ``wrap`` validator: ``handler(data)``, or the memo's copy."""
    context = info.context
    memo = context.get(MEMO) if isinstance(context, dict) else None
    if memo is None or not isinstance(data, dict):
        return handler(data)  # type: ignore[no-any-return]
    return memo.validate(model, data, handler)  # type: ignore[no-any-return]


def from_wire(info: ValidationInfo) -> bool:
    """Whether the value being validated was decoded from a msgpack bus payload."""
    context = info.context
    return isinstance(context, dict) and bool(context.get(WIRE))


#: id(model) -> (model, its JSON-mode dump); the model is kept so its id is not reused
_DUMPS: OrderedDict[int, tuple[BaseModel, dict[str, Any]]] = OrderedDict()


def dumped(model: BaseModel) -> dict[str, Any]:
    """``model.model_dump(mode="json")``, shared with earlier calls for the same instance."""
    found = _DUMPS.get(id(model))
    if found is not None and found[0] is model:
        _DUMPS.move_to_end(id(model))
        return found[1]
    data = model.model_dump(mode="json")
    _DUMPS[id(model)] = (model, data)
    if len(_DUMPS) > MEMO_SIZE:
        _DUMPS.popitem(last=False)
    return data
