"""Secret job arguments: stored as "***" in the job document, the real values encrypted beside it.

A job class names its secret arguments in a class attribute, `secret_arguments`:

    secret_arguments = ("secret", "headers.*")

Each entry is a dotted path into the run's arguments: a first segment `args` means `pub_args`
(`args.0` is the first positional argument, `args.*` every one), `kwargs` means `pub_kwargs`,
and any other first segment is a keyword argument (`secret` is `pub_kwargs.secret`). Further
segments go into nested objects and lists; `*` is every member. Object keys match without
regard to case (`headers.authorization` covers `Authorization`).

Besides the declared ones, every http(s) URL with a password in its user info (`user:pw@host`),
anywhere in the arguments, is secret: it is stored with the password replaced by `***`.

The job document keeps the masked arguments (what every response, list and audit entry shows)
and, in FIELD, the real values: Fernet ciphertext of a JSON list of [path, value] pairs ("" when
there are none). On update a value sent back as "***" (a URL whose password is `***`) keeps the
stored one; a new value replaces it; a key left out is gone.

A class that sends its secrets somewhere names the argument holding that URL in
`secret_destination` (the webhook: "args.0"). A secret is bound to the destination it was given
for: once the URL's scheme, host or port changes (or the class names another destination), "***"
no longer keeps it and the secret must be entered again, so whoever may edit a job cannot point
it at their own host and receive the stored token.
"""

from __future__ import annotations

import base64
import copy
import json
import re
from collections.abc import Iterable, Iterator
from typing import Any
from urllib.parse import quote, unquote, urlsplit

from texium.core.errors import TexiumError, ValidationError

MASK = "***"
FIELD = "secrets_encrypted"  # the job document's hidden field; kept its last member (see SchedulerManager)
ROOTS = ("pub_args", "pub_kwargs")
# Secret values shorter than this are not searched for in outputs, errors and log lines: they would
# match everywhere (a header value "1" would mask every digit 1). Responses mask them all the same.
MIN_SEARCHED_LENGTH = 4

Path = tuple  # ("pub_kwargs", "headers", "Authorization") or ("pub_args", 0)
Secrets = dict  # Path -> real value


class SecretsUnavailable(TexiumError):
    """Secret values cannot be stored or read: no key, or the key that sealed them is gone."""


# -- declarations ----------------------------------------------------------------------------
def parse_declaration(declared: Any, owner: str = "job class") -> tuple[tuple[str, ...], ...]:
    """`secret_arguments` as patterns (root, segment, ...); ValueError when it is malformed."""
    if declared is None:
        return ()
    if isinstance(declared, str):
        declared = (declared,)
    if not isinstance(declared, (tuple, list, set, frozenset)):
        raise ValueError(f"{owner}.secret_arguments must be a tuple of argument names, got {type(declared).__name__}")
    patterns = []
    for entry in declared:
        if not isinstance(entry, str) or not entry.strip() or any(not s for s in entry.strip().split(".")):
            raise ValueError(
                f"{owner}.secret_arguments: {entry!r} is not an argument path like 'secret' or 'headers.*'"
            )
        segments = entry.strip().split(".")
        if segments[0] in ("args", "kwargs") and len(segments) > 1:
            patterns.append((f"pub_{segments[0]}", *segments[1:]))
        else:
            patterns.append(("pub_kwargs", *segments))
    return tuple(patterns)


def parse_destination(declared: Any, owner: str = "job class") -> tuple[str, ...] | None:
    """`secret_destination` as a pattern, or None; ValueError when it is not one argument path."""
    if declared is None:
        return None
    if not isinstance(declared, str):
        raise ValueError(f"{owner}.secret_destination must be one argument path like 'args.0'")
    return parse_declaration(declared, owner)[0]


def show(path: Path) -> str:
    """A path as messages show it: pub_args[0], pub_kwargs.headers.Authorization."""
    text = path[0]
    for segment in path[1:]:
        text += f"[{segment}]" if isinstance(segment, int) else f".{segment}"
    return text


# -- walking the arguments -------------------------------------------------------------------
def _children(value: Any, segment: str) -> Iterator[tuple[Any, Any]]:
    """(key, child) of `value` that a pattern segment names."""
    if isinstance(value, dict):
        if segment == "*":
            yield from value.items()
        else:
            wanted = segment.lower()
            yield from ((k, v) for k, v in value.items() if isinstance(k, str) and k.lower() == wanted)
    elif isinstance(value, list):
        if segment == "*":
            yield from enumerate(value)
        elif segment.isdigit() and int(segment) < len(value):
            yield int(segment), value[int(segment)]


def _declared_paths(root: dict, patterns: Iterable[tuple[str, ...]]) -> list[Path]:
    found: list[Path] = []
    for pattern in patterns:
        level: list[tuple[Path, Any]] = [((pattern[0],), root.get(pattern[0]))]
        for segment in pattern[1:]:
            level = [((*path, key), child) for path, value in level for key, child in _children(value, segment)]
        found += [path for path, value in level if value is not None and value != "" and path not in found]
    return found


def _strings(value: Any, path: Path) -> Iterator[tuple[Path, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, child in value.items():
            yield from _strings(child, (*path, key))
    elif isinstance(value, list):
        for index, child in enumerate(value):
            yield from _strings(child, (*path, index))


def _get(root: Any, path: Path) -> Any:
    for segment in path:
        try:
            root = root[segment]
        except (KeyError, IndexError, TypeError):
            return None
    return root


def _set(root: Any, path: Path, value: Any) -> bool:
    parent = _get(root, path[:-1])
    key = path[-1]
    if isinstance(parent, dict) or (isinstance(parent, list) and isinstance(key, int) and key < len(parent)):
        parent[key] = value
        return True
    return False


def _under(path: Path, others: Iterable[Path]) -> bool:
    return any(path[: len(other)] == other for other in others)


# -- where the secrets go --------------------------------------------------------------------
def destination(pub_args: list, pub_kwargs: dict, pattern: tuple[str, ...] | None) -> str | None:
    """scheme://host:port of the URL at `pattern` (what a secret is bound to), or None when the class
    names no destination. A missing or malformed URL is compared as it is."""
    if pattern is None:
        return None
    root = {"pub_args": list(pub_args or []), "pub_kwargs": dict(pub_kwargs or {})}
    paths = _declared_paths(root, [pattern])
    value = _get(root, paths[0]) if paths else None
    if not isinstance(value, str):
        return json.dumps(value, sort_keys=True, default=str)
    try:
        parts = urlsplit(value.strip())
        scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
        port = parts.port or {"http": 80, "https": 443}.get(scheme)
    except ValueError:
        return value
    return f"{scheme}://{host}:{port}"


def show_pattern(pattern: tuple[str, ...]) -> str:
    """A declared path as messages show it: pub_args[0], pub_kwargs.url."""
    return show(tuple(int(s) if s.isdigit() else s for s in pattern))


# -- URL credentials -------------------------------------------------------------------------
def _url_parts(value: Any) -> tuple[str, str, str, str] | None:
    """(before user info, user, password, after '@') of an http(s) URL with a password; else None."""
    if not isinstance(value, str) or "@" not in value or "://" not in value:
        return None
    try:
        parts = urlsplit(value)
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not parts.password:
        return None
    start = value.index("://") + 3
    if value[start : start + len(parts.netloc)] != parts.netloc:  # urlsplit dropped tabs or line breaks
        value = parts.geturl()
        start = value.index("://") + 3
    userinfo, _, _ = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    return value[:start], user, password, value[start + len(userinfo) + 1 :]


def has_url_password(value: Any) -> bool:
    return _url_parts(value) is not None


def mask_url(value: Any) -> Any:
    """The URL with its password shown as ***; anything else as it is."""
    parts = _url_parts(value)
    if parts is None:
        return value
    before, user, _, after = parts
    return f"{before}{user}:{MASK}@{after}"


def has_masked_password(value: Any) -> bool:
    parts = _url_parts(value)
    return parts is not None and unquote(parts[2]) == MASK


def _authority(after_at: str) -> str:
    return re.split(r"[/?#]", after_at, maxsplit=1)[0].lower()


def restore_url(sent: str, stored: str, where: str) -> str:
    """`sent` (its password ***) with the password of `stored`. The password only goes back to the
    place it was given for: the same scheme, user, host and port (the path may change)."""
    new, old = _url_parts(sent), _url_parts(stored)
    if old is None or new is None:
        raise ValidationError(f"Invalid field {where}: the password *** stands for a stored one, and there is none")
    if (new[0].lower(), new[1], _authority(new[3])) != (old[0].lower(), old[1], _authority(old[3])):
        raise ValidationError(
            f"Invalid field {where}: the password *** stands for the stored one, which is kept only for the "
            "same scheme, user, host and port; send the password again"
        )
    return f"{new[0]}{new[1]}:{old[2]}@{new[3]}"


# -- sealing and revealing -------------------------------------------------------------------
def seal(
    pub_args: list,
    pub_kwargs: dict,
    declared: Iterable[tuple[str, ...]],
    previous: Secrets | None = None,
    moved: str | None = None,
) -> tuple[list, dict, Secrets]:
    """(masked pub_args, masked pub_kwargs, path -> real value). `previous` are the values stored
    before an update: "***" (or a URL with password ***) where one of them was keeps it, and
    stays secret. A "***" that stands for nothing stored is refused (ValidationError), and so is
    one whose destination changed: `moved` names the argument whose scheme, host or port did."""
    root = {"pub_args": copy.deepcopy(list(pub_args)), "pub_kwargs": copy.deepcopy(dict(pub_kwargs))}
    kept: list[Path] = []  # kept values stay secret whatever the class declares now
    for path, real in (previous or {}).items():
        sent = _get(root, path)
        if sent == MASK:
            if moved is not None:
                raise ValidationError(
                    f"Invalid field {show(path)}: *** stands for the stored secret, which is kept only for the "
                    f"destination it was given for; the scheme, host or port of {moved} changed, so enter the "
                    "secret again"
                )
            _set(root, path, real)
        elif has_masked_password(sent) and isinstance(real, str):
            _set(root, path, restore_url(sent, real, show(path)))
        else:
            continue
        if not has_url_password(_get(root, path)):  # a URL is masked as a URL, below
            kept.append(path)
    declared_paths = _declared_paths(root, declared)
    whole = list(dict.fromkeys([*declared_paths, *kept]))
    secrets: Secrets = {}
    for path in whole:
        value = _get(root, path)
        if value == MASK:
            raise ValidationError(
                f"Invalid field {show(path)}: *** stands for a stored secret value, and there is none; send the value"
            )
        if value is None or value == "":
            continue
        secrets[path] = value
        _set(root, path, MASK)
    for name in ROOTS:
        for path, value in list(_strings(root[name], (name,))):
            if path in secrets or _under(path, secrets) or not has_url_password(value):
                continue
            if has_masked_password(value):
                raise ValidationError(
                    f"Invalid field {show(path)}: the password *** stands for a stored one, and there is none"
                )
            secrets[path] = value
            _set(root, path, mask_url(value))
    return root["pub_args"], root["pub_kwargs"], secrets


def reveal(pub_args: list, pub_kwargs: dict, secrets: Secrets) -> tuple[list, dict]:
    """The arguments a run receives: the stored (masked) ones with the real values put back."""
    if not secrets:
        return pub_args, pub_kwargs
    root = {"pub_args": copy.deepcopy(list(pub_args)), "pub_kwargs": copy.deepcopy(dict(pub_kwargs))}
    for path, value in secrets.items():
        _set(root, path, value)
    return root["pub_args"], root["pub_kwargs"]


def encrypt(secrets: Secrets, box: Any) -> str:
    """FIELD's value: "" when there is nothing secret (no key needed then)."""
    if not secrets:
        return ""
    if box is None:
        raise SecretsUnavailable("Secret arguments cannot be stored: the server has no secret key for them")
    return box.encrypt(json.dumps([[list(path), value] for path, value in secrets.items()], ensure_ascii=False))


def decrypt(token: str | None, box: Any) -> Secrets:
    if not token:
        return {}
    if box is None:
        raise SecretsUnavailable("Secret arguments cannot be read: the server has no secret key for them")
    try:
        pairs = json.loads(box.decrypt(token))
    except ValueError:
        raise SecretsUnavailable(
            "The job's secret arguments cannot be decrypted with this server's SECRET_KEY"
        ) from None
    return {tuple(path): value for path, value in pairs}


def changes(before: Secrets, after: Secrets) -> list[str]:
    """What an update did to the secret values, for the audit entry (never the values)."""
    said = []
    for path in dict.fromkeys([*before, *after]):
        if path not in after:
            said.append(f"secret {show(path)} removed")
        elif path not in before:
            said.append(f"secret {show(path)} set")
        elif before[path] != after[path]:
            said.append(f"secret {show(path)} changed")
    return said


# -- masking text ----------------------------------------------------------------------------
def _leaves(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for child in value.values():
            yield from _leaves(child)
    elif isinstance(value, list):
        for child in value:
            yield from _leaves(child)
    elif isinstance(value, str):
        yield value
    elif value is not None and not isinstance(value, bool):
        yield str(value)


def searched_values(secrets: Secrets) -> list[tuple[str, str]]:
    """(text, what shows instead) to find in outputs, errors and log lines, longest first: each
    secret value as given, JSON-escaped, repr-escaped and percent-encoded (shown as ***); a URL
    as its masked form, its password and the Basic authorization made of it as ***."""
    found: dict[str, str] = {}
    for value in secrets.values():
        for text in _leaves(value):
            forms = [json.dumps(text, ensure_ascii=False)[1:-1], json.dumps(text)[1:-1], repr(text)[1:-1]]
            forms.append(quote(text, safe=""))
            parts = _url_parts(text)
            if parts is not None:
                _, user, password, _ = parts
                basic = f"{unquote(user)}:{unquote(password)}"
                forms += [password, unquote(password), base64.b64encode(basic.encode()).decode()]
                found[text] = mask_url(text)
            else:
                forms.append(text)
            found.update((form, MASK) for form in forms if len(form) >= MIN_SEARCHED_LENGTH and form not in found)
    return sorted(((k, v) for k, v in found.items() if len(k) >= MIN_SEARCHED_LENGTH), key=lambda kv: -len(kv[0]))


def redact(text: str, values: list[tuple[str, str]], truncated: bool = False) -> str:
    """`text` with every occurrence of a value shown as its replacement (searched_values).
    `truncated`: the text was cut, so a secret's beginning left at its end is cut too."""
    if not values or not text:
        return text
    for value, shown in values:
        if value in text:
            text = text.replace(value, shown)
    if truncated:
        for value, _ in values:
            for size in range(len(value) - 1, MIN_SEARCHED_LENGTH - 1, -1):
                if text.endswith(value[:size]):
                    text = text[:-size]
                    break
    return text
