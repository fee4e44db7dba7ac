"""Paged listing shared by every collection endpoint: one count plus one indexed page query."""

from __future__ import annotations

from dataclasses import dataclass

from texium.core.datastore.base import Collection, Filter, Sort

NEWEST_FIRST: Sort = [("created_at", -1)]
OLDEST_FIRST: Sort = [("created_at", 1)]


@dataclass
class Page:
    total: int
    items: list  # dicts, or Raw JSON texts


def list_page(
    collection: Collection,
    query: Filter,
    limit: int,
    offset: int,
    sort: Sort = OLDEST_FIRST,
    hidden: tuple[str, ...] = (),
    as_json: bool = True,
) -> Page:
    """One page and the total. Items come as the JSON text clients receive (as_json, the fast
    path: the embedded store hands over stored text) or as dicts for a service to reshape."""
    if as_json:
        items = collection.find_json(query, sort=sort, limit=limit, offset=offset, hidden=hidden)
    else:
        items = [without(doc, hidden) for doc in collection.find(query, sort=sort, limit=limit, offset=offset)]
    return Page(total=collection.count(query), items=items)


def without(doc: dict, hidden: tuple[str, ...]) -> dict:
    """A document as clients see it: internal fields removed."""
    return {k: v for k, v in doc.items() if k not in hidden}
