"""Small helpers the built-in jobs share: argument checks, settings paths, formatting.

Every check raises JobError with a message that names the offending argument, so a bad
argument becomes a failed execution with a clear `error`.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from texium.core.security.outbound import OutboundPolicy, redact_url  # noqa: F401 (the jobs call it from here)
from texium.jobs.base import JobError

# --------------------------------------------------------------------------- arguments


def no_extra_args(args: tuple, allowed: int, usage: str) -> None:
    if len(args) > allowed:
        raise JobError(f"too many pub_args ({len(args)}); expected {usage}")


def check_arguments(args: tuple, kwargs: Mapping[str, Any], allowed: int, usage: str, known: Iterable[str]) -> None:
    """At most `allowed` pub_args and only the `known` pub_kwargs, or a JobError saying so."""
    no_extra_args(args, allowed, usage)
    no_unknown_kwargs(kwargs, known)


def no_unknown_kwargs(kwargs: Mapping[str, Any], known: Iterable[str]) -> None:
    unknown = sorted(set(kwargs) - set(known))
    if unknown:
        raise JobError(
            f"unknown argument{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(sorted(known))}"
        )


def require_str(name: str, value: Any, *, allow_empty: bool = False, max_len: int | None = None) -> str:
    if not isinstance(value, str):
        raise JobError(f"{name} must be a string, got {type(value).__name__}")
    if not allow_empty and not value.strip():
        raise JobError(f"{name} must not be empty")
    if max_len is not None and len(value) > max_len:
        raise JobError(f"{name} is too long ({len(value)} characters; at most {max_len})")
    return value


def number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    exclusive_minimum: bool = False,
    integer: bool = False,
) -> float | int:
    """A real number (numeric strings accepted, booleans refused) within the bounds."""
    if isinstance(value, bool):
        raise JobError(f"{name} must be a number, got a boolean")
    if isinstance(value, str):
        try:
            value = float(value.strip()) if not integer else int(value.strip())
        except ValueError:
            raise JobError(f"{name} must be {'an integer' if integer else 'a number'}, got {value!r}") from None
    if integer:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int):
            raise JobError(f"{name} must be an integer, got {value!r}")
    elif not isinstance(value, (int, float)) or not math.isfinite(value):
        raise JobError(f"{name} must be a number, got {value!r}")
    if minimum is not None:
        if exclusive_minimum and value <= minimum:
            raise JobError(f"{name} must be greater than {minimum:g}, got {value!r}")
        if not exclusive_minimum and value < minimum:
            raise JobError(f"{name} must be at least {minimum:g}, got {value!r}")
    if maximum is not None and value > maximum:
        raise JobError(f"{name} must be at most {maximum:g}, got {value!r}")
    return value


def boolean(name: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
        return value.strip().lower() in ("true", "yes", "1", "on")
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise JobError(f"{name} must be true or false, got {value!r}")


def str_list(name: str, value: Any, *, allow_empty: bool = False) -> list[str]:
    """A list of non-empty strings; a single string is taken as a one-element list.
    Duplicates are dropped, order kept."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)):
        raise JobError(f"{name} must be a list of strings, got {type(value).__name__}")
    out: list[str] = []
    for item in value:
        if not isinstance(item, str) or not item.strip():
            raise JobError(f"{name} must be a list of non-empty strings, got {item!r} in it")
        if item.strip() not in out:
            out.append(item.strip())
    if not out and not allow_empty:
        raise JobError(f"{name} must not be empty")
    return out


def no_line_breaks(name: str, value: str) -> str:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise JobError(f"{name} must not contain line breaks")
    return value


# --------------------------------------------------------------------------- run inputs


def run_environment(context: Any) -> dict[str, str]:
    """The environment variables that give a program the run's inputs: TEXIUM_PARAM_<NAME>
    (upper-cased; strings as they are, other values as JSON), TEXIUM_TRIGGER and
    TEXIUM_PARENT_EXECUTION_ID (empty when none), and for a chained run TEXIUM_PARENT_RESULT
    (the JSON the parent published, `null` when nothing). Never on a command line, where `ps`
    shows them."""
    env = {
        "TEXIUM_TRIGGER": str(getattr(context, "trigger", "") or ""),
        "TEXIUM_PARENT_EXECUTION_ID": str(getattr(context, "parent_execution_id", "") or ""),
    }
    if env["TEXIUM_TRIGGER"] == "chain" or env["TEXIUM_PARENT_EXECUTION_ID"]:
        env["TEXIUM_PARENT_RESULT"] = json.dumps(context.parent_result, ensure_ascii=False)
    for name, value in (getattr(context, "params", None) or {}).items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if "\x00" in text:
            raise JobError(f"parameter {name} holds a NUL character, which an environment variable cannot")
        env[f"TEXIUM_PARAM_{name.upper()}"] = text
    return env


# --------------------------------------------------------------------------- settings


def setting(config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """A settings value; None and "" count as unset."""
    value = config.get(key) if config else None
    return default if value is None or value == "" else value


def data_dir(config: Mapping[str, Any]) -> str:
    return os.path.abspath(os.path.expanduser(str(setting(config, "DATA_DIR", "./texium-data"))))


def dir_setting(config: Mapping[str, Any], key: str, default_subdir: str) -> str:
    """BACKUP_DIR / REPORT_DIR / SCRIPTS_DIR: the setting, or `<DATA_DIR>/<default_subdir>`."""
    value = setting(config, key)
    if value is None:
        return os.path.join(data_dir(config), default_subdir)
    return os.path.abspath(os.path.expanduser(str(value)))


def outbound_policy(config: Mapping[str, Any]) -> OutboundPolicy:
    """The outbound rule of the webhook and health-check jobs: OUTBOUND_ALLOW, OUTBOUND_DENY_PRIVATE."""
    deny_private = boolean("OUTBOUND_DENY_PRIVATE", setting(config, "OUTBOUND_DENY_PRIVATE", False))
    try:
        return OutboundPolicy.from_settings(setting(config, "OUTBOUND_ALLOW"), deny_private)
    except ValueError as exc:
        raise JobError(f"invalid setting {exc}") from None


# --------------------------------------------------------------------------- formatting


def human_bytes(n: float | int | None) -> str:
    if n is None:
        return "n/a"
    n = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{int(n)} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


def compact_stamp(moment: datetime) -> str:
    """20250102T030405Z: sortable, safe in file names."""
    return moment.strftime("%Y%m%dT%H%M%SZ")


def http_url(name: str, value: Any) -> str:
    """An absolute http(s) URL with a host; anything else is refused."""
    value = require_str(name, value).strip()
    no_line_breaks(name, value)
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a bad port
    except ValueError as exc:
        raise JobError(f"{name} is not a valid URL: {exc}") from None
    if parts.scheme.lower() not in ("http", "https"):
        raise JobError(f"{name} must be an http:// or https:// URL, got scheme {parts.scheme or '(none)'!r}")
    if not parts.hostname:
        raise JobError(f"{name} has no host: {redact_url(value)!r}")
    return value


def first_line(text: Any, limit: int = 500) -> str:
    """The telling line of an error: the last line of a traceback, else the first non-empty line."""
    if text is None:
        return ""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1] if lines[0].startswith("Traceback (most recent call last)") else lines[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"
