"""Jobs as code: a Texium installation's users, servers and jobs as one document, and a document
applied to an installation (a plan first, changes only when asked).

Everything goes through the HTTP API of a running server (`Client`), never the datastore, so the
server's validation, authorization and audit log apply, and every node sees the same thing.

The document (JSON or YAML), version `texium: 1`:

    texium: 1
    users:   [{name, email, role}]                        # never API keys
    servers: [{name, owner, hostname, port, status, connection_name, instance_url, username}]
    jobs:    [{name, owner, job_class_string, description, second, minute, hour, day_of_month,
               month, day_of_week, week, timezone, pub_args, pub_kwargs, is_enabled, is_paused,
               on_success, on_failure, on_finish, depends_on, parameters, ...}]

`owner` is the owning user's email: ids differ between installations, so nothing refers to one.
Users are matched by email, servers and jobs by (owner, name); two servers or two jobs of one
owner with the same name are refused (exit code 2), never guessed between. A section left out of
the document is not managed at all; a field left out of an entry is left as it is (a create gets
the server's default). Server passwords are never exported; secret job arguments and an
instance_url's password are exported as the server shows them, `***`, which an update sends back
as it is (the server keeps the stored value) and a create cannot restore.

Chains name jobs, not ids: `on_success: [nightly-export]` (a job of the same owner), or
`{owner: ops@example.com, name: nightly-export}` for another owner's; `depends_on: {jobs: [...],
within_seconds, require}` the same way. An import makes and changes the jobs first and sets their
chains after (so a chain may name a job the same import creates), before any delete; a name
that matches no job, or a cycle through the chains as they would be, is a problem of the plan,
found before anything is written.

The plan also says, per job change, the runs it adds or removes over the next 7 days, and
warns when a job's p95 run time exceeds its interval (texium.core.scheduling.horizon).
"""

from __future__ import annotations

import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import yaml

from texium.core.errors import ValidationError
from texium.core.records.legacy_notify import as_legacy
from texium.core.scheduling.cron import CRON_FIELDS
from texium.core.scheduling.horizon import HORIZON, Runs, RunsChange, compare_runs, p95, runs_between, shortest_gap
from texium.core.scheduling.windows import NO_BLACKOUTS, Blackouts, JobTimes
from texium.core.security.secret_args import MASK, has_masked_password, has_url_password, mask_url
from texium.core.timeutil import parse_iso
from texium.core.validation import request_schema, validate_body

VERSION = 1
KINDS = ("users", "servers", "jobs")
USER_FIELDS = ("name", "email", "role")
SERVER_FIELDS = ("name", "owner", "hostname", "port", "status", "connection_name", "instance_url", "username")
JOB_FIELDS = (
    "name",
    "owner",
    "job_class_string",
    "description",
    *CRON_FIELDS,
    "timezone",
    "pub_args",
    "pub_kwargs",
    "is_enabled",
    "is_paused",
    "timeout_seconds",
    "retries",
    "max_instances",
    "overlap_policy",
    "max_queued",
    "catchup_policy",
    "catchup_window_seconds",
    "jitter_seconds",
    "dst_policy",
    "retry_delay_seconds",
    "retry_backoff",
    "notify",
    "parameters",
    "on_success",
    "on_failure",
    "on_finish",
    "depends_on",
)
CHAIN_FIELDS = ("on_success", "on_failure", "on_finish")
LINK_FIELDS = (*CHAIN_FIELDS, "depends_on")  # name jobs: set in a second pass, by name
FIELDS = {"users": USER_FIELDS, "servers": SERVER_FIELDS, "jobs": JOB_FIELDS}
# Fields of a document entry that are not fields of the API's request bodies.
NOT_IN_BODY = ("owner", "is_paused")
SCHEMAS = {  # (create, update) request-body schemas of texium/openapi.yaml: the server's own checks
    "users": ("UserCreate", "UserUpdate"),
    "servers": ("ServerCreate", "ServerUpdate"),
    "jobs": ("JobCreate", "JobUpdate"),
}
PATHS = {"users": "/api/users/", "servers": "/api/servers/", "jobs": "/api/scheduler/jobs"}
CHANNELS_PATH = "/api/scheduler/channels"
CREATE_PATHS = {"users": "/api/users/", "servers": "/api/servers/create", "jobs": "/api/scheduler/jobs"}
SECRET_FIELDS = {"servers": ("instance_url",), "jobs": ("pub_args", "pub_kwargs")}
BUILTIN_PACKAGE = "texium.jobs."  # the server lists its built-in classes as jobs.<module>.<Class>
HEALTH_CHECK_CLASS = "jobs.server.ServerHealthCheckJob"  # pub_args[0] is a server id
PAGE = 1000  # the API's largest page
PLACEHOLDER_ID = "0" * 24  # stands for an owner's id when a create body is checked before it exists
# Fields whose change can move a job's runs (the plan then shows the runs it adds or removes).
TIMING_FIELDS = (*CRON_FIELDS, "timezone", "jitter_seconds", "dst_policy", "is_enabled", "is_paused")
TIME_FIELDS = ("next_run_time", "start_at", "end_at", "run_at", "paused_until")  # ISO text in the API's answers
DURATIONS_SAMPLE = 50  # the last successful runs whose duration gives a job's p95


class CliError(Exception):
    """Stops the command with a one-line message. code 2: a bad file or arguments; 1: the server."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(message)
        self.message = message
        self.code = code


class ApiError(CliError):
    """The server answered an error status; `detail` is its message."""

    def __init__(self, method: str, path: str, status: int, detail: str, hint: str = ""):
        super().__init__(f"{method} {path} answered {status}: {detail}{hint}", 1)
        self.status = status
        self.detail = detail


# ---- the HTTP client -----------------------------------------------------------------------


def read_key_file(path: str) -> str:
    """The API key in `path` (its first line), e.g. DATA_DIR/admin-api-key: a key given this way
    never shows in `ps` the way a --key argument does."""
    try:
        with open(os.path.expanduser(path), encoding="utf-8") as file:
            key = file.readline().strip()
    except (OSError, UnicodeError) as exc:
        raise CliError(f"cannot read the API key file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not key:
        raise CliError(f"the API key file {path} is empty")
    return key


def _origin(url: str) -> tuple[str, str, int | None]:
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    return scheme, (parts.hostname or "").lower(), parts.port or {"http": 80, "https": 443}.get(scheme)


class _SameOriginRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect of a GET to the same scheme, host and port only. urllib would resend the
    Authorization header wherever the answer points (the API key with it), and turn a redirected
    POST into a GET without its body."""

    def redirect_request(self, req, fp, code, msg, headers, newurl):
        method = req.get_method()
        if method in ("GET", "HEAD") and _origin(newurl) == _origin(req.full_url):
            return super().redirect_request(req, fp, code, msg, headers, newurl)
        fp.close()
        scheme, host, port = _origin(newurl)
        where = f"{scheme}://{f'[{host}]' if ':' in host else host}:{port}"
        path = urllib.parse.urlsplit(req.full_url).path
        raise CliError(
            f"{method} {path} was redirected (HTTP {code}) to {where}; texium follows no redirect to another "
            "scheme, host or port, nor of a change, so the API key is never sent elsewhere: give --url the "
            "address the server answers at",
            1,
        )


_OPENER = urllib.request.build_opener(_SameOriginRedirects)


class Client:
    """JSON requests to one Texium server with the standard library (urllib)."""

    def __init__(self, url: str, key: str | None = None, actor: str | None = None, timeout: float = 30.0):
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CliError(f"--url {url!r} is not an http(s) URL like http://127.0.0.1:8000")
        key = (key or "").strip() or None
        if key is not None and not all(33 <= ord(c) < 127 for c in key):
            raise CliError("the API key holds characters a key never has (spaces or line breaks?)")
        self.url = url.strip().rstrip("/")
        self.key = key
        self.actor = actor
        self.timeout = timeout

    def call(self, method: str, path: str, body: dict | None = None, query: dict | None = None) -> dict:
        target = self.url + path + (f"?{urllib.parse.urlencode(query)}" if query else "")
        headers = {"Accept": "application/json", "User-Agent": "texium-cli"}
        data = None
        if body is not None:
            data = json.dumps(body, ensure_ascii=False).encode()
            headers["Content-Type"] = "application/json"
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        if self.actor:
            headers["X-Texium-User"] = self.actor
        request = urllib.request.Request(target, data=data, headers=headers, method=method)
        try:
            with _OPENER.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            detail = _detail(exc)
            hint = ""
            if exc.code == 401 and not self.key:
                hint = " (give an API key with TEXIUM_API_KEY or --key-file)"
            raise ApiError(method, path, exc.code, detail, hint) from None
        except urllib.error.URLError as exc:
            raise CliError(f"cannot reach {self.url}: {exc.reason}", 1) from None
        except (OSError, http.client.HTTPException) as exc:  # a timeout, a reset, a broken answer
            raise CliError(f"cannot reach {self.url}: {exc or type(exc).__name__}", 1) from None
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            raise CliError(f"{method} {path}: the answer is not JSON; is {self.url} a Texium server?", 1) from None

    def list_all(self, path: str) -> list[dict]:
        """Every entry of a list route, page by page."""
        items: list[dict] = []
        while True:
            page = self.call("GET", path, query={"limit": PAGE, "offset": len(items)})
            data = page.get("data") or []
            items += data
            if not data or len(items) >= int(page.get("total") or 0):
                return items


def _detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read()
        detail = json.loads(body).get("detail")
        if isinstance(detail, str) and detail:
            return detail
    except Exception:
        pass
    return str(exc.reason or "error")


# ---- what the server holds -----------------------------------------------------------------


@dataclass
class State:
    """The users, servers and jobs a key can see, and the key's own user (None without keys)."""

    users: list[dict]
    servers: list[dict]
    jobs: list[dict]
    me: dict | None = None

    def __post_init__(self) -> None:
        self.email_of = {u["_id"]: u["email"].lower() for u in self.users}

    def owner(self, kind: str, doc: dict) -> str:
        email = self.email_of.get(doc.get("user_id"))
        if email is None:
            raise CliError(
                f"{kind[:-1]} {doc.get('name')!r} ({doc.get('_id')}): its owner {doc.get('user_id')} is not among "
                "the users this key can see",
                1,
            )
        return email

    def by_key(self, kind: str) -> dict[tuple, dict]:
        """users by email; servers and jobs by (owner email, name). Refuses duplicates (CliError 2)."""
        if kind == "users":
            return {u["email"].lower(): u for u in self.users}
        docs = self.servers if kind == "servers" else self.jobs
        found: dict[tuple, list[dict]] = {}
        for doc in docs:
            found.setdefault((self.owner(kind, doc), doc["name"]), []).append(doc)
        duplicates = {key: group for key, group in found.items() if len(group) > 1}
        if duplicates:
            said = "; ".join(
                f"{len(group)} {kind} named {name!r} owned by {owner} (ids {', '.join(d['_id'] for d in group)})"
                for (owner, name), group in duplicates.items()
            )
            raise CliError(
                f"the server has {said}: {kind} are matched by owner and name, so rename one of each first "
                "(nothing was exported or changed)"
            )
        return {key: group[0] for key, group in found.items()}


def fetch_state(client: Client, who: bool = False) -> State:
    """Everything the key can see. A `user` key may not list users: it sees itself only.
    `who`: also ask whose key this is (the import never deletes that user)."""
    me = None
    try:
        users = client.list_all(PATHS["users"])
    except ApiError as exc:
        if exc.status != 403:
            raise
        me = client.call("GET", "/api/auth/session").get("user")
        if not me:
            raise
        users = [me]
    if who and me is None:
        try:
            me = client.call("GET", "/api/auth/session").get("user")
        except ApiError as exc:
            if exc.status != 404:  # a server without sessions has no key users either
                raise
    jobs = client.list_all(PATHS["jobs"])
    try:
        channels = {c["_id"]: c for c in client.list_all(CHANNELS_PATH)}
    except ApiError as exc:
        if exc.status != 404:  # a server before channels
            raise
        channels = {}
    for job in jobs:  # a notify's e-mail and webhook channels as the notify fields they were made from
        if job.get("notify"):
            job["notify"] = as_legacy(job["notify"], channels)
    state = State(users, client.list_all(PATHS["servers"]), jobs, me)
    named = {job["_id"]: (state.email_of.get(job.get("user_id")), job.get("name")) for job in jobs}
    for job in jobs:  # chains by name, as a document writes them
        owner = state.email_of.get(job.get("user_id"))
        _map_links(job, lambda ref, owner=owner: _ref_of(named.get(ref, (None, ref)), owner))
    return state


def _map_links(job: dict, convert: Callable[[Any], Any]) -> None:
    """Each job a job's chain fields name, converted (ids to names, or back)."""
    for name in CHAIN_FIELDS:
        if isinstance(job.get(name), list):
            job[name] = [convert(ref) for ref in job[name]]
    fan_in = job.get("depends_on")
    if isinstance(fan_in, dict) and isinstance(fan_in.get("jobs"), list):
        job["depends_on"] = {**fan_in, "jobs": [convert(ref) for ref in fan_in["jobs"]]}


def _placeholder_links(body: dict) -> None:
    """Job names in chain fields as distinct placeholder ids, for the server's schema check."""
    placeholders = iter(range(1, 1 << 30))
    _map_links(body, lambda ref: f"{next(placeholders):024x}")


def _ref_of(key: tuple, owner: str | None) -> Any:
    """A chained job as a document names it: its name, or {owner, name} for another owner's."""
    job_owner, name = key
    return name if job_owner == owner else {"owner": job_owner, "name": name}


def _key_of_ref(ref: Any, owner: str) -> tuple:
    return (ref["owner"], ref["name"]) if isinstance(ref, dict) else (owner, ref)


# ---- export --------------------------------------------------------------------------------


def export_document(state: State) -> dict:
    """The document for what the server holds, in a stable order (diffs stay small)."""
    users = sorted(({f: u.get(f) for f in USER_FIELDS} for u in state.users), key=lambda u: u["email"])
    for user in users:
        user["email"] = user["email"].lower()
    sections: dict[str, Any] = {"texium": VERSION, "users": users}
    for kind in ("servers", "jobs"):
        entries = []
        for (owner, _), doc in state.by_key(kind).items():
            # A field a document predates is left out (the server's default), not written as null.
            entries.append({f: owner if f == "owner" else doc.get(f) for f in FIELDS[kind] if f in doc or f == "owner"})
        sections[kind] = sorted(entries, key=lambda e: (e["owner"], e["name"]))
    return sections


def dump_document(document: dict, fmt: str) -> str:
    if fmt == "yaml":
        return yaml.safe_dump(document, sort_keys=False, allow_unicode=True, default_flow_style=False, width=100)
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


# ---- reading a document --------------------------------------------------------------------


@dataclass
class Document:
    """A checked document: each kind's entries (normalized), or None when the section is absent."""

    name: str
    sections: dict[str, list[dict] | None]


def read_document(path: str) -> Document:
    """FILE (or '-' for standard input), JSON or YAML by its extension, else by its content."""
    name = "<stdin>" if path == "-" else path
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as exc:
        raise CliError(f"{name}: cannot read it: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise CliError(f"{name}: not UTF-8 text") from None
    extension = os.path.splitext(path)[1].lower()
    if extension == ".json" or (extension not in (".yaml", ".yml") and text.lstrip().startswith("{")):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise CliError(f"{name}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            where = f" at line {mark.line + 1} column {mark.column + 1}" if mark is not None else ""
            raise CliError(f"{name}: not valid YAML: {getattr(exc, 'problem', None) or exc}{where}") from None
    return check_document(data, name)


def check_document(data: Any, name: str = "the document") -> Document:
    """The document's shape and every entry checked as the server would check it (CliError 2)."""
    if not isinstance(data, dict) or "texium" not in data:
        raise CliError(f"{name}: not a Texium document (it must be an object starting with 'texium: {VERSION}')")
    version = data["texium"]
    if type(version) is not int or version != VERSION:
        raise CliError(f"{name}: document version {version!r} is not supported (this texium reads version {VERSION})")
    unknown = sorted(str(k) for k in data if k not in ("texium", *KINDS))
    if unknown:
        raise CliError(f"{name}: unknown section {', '.join(unknown)} (a document has {', '.join(KINDS)})")
    sections: dict[str, list[dict] | None] = {}
    for kind in KINDS:
        if kind not in data:
            sections[kind] = None
            continue
        if not isinstance(data[kind], list):
            raise CliError(f"{name}: {kind} must be a list ([] for none)")
        sections[kind] = [_check_entry(kind, i, entry, name) for i, entry in enumerate(data[kind])]
        keys = Counter(_key(kind, entry) for entry in sections[kind])
        twice = [key for key, n in keys.items() if n > 1]
        if twice:
            said = ", ".join(_label(kind, key) for key in twice)
            raise CliError(
                f"{name}: {said} appear{'s' if len(twice) == 1 else ''} more than once; {kind} are matched by "
                + ("email" if kind == "users" else "owner and name")
                + ", so each must be unique"
            )
    return Document(name, sections)


def _check_entry(kind: str, index: int, entry: Any, name: str) -> dict:
    where = f"{name}: {kind}[{index}]"
    if not isinstance(entry, dict):
        raise CliError(f"{where} must be an object")
    if isinstance(entry.get("name"), str):
        where += f" ({entry['name'].strip()!r})"
    if kind == "servers" and "password" in entry:
        raise CliError(
            f"{where}: password is not part of a document (passwords are never exported); set it through the "
            "API or the dashboard"
        )
    unknown = sorted(str(k) for k in entry if k not in FIELDS[kind])
    if unknown:
        raise CliError(f"{where}: unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
    required = ("email",) if kind == "users" else ("name", "owner")
    for key in required:
        if not isinstance(entry.get(key), str) or not entry[key].strip():
            raise CliError(f"{where}: {key} is required (a non-empty string)")
    if "is_paused" in entry and type(entry["is_paused"]) is not bool:
        raise CliError(f"{where}: is_paused must be true or false")
    body = {k: v for k, v in entry.items() if k not in NOT_IN_BODY}
    if kind == "jobs" and body.get("timezone", "") is None:
        del body["timezone"]  # null: the server's default, as for a create through the API
    links = {}
    if kind == "jobs":  # names where the API takes ids: checked with placeholder ids, kept as names
        links = {k: _check_refs(where, k, body[k]) for k in LINK_FIELDS if k in body}
        _placeholder_links(body)
    try:
        clean = validate_body(body, request_schema(SCHEMAS[kind][1]), partial=True)
    except ValidationError as exc:
        raise CliError(f"{where}: {exc.detail}") from None
    if kind != "users":
        clean["owner"] = entry["owner"].strip().lower()
    for name, refs in links.items():
        if name == "depends_on" and refs is not None:
            refs = {"within_seconds": 86400, "require": "success", **clean["depends_on"], "jobs": refs["jobs"]}
        clean[name] = refs
    if kind == "jobs":
        _map_links(clean, lambda ref: _ref_of(_key_of_ref(ref, clean["owner"]), clean["owner"]))
    if "is_paused" in entry:
        clean["is_paused"] = entry["is_paused"]
    if kind == "jobs":
        for cron_field in CRON_FIELDS:
            if cron_field in clean:  # the server keeps each as a string (an integer as its digits)
                clean[cron_field] = str(clean[cron_field]).strip()
        if clean.get("job_class_string", "").startswith(BUILTIN_PACKAGE):
            clean["job_class_string"] = "jobs." + clean["job_class_string"][len(BUILTIN_PACKAGE) :]
    return {f: clean[f] for f in FIELDS[kind] if f in clean}


def _check_refs(where: str, name: str, value: Any) -> Any:
    """A chain field of a document: job names, or {owner, name} objects (CliError 2 otherwise)."""
    refs = value.get("jobs") if name == "depends_on" and isinstance(value, dict) else value
    if name == "depends_on" and value is None:
        return None
    if not isinstance(refs, list):
        return value  # the schema check says what is wrong
    for ref in refs:
        if isinstance(ref, str) and ref.strip():
            continue
        if isinstance(ref, dict) and set(ref) == {"owner", "name"} and all(isinstance(v, str) for v in ref.values()):
            continue
        raise CliError(f"{where}: {name} names jobs by name (or {{owner, name}}), not {ref!r}")
    clean = [
        ref.strip() if isinstance(ref, str) else {"owner": ref["owner"].strip().lower(), "name": ref["name"]}
        for ref in refs
    ]
    return {**value, "jobs": clean} if name == "depends_on" else clean


def _key(kind: str, entry: dict) -> tuple | str:
    return entry["email"] if kind == "users" else (entry["owner"], entry["name"])


def _label(kind: str, key: tuple | str) -> str:
    if kind == "users":
        return f"user {key}"
    owner, name = key
    return f"{kind[:-1]} {name!r} of {owner}"


# ---- secret values -------------------------------------------------------------------------


def _leaves(value: Any, path: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _leaves(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _leaves(v, f"{path}[{i}]")
    else:
        yield path, value


def _masked(value: Any) -> bool:
    """A value as an export shows a secret: "***", or a URL whose password is ***."""
    return value == MASK or has_masked_password(value)


def _at(root: Any, path: str, base: str) -> Any:
    """The value of `root` (the value of field `base`) at a path made by _leaves; None if none."""
    rest = path[len(base) :]
    node = root
    for part in rest.replace("[", ".[").split(".")[1:] if rest else []:
        try:
            node = node[int(part[1:-1])] if part.startswith("[") else node[part]
        except (KeyError, IndexError, TypeError, ValueError):
            return None
    return node


def unrestorable(field_name: str, new: Any, stored: Any) -> list[str]:
    """Paths where `new` holds a masked secret (***) and `stored` (None for a create) has no
    secret to keep there: the server would refuse them."""
    return [
        path if value == MASK else f"the password in {path}"
        for path, value in _leaves(new, field_name)
        if _masked(value) and not _masked(_at(stored, path, field_name))
    ]


def as_shown(new: Any, stored: Any, path: str, uncompared: list[str]) -> Any:
    """`new` with a value masked wherever the server shows the stored one as ***, since that is
    all that can be compared; the masked paths go to `uncompared`."""
    if isinstance(new, dict) and isinstance(stored, dict):
        return {k: as_shown(v, stored.get(k), f"{path}.{k}", uncompared) for k, v in new.items()}
    if isinstance(new, list) and isinstance(stored, list):
        return [
            as_shown(v, stored[i] if i < len(stored) else None, f"{path}[{i}]", uncompared) for i, v in enumerate(new)
        ]
    if stored == MASK and new not in (None, "", MASK):
        uncompared.append(path)
        return MASK
    if has_masked_password(stored) and has_url_password(new) and not has_masked_password(new):
        uncompared.append(path)
        return mask_url(new)
    return new


# ---- the plan ------------------------------------------------------------------------------


@dataclass
class Change:
    kind: str  # users, servers, jobs
    action: str  # create, update, delete, keep
    label: str
    entry: dict | None = None  # the document's entry
    current: dict | None = None  # what the server holds
    fields: dict = field(default_factory=dict)  # update: field -> (old, new)
    reason: str = ""  # keep: why
    unrestorable: list[str] = field(default_factory=list)  # paths of *** that cannot be applied
    runs: RunsChange | None = None  # jobs: the runs it adds or removes over the next HORIZON


@dataclass
class Plan:
    changes: list[Change] = field(default_factory=list)  # in the order they are applied
    unchanged: Counter = field(default_factory=Counter)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the document cannot be applied
    unmanaged: list[str] = field(default_factory=list)  # kinds absent from the document

    def count(self, action: str) -> int:
        return sum(1 for c in self.changes if c.action == action)

    @property
    def work(self) -> list[Change]:
        return [c for c in self.changes if c.action in ("create", "update", "delete")]


def make_plan(document: Document, state: State, client: Client, delete: bool, now: datetime | None = None) -> Plan:
    """What applying `document` would do, checked with the server (job classes, schedules), with
    the runs each job change adds or removes after `now` (default: this machine's clock)."""
    plan = Plan()
    sections = document.sections
    current = {kind: state.by_key(kind) for kind in KINDS}
    file_users = {e["email"] for e in sections["users"] or []}
    known_users = file_users | set(current["users"])
    referenced = {e["owner"] for kind in ("servers", "jobs") for e in sections[kind] or []}
    classes: set[str] | None = None

    for kind in KINDS:
        entries = sections[kind]
        if entries is None:
            plan.unmanaged.append(kind)
            continue
        for entry in entries:
            key = _key(kind, entry)
            label = _label(kind, key)
            if kind != "users" and entry["owner"] not in known_users:
                plan.problems.append(
                    f"{label}: its owner {entry['owner']} is neither in the file's users nor on the server"
                )
                continue
            doc = current[kind].get(key)
            change = _compare(kind, label, entry, doc, plan)
            if change is None:
                plan.unchanged[kind] += 1
                continue
            if kind == "jobs":
                if "job_class_string" in entry and (doc is None or "job_class_string" in change.fields):
                    if classes is None:
                        listed = client.call("GET", "/api/scheduler/available-jobs").get("jobs") or []
                        classes = {j.get("class_string") for j in listed}
                    if entry["job_class_string"] not in classes:
                        plan.problems.append(
                            f"{label}: job_class_string {entry['job_class_string']!r} is not a job class of this server"
                        )
                if doc is None or any(f in change.fields for f in (*CRON_FIELDS, "timezone")):
                    problem = _check_schedule(client, entry, doc)
                    if problem:
                        plan.problems.append(f"{label}: {problem}")
            if change.action == "create":
                problem = _check_create(kind, entry)
                if problem:
                    plan.problems.append(f"{label}: {problem}")
            if kind == "jobs":
                warning = _check_health_check_target(entry, doc, state)
                if warning:
                    plan.warnings.append(f"{label}: {warning}")
            plan.changes.append(change)

    deletes: list[Change] = []
    for kind in ("jobs", "servers", "users"):  # what depends on a user goes before the user
        if sections[kind] is None:
            continue
        listed = {_key(kind, e) for e in sections[kind]}
        for key, doc in current[kind].items():
            if key in listed:
                continue
            label = _label(kind, key)
            reason = _kept_because(kind, key, doc, state, sections, referenced, deletes, delete)
            if reason:
                deletes.append(Change(kind, "keep", label, current=doc, reason=reason))
            else:
                deletes.append(Change(kind, "delete", label, current=doc))
    plan.changes += deletes
    if sections["jobs"] is not None:
        plan.problems += _check_chains(sections["jobs"], current["jobs"])
        plan_runs(plan, sections["jobs"], current["jobs"], client, now or datetime.now(UTC))
    return plan


def _check_chains(entries: list[dict], current: dict[tuple, dict]) -> list[str]:
    """Chains naming no job, and cycles, through the jobs as the document would leave them."""
    graph: dict[tuple, set[tuple]] = {}
    problems = []
    jobs = {**current, **{_key("jobs", entry): {**current.get(_key("jobs", entry), {}), **entry} for entry in entries}}
    for key, job in jobs.items():
        owner = key[0]
        for name in LINK_FIELDS:
            value = job.get(name)
            refs = (value or {}).get("jobs") or [] if name == "depends_on" else value or []
            for ref in refs:
                target = _key_of_ref(ref, owner)
                if target not in jobs:
                    problems.append(
                        f"{_label('jobs', key)}: {name} names {_label('jobs', target)}, which is neither in the "
                        "file nor on the server"
                    )
                    continue
                edge = (target, key) if name == "depends_on" else (key, target)
                graph.setdefault(edge[0], set()).add(edge[1])
    return problems + [f"a cycle through the chains: {cycle}" for cycle in _cycles(graph)]


def _cycles(graph: dict[tuple, set[tuple]]) -> list[str]:
    """Each cycle of `graph` found by a depth-first walk, as 'name -> name -> name'."""
    found, state = [], {}  # node -> 1 on the walk's path, 2 done
    for start in sorted(graph):
        if state.get(start):
            continue
        path, stack = [], [(start, iter(sorted(graph.get(start, ()))))]
        state[start] = 1
        path.append(start)
        while stack:
            node, following = stack[-1]
            step = next(following, None)
            if step is None:
                stack.pop()
                path.pop()
                state[node] = 2
            elif state.get(step) == 1:
                loop = path[path.index(step) :] + [step]
                found.append(" -> ".join(repr(name) for _, name in loop))
            elif not state.get(step):
                state[step] = 1
                path.append(step)
                stack.append((step, iter(sorted(graph.get(step, ())))))
    return found


def _kept_because(kind, key, doc, state, sections, referenced, deletes, delete) -> str:
    """Why a thing on the server that the document leaves out is not deleted; "" to delete it."""
    if not delete:
        return "would be kept (not in the file; --delete deletes it)"
    if kind != "users":
        return ""
    if state.me and state.me.get("_id") == doc["_id"]:
        return "kept: the user of this API key"
    if key in referenced:
        return "kept: not in the file's users, but owns servers or jobs in it"
    going = {c.current["_id"] for c in deletes if c.action == "delete"}
    kept = [
        what
        for what, docs in (("servers", state.servers), ("jobs", state.jobs))
        for d in docs
        if d.get("user_id") == doc["_id"] and d["_id"] not in going
    ]
    if kept:
        counts = Counter(kept)
        owned = " and ".join(f"{n} {what if n > 1 else what[:-1]}" for what, n in counts.items())
        unmanaged = [what for what in counts if sections[what] is None]
        why = f" ({' and '.join(unmanaged)} not in the file)" if unmanaged else ""
        return f"kept: still owns {owned} that stay{why}"
    return ""


def _compare(kind: str, label: str, entry: dict, doc: dict | None, plan: Plan) -> Change | None:
    """The change that makes the server's `doc` what `entry` says; None when nothing differs."""
    secret_fields = SECRET_FIELDS.get(kind, ())
    if doc is None:
        change = Change(kind, "create", label, entry=entry)
        for name in secret_fields:
            if name in entry:
                change.unrestorable += unrestorable(name, entry[name], None)
        if change.unrestorable:
            plan.warnings.append(
                f"{label}: {', '.join(change.unrestorable)} {'is' if len(change.unrestorable) == 1 else 'are'} "
                f"{MASK} in the file (a secret an export never holds) and cannot be restored on a create: "
                "put the real value in the file, or create it by hand and import again"
            )
        return change
    changed: dict[str, tuple] = {}
    uncompared: list[str] = []
    for name in FIELDS[kind]:
        if name in ("owner", "email") or name not in entry:
            continue
        old, new = doc.get(name), entry[name]
        shown = as_shown(new, old, name, uncompared) if name in secret_fields else new
        if shown != old:
            changed[name] = (old, new)
    if uncompared:
        plan.notes.append(
            f"{label}: the server shows {', '.join(uncompared)} as {MASK}, so the value in the file is not "
            "compared (it is sent only with another change of that field)"
        )
    if not changed:
        return None
    change = Change(kind, "update", label, entry=entry, current=doc, fields=changed)
    for name in secret_fields:
        if name in changed:
            change.unrestorable += unrestorable(name, entry[name], doc.get(name))
    if change.unrestorable:
        plan.warnings.append(
            f"{label}: {', '.join(change.unrestorable)} {'is' if len(change.unrestorable) == 1 else 'are'} {MASK} "
            "in the file but the server holds no secret there to keep: put the real value in the file"
        )
    return change


def _check_create(kind: str, entry: dict) -> str:
    """What the server's create schema says against the entry (a missing required field), or ""."""
    body = {k: v for k, v in entry.items() if k not in NOT_IN_BODY}
    if kind != "users":
        body["user_id"] = PLACEHOLDER_ID
    if kind == "jobs":
        _placeholder_links(body)
    try:
        validate_body(body, request_schema(SCHEMAS[kind][0]))
    except ValidationError as exc:
        return exc.detail
    return ""


def _check_health_check_target(entry: dict, doc: dict | None, state: State) -> str:
    """A health check's pub_args[0] is a server id, which another installation does not have."""
    if entry.get("job_class_string", (doc or {}).get("job_class_string")) != HEALTH_CHECK_CLASS:
        return ""
    args = entry.get("pub_args", (doc or {}).get("pub_args")) or []
    if args and args[0] not in {s["_id"] for s in state.servers}:
        return (
            f"pub_args[0] is {args[0]!r}, not the id of a server here (ids differ between installations): "
            "point the job at the right server after the import"
        )
    return ""


def _check_schedule(client: Client, entry: dict, doc: dict | None) -> str:
    """The server's objection to the job's schedule (the cron preview), or ""."""
    query = {f: (doc or {}).get(f) for f in (*CRON_FIELDS, "timezone") if (doc or {}).get(f) is not None}
    query.update({f: entry[f] for f in (*CRON_FIELDS, "timezone") if f in entry})
    query["count"] = 1
    try:
        client.call("GET", "/api/scheduler/cron/preview", query=query)
    except ApiError as exc:
        if exc.status == 400:
            return exc.detail
        raise
    return ""


# ---- the runs a plan adds or removes -------------------------------------------------------


class RunsReader:
    """A job's runs over the next HORIZON as the server's planner makes them, for a job as
    stored (an API answer) or as the document would make it. Reads each calendar once."""

    def __init__(self, client: Client, now: datetime):
        self.client, self.now = client, now
        self._calendars: dict[str, dict | None] = {}
        self._timezone: str | None = None

    def stored(self, answer: dict) -> dict:
        """The job document behind an API answer: its times as datetimes, as the planner reads them."""
        doc = dict(answer)
        for name in TIME_FIELDS:
            if isinstance(doc.get(name), str):
                doc[name] = parse_iso(doc[name])
        return doc

    def imported(self, entry: dict, stored: dict | None) -> dict:
        """The job document the entry makes: the stored one with the entry's fields (the server
        plans a changed job afresh), or a new job (its id unknown yet: `H` and jitter then take
        PLACEHOLDER_ID's values; the number of runs is the same)."""
        fields = {k: v for k, v in entry.items() if k in JOB_FIELDS and k != "owner"}
        if stored is not None:
            doc = {**stored, **fields}
            if any(stored.get(name) != doc.get(name) for name in TIMING_FIELDS):
                doc.pop("next_run_time", None)
            return doc
        return {"_id": PLACEHOLDER_ID, "timezone": fields.get("timezone") or self.server_timezone(), **fields}

    def server_timezone(self) -> str:
        """The time zone the server gives a job that names none (its cron preview says it)."""
        if self._timezone is None:
            self._timezone = self.client.call("GET", "/api/scheduler/cron/preview", query={"count": 1})["timezone"]
        return self._timezone

    def runs(self, doc: dict) -> Runs:
        try:
            times = JobTimes(doc, self._blackouts(doc))
        except (ValidationError, ValueError, TypeError):  # a schedule the server refuses: no runs
            times = None
        return runs_between(doc, times, self.now, self.now + HORIZON)

    def _blackouts(self, doc: dict) -> Blackouts:
        calendars = [self._calendar(c) for c in doc.get("exclude_calendars") or [] if isinstance(c, str)]
        calendars = [c for c in calendars if c is not None]
        return Blackouts(calendars) if calendars else NO_BLACKOUTS

    def _calendar(self, calendar_id: str) -> dict | None:
        if calendar_id not in self._calendars:
            path = f"/api/scheduler/calendars/{urllib.parse.quote(calendar_id, safe='')}"
            try:
                self._calendars[calendar_id] = self.client.call("GET", path).get("data")
            except ApiError as exc:
                if exc.status not in (403, 404):  # a calendar gone (or not this key's) excludes nothing
                    raise
                self._calendars[calendar_id] = None
        return self._calendars[calendar_id]

    def durations(self, job_id: str) -> list[float]:
        """Seconds taken by the job's last DURATIONS_SAMPLE successful runs (one indexed query)."""
        query = {"job_id": job_id, "status": "completed", "limit": DURATIONS_SAMPLE}
        found = self.client.call("GET", "/api/scheduler/executions", query=query).get("data") or []
        return [e["duration_ms"] / 1000 for e in found if isinstance(e.get("duration_ms"), (int, float))]


def plan_runs(plan: Plan, entries: list[dict], current: dict[tuple, dict], client: Client, now: datetime) -> None:
    """Per job change of the plan, the runs it adds or removes over the next HORIZON (its stored
    definition against the imported one, both through the planner); and a warning for each job
    of the file whose p95 run time exceeds its interval (the shortest gap between its runs)."""
    reader = RunsReader(client, now)
    changes = {c.label: c for c in plan.changes if c.kind == "jobs"}
    for entry in entries:
        key = _key("jobs", entry)
        label, answer = _label("jobs", key), current.get(key)
        change = changes.get(label)
        if answer is None:
            if change is not None and change.action == "create":
                new = reader.runs(reader.imported(entry, None))
                change.runs = RunsChange(added=new.times, until=new.end)
            continue
        stored = reader.stored(answer)
        imported = reader.imported(entry, stored)
        new = None
        if change is not None and any(name in change.fields for name in TIMING_FIELDS):
            new = reader.runs(imported)
            change.runs = compare_runs(reader.runs(stored), new)
        durations = reader.durations(answer["_id"])
        if durations:
            gap = shortest_gap((new or reader.runs(imported)).times)
            slow = p95(durations)
            if gap is not None and slow > gap.total_seconds():
                plan.warnings.append(
                    f"{label}'s p95 run time {_seconds(slow)} s (its last {len(durations)} successful runs) exceeds "
                    f"its interval {_seconds(gap.total_seconds())} s (the shortest gap between its runs in the next "
                    f"{HORIZON.days} days): its runs will overlap or wait for each other"
                )
    for change in plan.changes:
        if change.kind == "jobs" and change.action == "delete":
            old = reader.runs(reader.stored(change.current or {}))
            change.runs = RunsChange(removed=old.times, until=old.end)


def _seconds(value: float) -> str:
    return f"{round(value, 1):g}"


def describe_runs(runs: RunsChange) -> str:
    """E.g. "+12 runs, -3 runs in the next 7 days (first added ...; first removed ...)"."""
    counts = [
        f"{sign}{len(times)} run{'s' if len(times) != 1 else ''}"
        for sign, times in (("+", runs.added), ("-", runs.removed))
        if times
    ]
    when = f"up to {runs.until.isoformat()}" if runs.until else f"in the next {HORIZON.days} days"
    if not counts:
        return f"no run added or removed {when}"
    firsts = [
        f"first {what} {times[0].isoformat()}"
        for what, times in (("added", runs.added), ("removed", runs.removed))
        if times
    ]
    return f"{', '.join(counts)} {when} ({'; '.join(firsts)})"


# ---- showing the plan ----------------------------------------------------------------------


def _show(value: Any, limit: int = 120) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def describe(change: Change) -> str:
    said = _describe(change)
    return said if change.runs is None else f"{said}\n      {describe_runs(change.runs)}"


def _describe(change: Change) -> str:
    if change.action == "create":
        entry = change.entry or {}
        if change.kind == "users":
            details = [f"name {_show(entry.get('name'))}", f"role {entry.get('role', 'user')}"]
        elif change.kind == "servers":
            details = [f"{entry.get('hostname')}" + (f":{entry['port']}" if entry.get("port") else "")]
        else:
            cron = " ".join(str(entry.get(f, "0" if f == "second" else "*")) for f in CRON_FIELDS[:6])
            details = [entry.get("job_class_string", "?"), f'cron "{cron}"']
            if entry.get("week", "*") != "*":
                details.append(f"week {entry['week']}")
            details.append(entry.get("timezone") or "the server's time zone")
            if entry.get("is_paused"):
                details.append("paused")
            if entry.get("is_enabled") is False:
                details.append("disabled")
        return f"  + create {change.label}: {', '.join(details)}"
    if change.action == "update":
        said = "; ".join(f"{k} {_show(old)} -> {_show(new)}" for k, (old, new) in change.fields.items())
        return f"  ~ update {change.label}: {said}"
    if change.action == "delete":
        return f"  - delete {change.label}"
    return f"  = {change.label}: {change.reason}"


def print_plan(plan: Plan, out: Callable[[str], None]) -> None:
    for change in plan.changes:
        out(describe(change))
    for kind in plan.unmanaged:
        out(f"  (no {kind} section in the file: {kind} are left as they are)")
    for text in plan.warnings:
        out(f"warning: {text}")
    for text in plan.notes:
        out(f"note: {text}")
    for text in plan.problems:
        out(f"problem: {text}")
    out(summary(plan))


def summary(plan: Plan) -> str:
    unchanged = sum(plan.unchanged.values())
    parts = [f"{plan.count(a)} to {a}" for a in ("create", "update", "delete") if plan.count(a)]
    kept = plan.count("keep")
    tail = f"{unchanged} unchanged" + (f", {kept} kept" if kept else "")
    if not parts:
        return f"Nothing to do: {tail}."
    return f"Plan: {', '.join(parts)}; {tail}."


# ---- applying ------------------------------------------------------------------------------


def apply_plan(
    plan: Plan, state: State, client: Client, out: Callable[[str], None], skip: bool = False
) -> tuple[int, int]:
    """Make the changes in the plan's order; returns how many were made and how many skipped
    (`skip`: those that need a secret the file only has as ***). An API error stops it (CliError
    saying how many changes were made before it)."""
    ids = {u["email"].lower(): u["_id"] for u in state.users}
    job_ids = {key: job["_id"] for key, job in state.by_key("jobs").items()}
    work = plan.work
    done = skipped = 0
    for change in _in_passes(work, client, job_ids):
        if change.unrestorable and skip:
            out(f"  skipped {change.label}: {', '.join(change.unrestorable)} cannot be restored from {MASK}")
            skipped += 1
            continue
        try:
            _apply(change, client, ids, job_ids)
        except ApiError as exc:
            raise CliError(
                f"{change.action} {change.label}: {exc.message}; {done} of {len(work)} changes were made before it "
                "(plan again to see what is left)",
                1,
            ) from None
        if change.action == "chain":  # the second half of a create or update, counted with it
            out(f"  set the chains of {change.label}")
            continue
        done += 1
        out(f"  {change.action}d {change.label}")
    return done, skipped


def _in_passes(work: list[Change], client: Client, job_ids: dict[tuple, str]) -> Iterator[Change]:
    """The changes in order, then (before any delete) the chains of the jobs created or changed,
    by id now that every job named exists."""
    deletes = [change for change in work if change.action == "delete"]
    yield from (change for change in work if change.action != "delete")
    for change in work:
        entry = change.entry or {}
        if change.kind != "jobs" or change.action not in ("create", "update"):
            continue
        if change.action == "create":
            wanted = [k for k in LINK_FIELDS if entry.get(k)]  # empty ones are the create's defaults
        else:
            wanted = [k for k in LINK_FIELDS if k in change.fields]
        if wanted:
            links = {"owner": entry["owner"], "name": entry["name"], **{k: entry[k] for k in wanted}}
            yield Change("jobs", "chain", change.label, entry=links, current=change.current)
    yield from deletes


def _apply(change: Change, client: Client, ids: dict[str, str], job_ids: dict[tuple, str]) -> None:
    kind, entry, doc = change.kind, change.entry or {}, change.current or {}
    if change.action == "delete":
        client.call("DELETE", f"{PATHS[kind].rstrip('/')}/{doc['_id']}")
        return
    if change.action == "chain":
        owner = entry["owner"]
        links = {k: v for k, v in entry.items() if k in LINK_FIELDS}
        _map_links(links, lambda ref: job_ids[_key_of_ref(ref, owner)])
        client.call("PUT", f"{PATHS['jobs']}/{job_ids[(owner, entry['name'])]}", body=links)
        return
    if change.action == "create":
        body = {k: v for k, v in entry.items() if k not in NOT_IN_BODY and k not in LINK_FIELDS}
        if kind != "users":
            body = {"user_id": ids[entry["owner"]], **body}
        paused = kind == "jobs" and entry.get("is_paused") is True
        if paused:  # never fires between its create and its pause
            body["is_enabled"] = False
        answer = client.call("POST", CREATE_PATHS[kind], body=body)
        new_id = answer.get({"users": "user_id", "servers": "server_id", "jobs": "job_id"}[kind])
        if kind == "users":
            ids[entry["email"]] = new_id
        if kind == "jobs":
            job_ids[(entry["owner"], entry["name"])] = new_id
        if paused:
            client.call("PATCH", f"/api/scheduler/jobs/{new_id}/pause")
            if entry.get("is_enabled", True):
                client.call("PUT", f"/api/scheduler/jobs/{new_id}", body={"is_enabled": True})
        return
    path = f"{PATHS[kind].rstrip('/')}/{doc['_id']}"
    body = {k: new for k, (_, new) in change.fields.items() if k not in NOT_IN_BODY and k not in LINK_FIELDS}
    pause = change.fields.get("is_paused", (None, None))[1]
    if pause is True:  # pause first: a new schedule never fires before it
        client.call("PATCH", f"{path}/pause")
    if body:
        client.call("PUT", path, body=body)
    if pause is False:
        client.call("PATCH", f"{path}/resume")
