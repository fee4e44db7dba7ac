"""Typed run parameters: a job's declaration, checked on write, and the values of one run.

A job declares `parameters` ([{name, type, choices, default, required, description}]); a run
(run-now's body, a trigger URL's, a chained start's defaults) gives values by name. The record
of the run shows them in `parameters`, `secret` ones as "***"; the real secret values are sealed
with the server's SecretBox into SEALED, a field that no API serves (it is in the records'
HIDDEN) and the runner opens just before the job starts.
"""

from __future__ import annotations

import json
import math
from typing import Any

from texium.core.errors import ValidationError
from texium.core.security import secret_args

SEALED = "parameters_sealed"  # an execution record's hidden field: the run's secret values, encrypted
MASK = secret_args.MASK
TYPES = ("string", "integer", "number", "boolean", "choice", "secret")
_TYPE_WORDS = {
    "string": "a string",
    "secret": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
}


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: true is not 1, and 1 is 1.0."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b and isinstance(a, str) == isinstance(b, str)


def _conform(declared: dict, value: Any) -> Any:
    """`value` as the declared type takes it, or ValueError saying what it must be."""
    kind = declared["type"]
    if kind == "choice":
        for choice in declared.get("choices") or []:
            if _same(value, choice):
                return choice
        raise ValueError(f"must be one of {', '.join(json.dumps(c) for c in declared.get('choices') or [])}")
    ok = {
        "string": isinstance(value, str),
        "secret": isinstance(value, str),
        "boolean": isinstance(value, bool),
        "integer": (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, float) and value.is_integer()),
        "number": (isinstance(value, int) and not isinstance(value, bool))
        or (isinstance(value, float) and math.isfinite(value)),
    }[kind]
    if not ok:
        raise ValueError(f"must be {_TYPE_WORDS[kind]}, got {json.dumps(value)[:100]}")
    return int(value) if kind == "integer" else value


def check_declaration(declaration: list[dict] | None) -> list[dict]:
    """The job's `parameters` as stored; a bad declaration is a ValidationError naming the field.
    (Shapes, names and types are the schema's; these are the rules between the members.)"""
    declaration = list(declaration or [])
    seen: set[str] = set()
    for index, declared in enumerate(declaration):
        where = f"Invalid field parameters[{index}]"
        name, kind = declared["name"], declared["type"]
        if name.upper() in seen:  # upper-cased, the name of a script's environment variable
            raise ValidationError(f"{where}.name: {name} is declared twice (names differing in case only count as one)")
        seen.add(name.upper())
        if kind == "choice" and not declared.get("choices"):
            raise ValidationError(f"{where}.choices: a choice needs its choices")
        if kind != "choice" and "choices" in declared:
            raise ValidationError(f"{where}.choices: only a choice has choices (this one is {kind})")
        if "default" not in declared:
            continue
        if kind == "secret":
            raise ValidationError(f"{where}.default: a secret has no default (it would be stored in clear)")
        try:
            declared["default"] = _conform(declared, declared["default"])
        except ValueError as exc:
            raise ValidationError(f"{where}.default: {exc}") from None
    return declaration


def run_fields(declaration: list[dict] | None, values: dict[str, Any] | None, secrets: Any = None) -> dict:
    """The execution record's fields for a run given `values`: `parameters` (as shown: secrets
    "***") and SEALED (the secret values, encrypted with `secrets`, a SecretBox), defaults
    filled in. A value that is not declared, not of its type, or a required one missing is a
    ValidationError naming the parameter; a chained start, which gives no values, gets it
    for a required parameter without a default."""
    declaration, values = list(declaration or []), dict(values or {})
    by_name = {declared["name"]: declared for declared in declaration}
    for name in values:
        if name not in by_name:
            known = ", ".join(by_name) or "none"
            raise ValidationError(f"Invalid parameter {name}: the job does not declare it (declared: {known})")
    shown: dict[str, Any] = {}
    sealed: dict[str, str] = {}
    for name, declared in by_name.items():
        if name in values:
            try:
                value = _conform(declared, values[name])
            except ValueError as exc:
                raise ValidationError(f"Invalid parameter {name}: {exc}") from None
        elif "default" in declared:
            value = declared["default"]
        elif declared.get("required"):
            raise ValidationError(f"Invalid parameter {name}: it is required and has no default")
        else:
            continue
        if declared["type"] == "secret":
            sealed[name] = value
            value = MASK
        shown[name] = value
    if not declaration:
        return {}
    fields: dict[str, Any] = {"parameters": shown}
    if sealed:
        if secrets is None:
            raise secret_args.SecretsUnavailable("Secret parameters cannot be stored: the server has no secret key")
        fields[SEALED] = secrets.encrypt(json.dumps(sealed, ensure_ascii=False))
    return fields


def defaults(declaration: list[dict] | None) -> dict[str, Any]:
    """The values a run gets without asking (a scheduled one): the declared defaults."""
    return {declared["name"]: declared["default"] for declared in declaration or [] if "default" in declared}


def carried(record: dict) -> dict:
    """The fields of `record` that another attempt of the same run keeps (a retry)."""
    return {k: record[k] for k in ("parameters", SEALED) if record.get(k) is not None}


def values_of(record: dict, secrets: Any) -> dict[str, Any]:
    """The values the run receives: `parameters` with the secret ones opened."""
    values = dict(record.get("parameters") or {})
    token = record.get(SEALED)
    if token:
        if secrets is None:
            raise secret_args.SecretsUnavailable("The run's secret parameters cannot be read: no secret key")
        try:
            values.update(json.loads(secrets.decrypt(token)))
        except ValueError:
            raise secret_args.SecretsUnavailable(
                "The run's secret parameters cannot be decrypted with this server's SECRET_KEY"
            ) from None
    return values


def secret_values(record: dict, values: dict[str, Any] | None) -> dict:
    """The run's secret values, keyed as secret_args.searched_values takes them (for masking)."""
    shown = record.get("parameters") or {}
    return {
        ("params", name): value for name, value in (values or {}).items() if shown.get(name) == MASK and value != MASK
    }
