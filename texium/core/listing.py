"""Paged listing shared by every collection endpoint: one count plus one indexed page query."""

from __future__ import annotations

from dataclasses import dataclass

from texium.core.datastore.base import Collection, Filter, Sort

NEWEST_FIRST: Sort = [("created_at", -1)]
OLDEST_FIRST: Sort = [("created_at", 1)]


@dataclass
class Page:
    total: int
    items: list[dict]


def list_page(
    collection: Collection,
    query: Filter,
    limit: int,
    offset: int,
    sort: Sort = OLDEST_FIRST,
    hidden: tuple[str, ...] = (),
) -> Page:
    items = collection.find(query, sort=sort, limit=limit, offset=offset)
    return Page(total=collection.count(query), items=[without(doc, hidden) for doc in items])


def without(doc: dict, hidden: tuple[str, ...]) -> dict:
    """A document as clients see it: internal fields removed."""
    return {k: v for k, v in doc.items() if k not in hidden}
