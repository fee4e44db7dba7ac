"""Documents as JSON text, shared by the providers that keep them so (SQLite, PostgreSQL).

Times are stored as fixed-width UTC ISO text truncated to milliseconds (as BSON does), so text
order is time order and both engines compare and sort them as plain strings.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from texium.core.caches import cached
from texium.core.datastore.base import is_time_field
from texium.core.timeutil import as_utc

TIME_TEXT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")


def time_text(value: datetime) -> str:
    """Fixed-width UTC text, truncated to milliseconds as BSON does, so text order is time order."""
    value = as_utc(value)
    return value.replace(microsecond=value.microsecond // 1000 * 1000).isoformat(timespec="microseconds")


def stored(field: str, value: Any) -> Any:
    return time_text(value) if isinstance(value, datetime) and is_time_field(field) else value


def encode(doc: dict) -> str:
    body = {field: stored(field, value) for field, value in doc.items() if field != "_id"}
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


_is_time_field = cached(is_time_field)  # decoding is the hot path of find


def decode(doc_id: str, text: str) -> dict:
    doc: dict[str, Any] = {"_id": doc_id}
    for field, value in json.loads(text).items():
        if type(value) is str and len(value) == 32 and _is_time_field(field) and TIME_TEXT.match(value):
            value = datetime.fromisoformat(value)
        doc[field] = value
    return doc
