"""Every request rule written in texium/openapi.yaml is enforced, and the code keeps no copy of it.

Request bodies are checked against their schema in the description (texium/core/validation.py),
so the rules are written once. This file proves the description and the server agree:

1. Unit checks of validate_body: today's messages, trimming, defaults, formats, and that every
   request-body schema is compiled and used by a service.
2. Against a live server on each provider, cases generated from the description: for every
   request-body schema, every property and every constraint on it (type, minLength, maxLength,
   enum, pattern, minimum, maximum, format), and for `required`, `additionalProperties` and
   `minProperties`, a request that breaks just that one constraint must answer 400 with a
   `detail` naming the field. Query and path parameters with constraints get the same. A
   constraint keyword with no case generator here fails test_every_constraint_has_a_case, so
   a new kind of rule cannot go untested.
3. The defaults the description promises are what a create stores.
"""

from __future__ import annotations

import copy
import re
import time
from typing import Any

import jsonschema
import pytest

from texium.core import contract, scheduler_manager
from texium.core.errors import ValidationError
from texium.core.records import apikeys, calendars, channels, monitors, servers, triggers, users
from texium.core.scheduling import cron
from texium.core.validation import FORMATS, request_schema, validate_body

ANNOTATIONS = {"description", "default", "examples", "example", "title", "readOnly", "writeOnly", "deprecated"}
# A value each format refuses though the schema's other keywords take it; a new format needs one here.
INVALID_FORMAT_EXAMPLES = {"email": "not-an-email", "http-url": "http://example.com:99999/", "date-time": "yesterday"}
# a value of each JSON type for the type cases (JSON Schema counts 80.0 as an integer, so 1.5 stands for number)
TYPE_SAMPLES = {"string": "text", "integer": 7, "number": 1.5, "boolean": True, "array": [], "object": {}, "null": None}
SOME_ID = "507f1f77bcf86cd799439011"


# --------------------------------------------------------------------------- the description
def operation_ids() -> dict[str, tuple[str, str, dict]]:
    return {op["operationId"]: (path, method, op) for path, method, op in contract.operations()}


def parameters(path: str, op: dict) -> list[dict]:
    """The operation's parameters, path-level ones included, with `$ref`s resolved."""
    described = contract.description()
    params = []
    for param in described["paths"][path].get("parameters", []) + op.get("parameters", []):
        if "$ref" in param:
            param = described["components"]["parameters"][param["$ref"].rsplit("/", 1)[1]]
        params.append({**param, "schema": contract.resolve(param.get("schema", {}))})
    return params


def takes_json(op: dict) -> bool:
    """Whether the operation's request body is JSON (an iCalendar import is not)."""
    return "application/json" in op.get("requestBody", {}).get("content", {})


def example_body(op: dict) -> dict:
    return copy.deepcopy(op["requestBody"]["content"]["application/json"].get("example", {}))


def violated(schema: dict, value: Any) -> set[str]:
    """The keywords of `schema` that `value` breaks (formats are not checked here)."""
    return {error.validator for error in jsonschema.Draft202012Validator(schema).iter_errors(value)}


def padded(prop: dict, field_examples: list, limit: int) -> str:
    """A string just over maxLength `limit` that breaks nothing else, grown from a valid value if need be."""
    candidates = [*field_examples, *prop.get("examples", []), prop.get("default"), "x"]
    for start in (c for c in candidates if isinstance(c, str) and c):
        value = start + "x" * (limit + 1 - len(start))
        if violated(prop, value) == {"maxLength"}:
            return value
    return value


def breakers(prop: dict, keyword: str, examples: list, in_query: bool = False) -> list[tuple[str, Any]] | None:
    """(label, value) pairs that break `keyword` of `prop` and, where possible, nothing else.

    None: no generator for this keyword (test_every_constraint_has_a_case reports it).
    """
    limit = prop.get(keyword)
    if keyword == "type":
        if in_query:  # a query value is text: only a type that text cannot be can be broken
            return [("type-text", "abc")] if set(_types(prop)) <= {"integer", "number", "boolean"} else []
        return [(f"type-{name}", value) for name, value in TYPE_SAMPLES.items() if "type" in violated(prop, value)]
    if keyword == "minLength":
        if in_query:
            return []  # a query parameter given empty counts as not given (info.description)
        return [("minLength", "x" * (limit - 1)), ("minLength-blank", " " * (limit + 1))]  # trimmed first
    if keyword == "maxLength":
        return [("maxLength", padded(prop, examples, limit))]
    if keyword == "enum":
        return [("enum", "zzz-not-listed")]
    if keyword == "minimum":
        return [("minimum", limit - 1)]
    if keyword == "maximum":
        return [("maximum", limit + 1)]
    if keyword == "pattern":
        return [("pattern", next(v for v in ("x", "not matching", "ftp://x") if not re.search(limit, v)))]
    if keyword in ("additionalProperties", "required", "properties"):
        return _object_breakers(prop, keyword, examples)
    if keyword in ("maxItems", "uniqueItems", "items"):
        return _array_breakers(prop, keyword, examples)
    if keyword == "format":
        return [(f"format-{limit}", INVALID_FORMAT_EXAMPLES[limit])] if limit in INVALID_FORMAT_EXAMPLES else None
    return None


def _array_breakers(prop: dict, keyword: str, examples: list) -> list[tuple[str, Any]] | None:
    """A list field (a job's `exclude_calendars`, a calendar's `periods`): grown from a valid
    item (an example's, or distinct ids), broken in just this keyword."""
    items = [e[0] for e in examples if isinstance(e, list) and e and not violated(prop, e)]
    makers = [lambda n: [f"{i:024x}" for i in range(n)], *[lambda n, item=item: [item] * n for item in items]]
    tries = {"maxItems": lambda make: make(prop.get("maxItems", 0) + 1), "uniqueItems": lambda make: make(1) * 2}
    tries["items"] = lambda make: [1]
    for make in makers:
        value = tries[keyword](make)
        broken = {error.schema_path[0] for error in jsonschema.Draft202012Validator(prop).iter_errors(value)}
        if broken == {keyword}:
            return [(keyword, value)]
    return None


def _object_breakers(prop: dict, keyword: str, examples: list) -> list[tuple[str, Any]] | None:
    """An object field (e.g. a job's `notify`): grown from a valid example, broken inside."""
    base = next((e for e in examples if isinstance(e, dict) and not violated(prop, e)), None)
    if base is None:
        return None
    if keyword == "additionalProperties":
        return [("additionalProperties", {**base, "zzz_unknown": 1})]
    if keyword == "required":
        return [(f"required-{name}", {k: v for k, v in base.items() if k != name}) for name in prop["required"]]
    cases = []
    for name, inner in prop["properties"].items():
        wrong = next((v for v in TYPE_SAMPLES.values() if "type" in violated(inner, v)), None)
        cases.append((f"properties-{name}", {**base, name: wrong}))
    return cases


def _types(prop: dict) -> list[str]:
    types = prop.get("type", [])
    return [types] if isinstance(types, str) else list(types)


# every value the request-body examples give a field, as valid starting points
EXAMPLE_VALUES: dict[str, list] = {}
for _, _, _op in contract.operations():
    if takes_json(_op):
        for _field, _value in example_body(_op).items():
            EXAMPLE_VALUES.setdefault(_field, []).append(_value)


def build_cases():
    """(id, operation id, where, field, label, value) for every constraint; and the ones no generator can break."""
    cases, missing = [], []
    for op_id, (path, _, op) in operation_ids().items():
        name = contract.request_body_schema_name(op)
        if name:
            schema = contract.schema(name)
            example = example_body(op)
            for field, prop in schema["properties"].items():
                for keyword in prop:
                    if keyword in ANNOTATIONS:
                        continue
                    made = breakers(
                        prop, keyword, [example.get(field), *EXAMPLE_VALUES.get(field, []), *prop.get("examples", [])]
                    )
                    if made is None:
                        missing.append(f"{name}.{field}: {keyword}")
                        continue
                    for label, value in made:
                        cases.append((f"{op_id}-{field}-{label}", op_id, "body", field, label, value))
            for field in schema.get("required", []):
                cases.append((f"{op_id}-{field}-required", op_id, "body", field, "required", None))
            if schema.get("additionalProperties") is False:
                cases.append((f"{op_id}-unknown", op_id, "body", "unexpected_field", "additionalProperties", 1))
            if schema.get("minProperties"):
                cases.append((f"{op_id}-empty", op_id, "body", None, "minProperties", {}))
            for keyword in schema:
                if keyword not in ANNOTATIONS | {
                    "type",
                    "properties",
                    "required",
                    "additionalProperties",
                    "minProperties",
                }:
                    missing.append(f"{name}: {keyword}")
        for param in parameters(path, op):
            for keyword in param["schema"]:
                if keyword in ANNOTATIONS:
                    continue
                made = breakers(param["schema"], keyword, [], in_query=True)
                if made is None or (made and param["in"] not in ("query", "path")):
                    missing.append(f"{op_id} {param['in']} parameter {param['name']}: {keyword}")
                    continue
                for label, value in made:
                    case_id = f"{op_id}-{param['in']}-{param['name']}-{label}"
                    cases.append((case_id, op_id, param["in"], param["name"], label, value))
    return cases, missing


CASES, MISSING = build_cases()


def test_every_constraint_has_a_case():
    assert MISSING == [], "constraints this file cannot break yet: add a generator in breakers()"
    assert len(CASES) > 100


def test_cases_break_just_their_constraint():
    """So a 400 below is owed to the constraint the case is about."""
    ops = operation_ids()
    for case_id, op_id, where, field, label, value in CASES:
        keyword = label.split("-")[0]
        if where != "body" or keyword in ("required", "additionalProperties", "minProperties"):
            continue
        prop = contract.schema(contract.request_body_schema_name(ops[op_id][2]))["properties"][field]
        broken = violated(prop, value)
        if label == "minLength-blank":
            broken = violated(prop, value.strip())  # strings are trimmed before they are checked
        if keyword == "format":
            assert broken == set(), case_id
        elif keyword == "type":
            assert "type" in broken and broken <= {"type", "enum"}, (case_id, broken)
        elif keyword in ("properties", "items"):  # a member of an object or list field has the wrong type
            assert "type" in broken and broken <= {"type", "enum"}, (case_id, broken)  # (an enum member's too)
        else:
            assert broken == {keyword}, (case_id, broken)


# --------------------------------------------------------------------------- 1. unit checks
def test_every_request_body_schema_is_compiled_and_used_by_a_service():
    used = {
        users.USER_CREATE,
        users.USER_UPDATE,
        servers.SERVER_CREATE,
        servers.SERVER_UPDATE,
        scheduler_manager.JOB_CREATE,
        scheduler_manager.JOB_UPDATE,
        scheduler_manager.PAUSE,
        scheduler_manager.BACKFILL,
        scheduler_manager.RUN_NOW_BODY,
        apikeys.KEY_CREATE,
        apikeys.SESSION_CREATE,
        calendars.CALENDAR_CREATE,
        calendars.CALENDAR_UPDATE,
        channels.CHANNEL_CREATE,
        channels.CHANNEL_UPDATE,
        monitors.MONITOR_CREATE,
        monitors.MONITOR_UPDATE,
        triggers.TRIGGER_CREATE,
        triggers.TRIGGER_USE,
    }
    assert {schema.name for schema in used} == set(contract.request_body_schemas())
    with pytest.raises(KeyError, match="not the request body"):
        request_schema("User")  # a response schema


def test_formats_in_request_bodies_have_a_check():
    formats = {
        prop["format"]
        for schema in contract.request_body_schemas().values()
        for prop in schema["properties"].values()
        if "format" in prop
    }
    assert formats <= set(FORMATS) and formats <= set(INVALID_FORMAT_EXAMPLES)


def test_cron_fields_agree_with_the_cron_module():
    job = contract.schema("JobCreate")["properties"]
    assert contract.schema("CronField")["maxLength"] == cron.MAX_FIELD_LENGTH
    assert {name: job[name]["default"] for name in cron.CRON_FIELDS} == cron.DEFAULTS


def check(body, name, partial=False):
    try:
        return validate_body(body, request_schema(name), partial)
    except ValidationError as exc:
        return exc.detail


USER = {"name": "Ann", "email": "ann@example.com"}
SERVER = {"user_id": SOME_ID, "name": "s", "hostname": "h"}


@pytest.mark.parametrize(
    "name, body, partial, expected",
    [
        ("UserCreate", {"email": "a@example.com"}, False, "Missing required field: name"),
        ("UserCreate", {}, False, "Missing required field: name"),
        ("UserCreate", {**USER, "colour": "red"}, False, "Unknown field: colour"),
        ("UserCreate", {"b": 1, "a": 2}, False, "Unknown fields: a, b"),
        ("UserCreate", {**USER, "name": "  "}, False, "Invalid field name: must not be empty"),
        ("UserCreate", {**USER, "name": 5}, False, "Invalid field name: must be a string"),
        ("UserCreate", {**USER, "name": "x" * 201}, False, "Invalid field name: at most 200 characters"),
        ("UserCreate", {**USER, "email": " x@ "}, False, "Invalid field email: 'x@' is not a valid email address"),
        ("UserCreate", {**USER, "role": "root"}, False, "Invalid field role: must be one of admin, user"),
        ("UserCreate", {**USER, "name": None}, False, "Missing required field: name"),
        ("UserUpdate", {}, True, "No fields to update"),
        ("UserUpdate", {"role": None}, True, "Invalid field role: must not be null"),
        ("ServerCreate", {**SERVER, "port": 0}, False, "Invalid field port: must be from 1 to 65535"),
        ("ServerCreate", {**SERVER, "port": "80"}, False, "Invalid field port: must be an integer"),
        ("ServerCreate", {**SERVER, "port": True}, False, "Invalid field port: must be an integer"),
        ("ServerCreate", {**SERVER, "port": 80.0}, False, "Invalid field port: must be an integer"),
        ("ServerCreate", {**SERVER, "user_id": "xyz"}, False, "Invalid field user_id: must be a 24-character hex id"),
        (
            "ServerCreate",
            {**SERVER, "instance_url": "ftp://x"},
            False,
            "Invalid field instance_url: must be an http(s) URL",
        ),
        (
            "ServerCreate",
            {**SERVER, "instance_url": "http://h:0/"},
            False,
            "Invalid field instance_url: must be an http(s) URL",
        ),
        (
            "ServerCreate",
            {"name": "s", "user_id": "x", "port": "z"},
            False,
            "Invalid field user_id: must be a 24-character hex id",
        ),
        ("JobUpdate", {"pub_args": "a"}, True, "Invalid field pub_args: must be a list"),
        ("JobUpdate", {"pub_kwargs": [1]}, True, "Invalid field pub_kwargs: must be an object"),
        ("JobUpdate", {"is_enabled": "yes"}, True, "Invalid field is_enabled: must be true or false"),
        ("JobUpdate", {"minute": []}, True, "Invalid field minute: must be a string or an integer"),
        ("JobUpdate", {"minute": "1," * 200}, True, "Invalid field minute: at most 256 characters"),
    ],
)
def test_messages(name, body, partial, expected):
    assert check(body, name, partial) == expected


def test_clean_values_and_defaults():
    user = check({"name": "  Ann ", "email": " Ann@Example.COM ", "role": "admin"}, "UserCreate")
    assert user == {"name": "Ann", "email": "ann@example.com", "role": "admin"}
    assert check(USER, "UserCreate")["role"] == "user"
    assert check({"name": "B"}, "UserUpdate", partial=True) == {"name": "B"}  # no defaults on update
    server = check(SERVER, "ServerCreate")
    assert server["port"] is None and server["status"] == "unknown" and "password" not in server
    assert check({**SERVER, "password": None, "port": None}, "ServerCreate")["password"] is None
    job = {"user_id": SOME_ID, "job_class_string": "jobs.echo.EchoJob", "name": "j", "minute": 5, "timezone": None}
    first = check(job, "JobCreate")
    assert first["minute"] == 5 and first["timezone"] is None and first["second"] == "0"
    first["pub_args"].append("changed")
    first["pub_kwargs"]["k"] = 1
    again = check(job, "JobCreate")
    assert again["pub_args"] == [] and again["pub_kwargs"] == {}, "defaults must be fresh copies"


def test_contract_resolve_refuses_a_contradiction():
    assert contract.resolve({"$ref": "#/components/schemas/Role", "default": "user"})["default"] == "user"
    with pytest.raises(ValueError, match="contradicts"):
        contract.resolve({"$ref": "#/components/schemas/Role", "type": "integer"})


# --------------------------------------------------------------------------- 2. a live server
@pytest.fixture(scope="module")
def world(server):
    """Objects the cases need on this server: an owner, a server, a job, a calendar, a channel, a monitor, a trigger
    token; the example bodies."""
    api = server.api
    owner = api.create_user()
    server_id = api.post("/api/servers/create", json={"user_id": owner, "name": "s", "hostname": "h"}).json()
    job_id = api.create_job(owner, minute="0", hour="3")
    assert api.patch(f"/api/scheduler/jobs/{job_id}/pause").status_code == 200  # the updates below never run it
    key = api.post(f"/api/users/{owner}/api-keys", json={"label": "sign-in example"}).json()["key"]
    calendar_id = api.post("/api/scheduler/calendars", json={"user_id": owner, "name": "c"}).json()["calendar_id"]
    channel = {"user_id": owner, "name": "c", "kind": "email"}  # to the owner's own address
    channel_id = api.post("/api/scheduler/channels", json=channel).json()["channel_id"]
    monitor = {"user_id": owner, "name": "m", "period_seconds": 3600}
    monitor_id = api.post("/api/scheduler/monitors", json=monitor).json()["monitor_id"]
    token = api.post(f"/api/scheduler/jobs/{job_id}/triggers", json={"name": "t"}).json()["token"]
    return {
        "api": api,
        "user_id": owner,
        "server_id": server_id["server_id"],
        "job_id": job_id,
        "key": key,
        "calendar_id": calendar_id,
        "channel_id": channel_id,
        "monitor_id": monitor_id,
        "token": token,  # a trigger URL's (a use of the paused job records a skipped run)
    }


def fixed(body: dict, world: dict) -> dict:
    """An example body made to pass the domain rules too: an existing owner, an unused email."""
    if "user_id" in body:
        body["user_id"] = world["user_id"]
    if "email" in body:
        body["email"] = f"rules{time.time_ns()}@example.com"
    if "key" in body:  # sign-in needs a real API key
        body["key"] = world["key"]
    return body


def url(path: str, world: dict, override: tuple[str, str] | None = None) -> str:
    def value(match):
        name = match.group(1)
        if override and override[0] == name:
            return override[1]
        return world.get(name, SOME_ID)

    return re.sub(r"\{([^}]+)\}", value, path)


def names(detail: str, field: str) -> bool:
    return re.search(rf"(?<![\w]){re.escape(field)}(?![\w])", detail) is not None


@pytest.mark.parametrize("op_id", [op_id for op_id, (_, _, op) in operation_ids().items() if takes_json(op)])
def test_the_examples_are_accepted(world, op_id):
    """The bodies the cases start from are valid, so each 400 below is owed to the one change."""
    path, method, op = operation_ids()[op_id]
    body = fixed(example_body(op), world)
    response = world["api"].request(method.upper(), url(path, world), json=body)
    assert response.status_code in (200, 201, 202), response.text
    if op_id == "createJob":  # the example fires daily at 09:00; do not leave it scheduled
        assert world["api"].delete(f"/api/scheduler/jobs/{response.json()['job_id']}").status_code == 200
    if op_id == "pauseAll":  # the server is shared: leave it firing for the tests after this one
        assert world["api"].post("/api/scheduler/resume-all").status_code == 200


@pytest.mark.parametrize("case_id, op_id, where, field, label, value", CASES, ids=[c[0] for c in CASES])
def test_each_constraint_is_enforced(world, case_id, op_id, where, field, label, value):
    path, method, op = operation_ids()[op_id]
    api, target, query = world["api"], url(path, world), None
    body = fixed(example_body(op), world) if takes_json(op) else None  # valid but for the one change
    if where == "body":
        if label == "required":
            body.pop(field)
        elif label == "minProperties":
            body = {}
        else:
            body[field] = value
    elif where == "query":
        query = {field: str(value).lower() if isinstance(value, bool) else str(value)}
    else:
        target = url(path, world, override=(field, str(value)))
    response = api.request(method.upper(), target, params=query, json=body)
    assert response.status_code == 400, (case_id, response.status_code, response.text)
    detail = response.json()["detail"]
    assert set(response.json()) == {"detail"}
    if label == "minProperties":
        assert detail == "No fields to update"
    else:
        assert names(detail, field), (case_id, detail)


# --------------------------------------------------------------------------- 3. defaults
@pytest.mark.parametrize(
    "op_id",
    [op_id for op_id, (_, method, op) in operation_ids().items() if method == "post" and "201" in op["responses"]],
)
def test_creates_store_the_described_defaults(world, op_id):
    path, _, op = operation_ids()[op_id]
    schema = contract.schema(contract.request_body_schema_name(op))
    example = fixed(example_body(op), world)
    minimal = {name: example[name] for name in schema.get("required", [])}
    created = world["api"].post(url(path, world), json=minimal)
    assert created.status_code == 201, created.text
    links = op["responses"]["201"].get("links", {}).values()
    link = next((link for link in links if operation_ids()[link["operationId"]][1] == "get"), None)
    if link is None:  # nothing to read it back by (an API key): the answer shows what was stored
        stored = created.json()["data"]
    else:
        read_path = operation_ids()[link["operationId"]][0]
        ids = {param: created.json()[expr.rsplit("/", 1)[1]] for param, expr in link["parameters"].items()}
        stored = world["api"].get(url(read_path, {**world, **ids})).json()["data"]
    defaults = {name: prop["default"] for name, prop in schema["properties"].items() if "default" in prop}
    assert defaults and {name: stored[name] for name in defaults} == defaults
    if op_id == "createJob":  # every minute at :00 by default; do not leave it firing
        world["api"].delete(f"/api/scheduler/jobs/{ids['job_id']}")
