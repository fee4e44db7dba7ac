"""Typed run parameters: a job's declaration, checked on write, and the values of one run.

(Interface first; the checks and secret sealing land with issue 23's parameters work.)
"""

from __future__ import annotations

from typing import Any


def check_declaration(declaration: list[dict] | None) -> list[dict]:
    """The job's `parameters` as stored; a bad declaration is a ValidationError naming the field."""
    return list(declaration or [])


def run_fields(declaration: list[dict] | None, values: dict[str, Any] | None, secrets: Any = None) -> dict:
    """The execution record's fields for a run given `values`: `parameters` (as shown)."""
    return {"parameters": dict(values or {})} if values else {}
