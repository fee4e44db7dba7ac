"""Resolve Texium's settings: defaults < settings module < .env < environment < flags.

Only the server entry point calls this; the core receives plain values.
"""

from __future__ import annotations

import importlib
import json
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from dotenv import dotenv_values

from texium import default_settings
from texium.core.security.outbound import parse_networks

# Environment names accepted without the TEXIUM_ prefix (the API document's .env uses them).
UNPREFIXED = ("MONGO_URI", "DB_NAME", "HTTP_PORT", "HTTP_ADDRESS")
# Settings that must be whole numbers within a range.
INT_RANGES = {
    "HTTP_PORT": (1, 65535),
    "SMTP_PORT": (1, 65535),
    "MAX_BODY_BYTES": (1, 1 << 34),
    "DATASTORE_THREADS": (1, 256),
    "THREAD_POOL_SIZE": (1, 256),
    "MAX_RUNS_PER_USER": (0, 256),
    "JOB_MAX_INSTANCES": (1, 1000),
    "MISFIRE_GRACE_TIME": (1, 10**9),  # 0 would make every firing late, so nothing would run
    "SHUTDOWN_GRACE_SECONDS": (0, 86400),
    "SMTP_TIMEOUT": (1, 3600),
    "EMAIL_MAX_PER_HOUR": (0, 10**6),
    "AUTH_FAILURES_PER_MINUTE": (1, 100000),
    "DEFAULT_JOB_TIMEOUT": (0, 7 * 86400),
    "MAX_CONNECTIONS": (1, 10**6),
    "MAX_CONNECTIONS_PER_ADDRESS": (1, 10**6),
    "HSTS_SECONDS": (0, 10**9),
    "ALERT_DIGEST_SECONDS": (0, 86400),
    "ALERT_DIGEST_AFTER": (1, 1000),
    "MONITOR_PINGS_PER_MINUTE": (1, 10**6),
    "MONITOR_PINGS_PER_ADDRESS_PER_MINUTE": (1, 10**6),
    "TRIGGER_RUNS_PER_MINUTE": (1, 10**6),
}
# Settings that are numbers of seconds within a range (fractions allowed).
SECONDS_RANGES = {
    "SCHEDULER_POLL_SECONDS": (0.05, 60),
    "JOBSTORE_RETRY_SECONDS": (0.05, 60),
    "HEARTBEAT_SECONDS": (0.1, 60),
    "NODE_TIMEOUT_SECONDS": (1, 86400),
    "HEADER_TIMEOUT_SECONDS": (1, 3600),
    "BODY_TIMEOUT_SECONDS": (1, 86400),
    "STOP_GRACE_SECONDS": (0.1, 3600),
    "BUSY_WARNING_SECONDS": (0.1, 86400),
    "BUSY_UNHEALTHY_SECONDS": (0.1, 86400),
    "SESSION_LIFETIME_SECONDS": (1, 366 * 86400),
    "ALERT_CHECK_SECONDS": (0.1, 3600),
    "ADHERENCE_CHECK_SECONDS": (0.1, 86400),
}
AUTH_MODES = ("auto", "on", "off")
DOMAIN = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)(\.(?!-)[A-Za-z0-9-]{1,63}(?<!-))*$")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
# Settings that must be true or false (text from .env / the environment is coerced before).
BOOLEANS = ("SMTP_ALLOW_PLAINTEXT_LOGIN", "OUTBOUND_DENY_PRIVATE", "METRICS_PUBLIC", "CHANNEL_HTTPS_ONLY")


class ConfigError(Exception):
    """A setting that cannot be used; its message is the one line printed at start-up."""


def defaults() -> dict[str, Any]:
    return {k: getattr(default_settings, k) for k in dir(default_settings) if k.isupper()}


def _coerce(name: str, value: Any, default: Any) -> Any:
    """Turn text from .env / the environment into the default's type."""
    if not isinstance(value, str):
        return value
    text = value.strip()
    if isinstance(default, bool):
        if text.lower() in ("1", "true", "yes", "on"):
            return True
        if text.lower() in ("0", "false", "no", "off", ""):
            return False
        raise ConfigError(f"Invalid setting {name}: {value!r} is not true or false")
    if isinstance(default, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"Invalid setting {name}: {value!r} is not a whole number") from None
    if isinstance(default, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"Invalid setting {name}: {value!r} is not a number") from None
    if isinstance(default, list):
        if text.startswith("["):
            try:
                return list(json.loads(text))
            except ValueError:
                raise ConfigError(f"Invalid setting {name}: {value!r} is not a JSON list") from None
        return [part.strip() for part in text.split(",") if part.strip()]
    return text


def _from_environment(source: Mapping[str, str | None], known: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for name, default in known.items():
        for key in (f"TEXIUM_{name}", name) if name in UNPREFIXED else (f"TEXIUM_{name}",):
            if source.get(key) is not None:
                found[name] = _coerce(key, source[key], default)
                break
    return found


def _from_module(module_name: str, known: dict[str, Any]) -> dict[str, Any]:
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # any import failure stops start-up with one line
        raise ConfigError(f"Cannot load settings module {module_name!r}: {exc}") from None
    return {k: getattr(module, k) for k in dir(module) if k.isupper() and k in known}


def validate(settings: dict[str, Any]) -> None:
    for name, (low, high) in INT_RANGES.items():
        value = settings[name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise ConfigError(f"Invalid setting {name}: {value!r} must be a whole number from {low} to {high}")
    for name, (low, high) in SECONDS_RANGES.items():
        value = settings[name]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
            raise ConfigError(f"Invalid setting {name}: {value!r} must be a number of seconds from {low} to {high}")
    if settings["NODE_TIMEOUT_SECONDS"] < 3 * settings["HEARTBEAT_SECONDS"]:
        raise ConfigError(
            "Invalid setting NODE_TIMEOUT_SECONDS: must be at least 3 x HEARTBEAT_SECONDS, "
            "or live nodes would be declared dead between two heartbeats"
        )
    try:
        ZoneInfo(str(settings["TIMEZONE"]))
    except Exception:
        raise ConfigError(f"Invalid setting TIMEZONE: {settings['TIMEZONE']!r} is not an IANA time zone") from None
    if str(settings["LOG_LEVEL"]).upper() not in LOG_LEVELS:
        raise ConfigError(
            f"Invalid setting LOG_LEVEL: {settings['LOG_LEVEL']!r} must be one of {', '.join(LOG_LEVELS)}"
        )
    if not isinstance(settings["JOB_CLASS_PACKAGES"], (list, tuple)):
        raise ConfigError("Invalid setting JOB_CLASS_PACKAGES: must be a list of package names")
    if str(settings["AUTH_MODE"]).lower() not in AUTH_MODES:
        raise ConfigError(
            f"Invalid setting AUTH_MODE: {settings['AUTH_MODE']!r} must be one of {', '.join(AUTH_MODES)}"
        )
    for name in ("ALLOWED_HOSTS", "CORS_ORIGINS", "ALERT_CHANNELS"):
        if not isinstance(settings[name], (list, tuple)) or not all(isinstance(v, str) for v in settings[name]):
            raise ConfigError(f"Invalid setting {name}: must be a list of names")
    try:
        parse_networks(settings["TRUSTED_PROXIES"], "TRUSTED_PROXIES")
    except ValueError as exc:
        raise ConfigError(f"Invalid setting {exc}") from None
    for name in BOOLEANS:
        if not isinstance(settings[name], bool):
            raise ConfigError(f"Invalid setting {name}: {settings[name]!r} must be true or false")
    try:
        parse_networks(settings["OUTBOUND_ALLOW"], "OUTBOUND_ALLOW")
    except ValueError as exc:
        raise ConfigError(f"Invalid setting {exc}") from None
    domains = settings["EMAIL_ALLOWED_DOMAINS"]
    if not isinstance(domains, (list, tuple)) or not all(isinstance(d, str) and DOMAIN.match(d) for d in domains):
        raise ConfigError("Invalid setting EMAIL_ALLOWED_DOMAINS: must be a list of domain names (example.com)")


def load_settings(
    flags: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
    cwd: str | None = None,
    settings_module: str | None = None,
) -> dict[str, Any]:
    """The effective settings; raises ConfigError with a one-line message."""
    environ = os.environ if environ is None else environ
    settings = defaults()
    module_name = settings_module or environ.get("TEXIUM_SETTINGS_MODULE")
    if module_name:
        settings.update(_from_module(module_name, settings))
    env_file = Path(cwd or os.getcwd()) / ".env"
    if env_file.is_file():
        settings.update(_from_environment(dotenv_values(env_file), settings))
    settings.update(_from_environment(environ, settings))
    settings.update({k: v for k, v in (flags or {}).items() if v is not None})
    settings["LOG_LEVEL"] = str(settings["LOG_LEVEL"]).upper()
    validate(settings)
    data_dir = str(Path(settings["DATA_DIR"]).expanduser().resolve())
    settings["DATA_DIR"] = data_dir
    for name, sub in (("BACKUP_DIR", "backups"), ("REPORT_DIR", "reports"), ("SCRIPTS_DIR", "scripts")):
        settings[name] = str(Path(settings[name] or Path(data_dir) / sub).expanduser().resolve())
    return settings
