"""The API contract, texium/openapi.yaml, read by the core: the request-body schemas it validates against.

The description is the one place where request shapes are written down (types, required fields,
lengths, enums, formats, unknown fields). This module loads it from the installed package and
resolves its `$ref`s, so texium.core.validation can compile one validator per request schema.
It reads a package data file only: no settings, no texium.server.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from importlib import resources
from typing import Any

import yaml

SCHEMAS_REF = "#/components/schemas/"
HTTP_METHODS = ("get", "post", "put", "delete", "patch", "head", "options")
_ANNOTATIONS = frozenset({"description", "default", "examples", "example", "title", "readOnly", "writeOnly"})


@functools.cache
def description() -> dict[str, Any]:
    """texium/openapi.yaml as a dict, parsed once (libyaml's loader where available: ~10x faster)."""
    text = resources.files("texium").joinpath("openapi.yaml").read_text(encoding="utf-8")
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def resolve(node: Any, _seen: tuple[str, ...] = ()) -> Any:
    """`node` with every `#/components/schemas/...` reference replaced by a copy of its target.

    Keywords beside a `$ref` (OpenAPI 3.1 allows them) are merged in: annotations such as
    `default` or `description` override the target's, while a constraint that contradicts one
    of the target's is refused, since merging would silently drop it.
    """
    if isinstance(node, list):
        return [resolve(item, _seen) for item in node]
    if not isinstance(node, dict):
        return node
    resolved = {key: resolve(value, _seen) for key, value in node.items() if key != "$ref"}
    ref = node.get("$ref")
    if ref is None:
        return resolved
    if not ref.startswith(SCHEMAS_REF):
        raise ValueError(f"cannot resolve {ref!r}: only {SCHEMAS_REF}... references are supported")
    name = ref[len(SCHEMAS_REF) :]
    if name in _seen:
        raise ValueError(f"recursive schema {' -> '.join((*_seen, name))}")
    target = resolve(description()["components"]["schemas"][name], (*_seen, name))
    for key, value in resolved.items():
        if key in target and key not in _ANNOTATIONS and target[key] != value:
            raise ValueError(f"{key!r} beside $ref {ref!r} contradicts the target's; use allOf")
    return {**target, **resolved}


def operations() -> Iterator[tuple[str, str, dict]]:
    """(path, method, operation) for every operation of the description."""
    for path, item in description()["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def request_body_schema_name(operation: dict) -> str | None:
    """The components/schemas name of an operation's JSON request body, None if it takes none."""
    body = operation.get("requestBody")
    if body is None or "application/json" not in body["content"]:  # e.g. an iCalendar file
        return None
    ref = body["content"]["application/json"]["schema"].get("$ref", "")
    if not ref.startswith(SCHEMAS_REF):
        raise ValueError(f"operation {operation['operationId']}: a request body must $ref a named schema")
    return ref[len(SCHEMAS_REF) :]


def request_body_schemas() -> dict[str, dict]:
    """{name: resolved schema} of every schema some operation takes as its request body."""
    names = (request_body_schema_name(op) for _, _, op in operations())
    return {name: schema(name) for name in names if name}


def schema(name: str) -> dict:
    """components/schemas/`name`, resolved."""
    schemas = description()["components"]["schemas"]
    if name not in schemas:
        raise KeyError(f"texium/openapi.yaml has no schema {name!r}")
    return resolve(schemas[name], (name,))
