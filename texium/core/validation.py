"""Request bodies checked against their schema in texium/openapi.yaml, so every resource names bad
fields the same way and the description cannot drift from what the server accepts.

The description is the one place for request shapes: types, required fields, lengths, enums,
patterns, ranges, formats, defaults and unknown fields (`additionalProperties: false`). Each
request-body schema is compiled once (jsonschema_rs; texium.core.contract loads and resolves
it) and `validate_body` runs it:

1. Top-level strings are trimmed of surrounding whitespace, then checked.
2. The compiled schema checks the body.
3. Each `format` runs its check from FORMATS, which may also normalise the value: `email` is
   `email_address()` (email-validator), `http-url` an http(s) URL with a host (or empty).
   An `integer` takes no fraction at all (80, not 80.0), stricter than JSON Schema.
4. A create gets the schema's `default`s for what it leaves out (after the fields it gives);
   an update (partial) gets none.

The first problem, in the order of the schema's properties, becomes a ValidationError (400)
naming the field: `Unknown field: x`, `No fields to update`, `Missing required field: x` or
`Invalid field x: <what is wrong>`. Rules a schema cannot say (a cron field parses, an owner
exists, an email is unique) stay with the services.
"""

from __future__ import annotations

import copy
import functools
import json
import re
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

import jsonschema_rs
from dateutil import parser as _dateparser
from email_validator import EmailNotValidError, validate_email

from texium.core import contract
from texium.core.datastore.base import is_valid_id
from texium.core.errors import ValidationError

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_LOCAL = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")


def email_address(value: str, *, local_domain: bool = False) -> str:
    """The one e-mail address check, for users' `email` and EmailNotificationJob's addresses.

    The email-validator library's rules, without any DNS look-up (check_deliverability=False):
    a dot-atom local part (no quoting, spaces or line breaks) and a domain name as in DNS, i.e.
    labels of letters, digits and hyphens with a dot in it, so `ops@exa_mple.com` (underscore)
    and `ops@localhost` are refused. `local_domain=True` (the sender, SMTP_FROM) also takes a
    host-local domain such as the default `texium@localhost`, its local part checked the same way.
    Returns the normalised address (domain in lower case); raises ValueError saying why not.
    """
    try:
        return validate_email(value, check_deliverability=False).normalized
    except EmailNotValidError as exc:
        local, at, domain = value.rpartition("@")
        if not (local_domain and at and _HOST_LOCAL.match(domain)):
            raise ValueError(str(exc)) from None
    try:  # a name the library refuses only for being dotless or special-use (localhost, .local)
        checked = validate_email(f"{local}@example.com", check_deliverability=False)
    except EmailNotValidError as exc:
        raise ValueError(str(exc)) from None
    return f"{checked.local_part}@{domain.lower()}"


# ---- formats: domain checks the schema names with `format` -------------------------------------


def _email(value: str) -> str:
    try:
        return email_address(value).lower()
    except ValueError:
        raise ValueError(f"{value!r} is not a valid email address") from None


def _http_url(value: str) -> str:
    if value:
        try:
            parts = urlsplit(value)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # e.g. an unbalanced '[' or a port that is not a number
            usable = False
        if not usable:
            raise ValueError("must be an http(s) URL")
    return value


def _date_time(value: str) -> str:
    """An ISO 8601 time with an explicit offset (a time without one would be read in some zone)."""
    try:
        parsed = _dateparser.isoparse(value)
    except (ValueError, OverflowError):
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise ValueError("must be an ISO 8601 time with an offset, e.g. 2026-03-01T09:00:00+00:00")
    return value


# format -> check of a string value: returns it (maybe normalised) or raises ValueError(what is wrong)
FORMATS: dict[str, Callable[[str], str]] = {"email": _email, "http-url": _http_url, "date-time": _date_time}


def _nullable(check: Callable[[str], str]) -> Callable[[Any], Any]:
    """A format's check for a property that may also be null."""
    return lambda value: value if value is None else check(value)


def _whole(value: Any) -> Any:
    if type(value) is float:  # JSON Schema counts 80.0 as an integer; a port or a count should not be one
        raise ValueError("must be an integer")
    return value


# ---- wording -----------------------------------------------------------------------------------

_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "an object",
}
_PATTERN_WORDS = {  # a pattern's meaning in words; others are quoted as they are
    "^[0-9a-f]{24}$": "must be a 24-character hex id",
    "^(https?://.+)?$": "must be an http(s) URL",
}
# which problem of one field is told first
_RANK = {"type": 0, "minLength": 1, "maxLength": 2, "enum": 3, "const": 3, "pattern": 4, "minimum": 5, "maximum": 5}
_FORMAT_RANK = 6


def _types(prop: Mapping) -> list[str]:
    types = prop.get("type", [])
    return [types] if isinstance(types, str) else list(types)


def _wording(prop: Mapping, keyword: str, fallback: str) -> str:
    """What is wrong with a value that breaks `keyword` of its property schema `prop`."""
    if keyword == "type":
        return "must be " + " or ".join(_TYPE_WORDS.get(t, t) for t in _types(prop) if t != "null")
    if keyword == "minLength":
        return "must not be empty" if prop["minLength"] == 1 else f"at least {prop['minLength']} characters"
    if keyword == "maxLength":
        return f"at most {prop['maxLength']} characters"
    if keyword == "enum":
        return f"must be one of {', '.join(str(option) for option in prop['enum'])}"
    if keyword == "pattern":
        return _PATTERN_WORDS.get(prop["pattern"], f"must match {prop['pattern']}")
    if keyword in ("minimum", "maximum"):
        low, high = prop.get("minimum"), prop.get("maximum")
        if low is not None and high is not None:
            return f"must be from {low} to {high}"
        return f"must be at least {low}" if high is None else f"must be at most {high}"
    return fallback


def _factory(default: list | dict) -> Callable[[], Any]:
    """Makes a fresh copy of a list or object default each time, so no two documents share one."""
    return functools.partial(copy.deepcopy, default) if default else type(default)


# ---- request schemas ---------------------------------------------------------------------------


class RequestSchema:
    """One request-body schema of the description, compiled once. Use request_schema(name)."""

    def __init__(self, name: str, schema: dict):
        if schema.get("type") != "object":
            raise ValueError(f"request schema {name} must be an object")
        self.name = name
        self.schema = schema
        self.properties: dict[str, dict] = schema.get("properties", {})
        self.required = frozenset(schema.get("required", ()))
        self.closed = schema.get("additionalProperties", True) is False
        self.min_properties = schema.get("minProperties", 0)
        self.validator = jsonschema_rs.Draft202012Validator(schema, validate_formats=False)
        self._position = {field: i for i, field in enumerate(self.properties)}
        defaults = {field: prop["default"] for field, prop in self.properties.items() if "default" in prop}
        containers = {field: value for field, value in defaults.items() if isinstance(value, (list, dict))}
        self.constants = tuple((field, value) for field, value in defaults.items() if field not in containers)
        self.containers = tuple((field, _factory(value)) for field, value in containers.items())
        # the checks run after the schema's: (field, ((rank, check), ...)) for the fields that have any
        self.checks: tuple[tuple[str, tuple[tuple[int, Callable[[Any], Any]], ...]], ...] = ()
        for field, prop in self.properties.items():
            checks = []
            if "integer" in _types(prop):
                checks.append((_RANK["type"], _whole))
            if "format" in prop:
                if prop["format"] not in FORMATS:
                    raise ValueError(f"{name}.{field}: format {prop['format']!r} has no check in FORMATS")
                checks.append((_FORMAT_RANK, _nullable(FORMATS[prop["format"]])))
            if checks:
                self.checks += ((field, tuple(checks)),)
        for field, value in defaults.items():
            if not jsonschema_rs.Draft202012Validator(self.properties[field]).is_valid(value):
                raise ValueError(f"{name}.{field}: the default {value!r} breaks the property's own schema")

    def __repr__(self) -> str:
        return f"RequestSchema({self.name!r})"

    def first_problem(self, body: dict) -> str:
        """The message for the first thing wrong with `body`, in the order of the properties."""
        unknown = sorted(set(body) - self.properties.keys()) if self.closed else []
        if unknown:
            return f"Unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}"
        if len(body) < self.min_properties:
            return "No fields to update" if self.min_properties == 1 else f"At least {self.min_properties} fields"
        last = len(self._position)
        problems = {}  # field -> (position, rank, message): its first problem
        for field in self.required - body.keys():
            problems[field] = (self._position.get(field, last), -1, f"Missing required field: {field}")
        other = None
        for error in self.validator.iter_errors(body):
            path = list(error.instance_path)
            if not path:
                other = other or error.message
                continue
            field, keyword = path[0], error.schema_path[-1]
            if len(path) > 1:
                where = field + "".join(f"[{json.dumps(step)}]" for step in path[1:])
                message = f"Invalid field {where}: {error.message}"
            elif keyword == "type" and error.instance is None:
                required = field in self.required
                message = f"Missing required field: {field}" if required else f"Invalid field {field}: must not be null"
            else:
                message = f"Invalid field {field}: {_wording(self.properties[field], keyword, error.message)}"
            problem = (self._position.get(field, last), _RANK.get(keyword, _FORMAT_RANK + 1), message)
            problems[field] = min(problems.get(field, problem), problem)
        for field, checks in self.checks:
            if field in body and field not in problems:
                for rank, check in checks:
                    try:
                        check(body[field])
                    except ValueError as exc:
                        problems[field] = (self._position[field], rank, f"Invalid field {field}: {exc}")
                        break
        if problems:
            return min(problems.values())[2]
        return f"Invalid request body: {other}"


@functools.cache
def _request_schemas() -> dict[str, RequestSchema]:
    """Every request-body schema of the description, compiled (a broken one fails at import)."""
    return {name: RequestSchema(name, schema) for name, schema in contract.request_body_schemas().items()}


def request_schema(name: str) -> RequestSchema:
    """The compiled request-body schema `name` of texium/openapi.yaml, e.g. "UserCreate"."""
    schemas = _request_schemas()
    if name not in schemas:
        raise KeyError(f"{name!r} is not the request body of any operation in texium/openapi.yaml")
    return schemas[name]


def validate_body(body: dict[str, Any], schema: RequestSchema, partial: bool = False) -> dict:
    """`body` checked against `schema`: its fields cleaned, then the defaults it left out; or ValidationError.

    A create (`partial=False`) gets the schema's defaults for the fields it leaves out; an update
    (`partial=True`) gets none. Unknown fields are refused, so typos do not pass silently.
    """
    if not isinstance(body, dict):
        raise ValidationError("Request body must be a JSON object")
    clean = {key: value.strip() if type(value) is str else value for key, value in body.items()}
    if not schema.validator.is_valid(clean):
        raise ValidationError(schema.first_problem(clean))
    for field, checks in schema.checks:
        if field in clean:
            for _, check in checks:
                try:
                    clean[field] = check(clean[field])
                except ValueError as exc:
                    raise ValidationError(f"Invalid field {field}: {exc}") from None
    if not partial:
        for field, value in schema.constants:
            if field not in clean:
                clean[field] = value
        for field, fresh in schema.containers:
            if field not in clean:
                clean[field] = fresh()
    return clean


def require_id(value: Any, what: str) -> str:
    """Ids in paths and queries: a malformed one is a 400, not a 404."""
    if not is_valid_id(value):
        raise ValidationError(f"Invalid {what}: {value!r} is not a valid ObjectId")
    return value
