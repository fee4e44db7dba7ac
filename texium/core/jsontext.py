"""JSON text as clients receive it, in one place: compact, UTF-8, times as fixed-width ISO 8601.

`Raw` marks text that is already the JSON of a value (a document the embedded store holds in
exactly the form clients see), so a response can splice it in instead of decoding it into
objects and encoding it again: the hot read paths of the API skip both.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from texium.core.timeutil import to_iso


class Raw(str):
    """Text that is the JSON of a value."""


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return to_iso(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


_encode = json.JSONEncoder(default=_default, ensure_ascii=False, separators=(",", ":")).encode


def dumps(value: Any) -> str:
    """JSON text of `value`; a Raw value, or a Raw item of a top-level dict or list, goes in as is."""
    if isinstance(value, Raw):
        return value
    if isinstance(value, dict) and any(_has_raw(v) for v in value.values()):
        return "{" + ",".join(f"{_encode(k)}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, list) and value and isinstance(value[0], Raw):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    return _encode(value)


def _has_raw(value: Any) -> bool:
    return isinstance(value, Raw) or (isinstance(value, list) and bool(value) and isinstance(value[0], Raw))


def document(doc: dict) -> Raw:
    return Raw(_encode(doc))
