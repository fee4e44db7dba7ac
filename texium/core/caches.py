"""The server's in-process caches, in one registry so MaintenanceJob's clear_cache can drop them."""

from __future__ import annotations

import functools
from collections.abc import Callable

_CACHES: list = []


def cached(fn: Callable) -> Callable:
    """functools.lru_cache, registered for clear_all()."""
    wrapped = functools.lru_cache(maxsize=1024)(fn)
    _CACHES.append(wrapped)
    return wrapped


def clear_all() -> str:
    """Empty every registered cache; says what was dropped."""
    parts = []
    for cache in _CACHES:
        entries = cache.cache_info().currsize
        cache.cache_clear()
        parts.append(f"{cache.__module__}.{cache.__qualname__}: {entries} entries")
    return "cleared " + ("; ".join(parts) if parts else "nothing (no caches registered)")
