"""The finite bounds every number in a model keeps, so that it can be sent and stored.

msgpack carries integers in [-2**63, 2**64); SQLite's INTEGER is a signed 64-bit value;
JSON has no NaN nor infinity (pydantic would write them as ``null``). A model field is
either bounded by what it means (a port, a replica count) or, at the least, by the signed
64-bit range below. Floats are finite by the ``Model`` configuration (``allow_inf_nan``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

#: The most replicas of one app, and the bound of every other count a user writes.
MAX_COUNT = 10_000

#: Any integer the wire and the store both carry.
Int64 = Annotated[int, Field(ge=INT64_MIN, le=INT64_MAX)]
#: A count or sequence number: non-negative, within signed 64 bits.
Count = Annotated[int, Field(ge=0, le=INT64_MAX)]
#: A revision or generation number: from 1, within signed 64 bits.
Serial = Annotated[int, Field(ge=1, le=INT64_MAX)]
