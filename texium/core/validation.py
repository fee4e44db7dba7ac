"""Declarative checks for request bodies, so every resource names bad fields the same way."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from email_validator import EmailNotValidError, validate_email

from texium.core.datastore.base import is_valid_id
from texium.core.errors import ValidationError

_MISSING = object()
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_LOCAL = re.compile(rf"^{_LABEL}(?:\.{_LABEL})*$")


def _check_str(field: Field, value: Any) -> Any:
    if not isinstance(value, str):
        raise ValidationError(f"Invalid field {field.name}: must be a string")
    value = value.strip()
    if field.required and not value:
        raise ValidationError(f"Invalid field {field.name}: must not be empty")
    if len(value) > field.max_length:
        raise ValidationError(f"Invalid field {field.name}: at most {field.max_length} characters")
    if field.choices and value not in field.choices:
        raise ValidationError(f"Invalid field {field.name}: must be one of {', '.join(field.choices)}")
    return value


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


def _check_email(field: Field, value: Any) -> Any:
    value = _check_str(field, value)
    try:
        value = email_address(value)
    except ValueError:
        raise ValidationError(f"Invalid field {field.name}: {value!r} is not a valid email address") from None
    return value.lower()


def _check_url(field: Field, value: Any) -> Any:
    value = _check_str(field, value)
    if value:
        try:
            parts = urlsplit(value)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # e.g. an unbalanced '[' or a port that is not a number
            usable = False
        if not usable:
            raise ValidationError(f"Invalid field {field.name}: must be an http(s) URL")
    return value


def _check_int(field: Field, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValidationError(f"Invalid field {field.name}: must be an integer")
    low, high = field.int_range
    if not low <= value <= high:
        raise ValidationError(f"Invalid field {field.name}: must be from {low} to {high}")
    return value


def _of_type(python_type: type, wording: str) -> Callable[[Field, Any], Any]:
    def check(field: Field, value: Any) -> Any:
        if not isinstance(value, python_type):
            raise ValidationError(f"Invalid field {field.name}: must be {wording}")
        return value

    return check


def _check_id(field: Field, value: Any) -> Any:
    if not is_valid_id(value):
        raise ValidationError(f"Invalid field {field.name}: must be a 24-character hex id")
    return value


CHECKS: dict[str, Callable[[Field, Any], Any]] = {
    "str": _check_str,
    "email": _check_email,
    "url": _check_url,
    "int": _check_int,
    "bool": _of_type(bool, "true or false"),
    "list": _of_type(list, "a list"),
    "object": _of_type(dict, "an object"),
    "id": _check_id,
}


@dataclass(frozen=True)
class Field:
    name: str
    kind: str = "str"
    required: bool = False
    default: Any = _MISSING
    nullable: bool = False
    choices: tuple[str, ...] = ()
    max_length: int = 1000
    int_range: tuple[int, int] = (-(2**63), 2**63 - 1)


def validate_body(body: Mapping[str, Any], fields: tuple[Field, ...], partial: bool = False) -> dict:
    """Check a JSON object against `fields`.

    Creates (`partial=False`) need the required fields and get defaults; updates need at least
    one field and get no defaults. Unknown fields are refused so typos do not pass silently.
    """
    by_name = {f.name: f for f in fields}
    unknown = sorted(set(body) - set(by_name))
    if unknown:
        raise ValidationError(f"Unknown field{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
    if partial and not body:
        raise ValidationError("No fields to update")
    clean = {}
    for field in fields:
        value = body.get(field.name, _MISSING)
        if value is _MISSING:
            if field.required and not partial:
                raise ValidationError(f"Missing required field: {field.name}")
            if field.default is not _MISSING and not partial:
                clean[field.name] = copy.deepcopy(field.default)
            continue
        if value is None:
            if field.nullable:
                clean[field.name] = None
                continue
            if field.required:
                raise ValidationError(f"Missing required field: {field.name}")
            raise ValidationError(f"Invalid field {field.name}: must not be null")
        clean[field.name] = CHECKS[field.kind](field, value)
    return clean


def require_id(value: Any, what: str) -> str:
    """Ids in paths and queries: a malformed one is a 400, not a 404."""
    if not is_valid_id(value):
        raise ValidationError(f"Invalid {what}: {value!r} is not a valid ObjectId")
    return value
