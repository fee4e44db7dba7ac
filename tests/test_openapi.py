"""The OpenAPI description (texium/openapi.yaml) against the code and a live server.

1. Every route of the Tornado application is described, with the same methods, and vice versa.
2. The description is valid OpenAPI 3.1 and internally consistent.
3. /openapi.json serves it and /docs shows it with the vendored Swagger UI.
4. schemathesis, bounded, against a live server on each datastore provider: no 5xx, no
   response that breaks its schema, no undocumented status code or content type.
That each request rule of the description is enforced (the server validates request bodies
against it) is tests/test_request_schemas.py's to prove.
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
from importlib import resources
from pathlib import Path

import pytest
import tornado.web
import yaml

ROOT = Path(__file__).resolve().parents[1]
HTTP_METHODS = ("get", "post", "put", "delete", "patch", "head", "options")
ERROR_STATUSES = {"400", "401", "403", "404", "409", "413", "415", "429", "503"}


def load_yaml() -> dict:
    text = resources.files("texium").joinpath("openapi.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


@pytest.fixture(scope="module")
def description() -> dict:
    return load_yaml()


def operations(description: dict):
    for path, item in description["paths"].items():
        for method in HTTP_METHODS:
            if method in item:
                yield path, method, item[method]


def template(path: str) -> str:
    """A path with its parameters blanked and no trailing slash: /api/users/{} ."""
    return re.sub(r"\{[^}/]+\}", "{}", path).rstrip("/") or "/"


# --------------------------------------------------------------------------- 1. routes
def route_table() -> dict[str, set[str]]:
    """{path template: methods} of the application's routes (static files left out)."""
    from texium.server.app import make_app

    app = make_app(None)  # the context is only handed to handlers; no request is served here
    routes: dict[str, set[str]] = {}
    for rule in app.wildcard_router.rules:
        handler = rule.target
        if not isinstance(handler, type) or issubclass(handler, tornado.web.StaticFileHandler):
            continue
        pattern = rule.matcher.regex.pattern
        pattern = re.sub(r"(/\?)?\$$", "", pattern)  # "...(/?)$": every route takes a trailing slash
        pattern = re.sub(r"\((\?P<\w+>)?[^()]*\)", "{}", pattern)  # groups are path parameters
        pattern = re.sub(r"\\(.)", r"\1", pattern)  # unescape, e.g. openapi\.json
        # OPTIONS is every API route's CORS preflight (CORS_ORIGINS only), not an operation.
        methods = {
            m
            for m in HTTP_METHODS
            if m != "options" and getattr(handler, m) is not getattr(tornado.web.RequestHandler, m)
        }
        routes[pattern.rstrip("/") or "/"] = methods
    return routes


def test_every_route_is_described_and_every_description_is_routed(description):
    routes = route_table()
    described: dict[str, set[str]] = {}
    for path, method, _ in operations(description):
        described.setdefault(template(path), set()).add(method)
    assert sorted(set(routes) - set(described)) == [], "routes missing from texium/openapi.yaml"
    assert sorted(set(described) - set(routes)) == [], "described paths the application does not route"
    wrong = {
        path: {"server": sorted(routes[path]), "description": sorted(described[path])}
        for path in routes
        if routes[path] != described[path]
    }
    assert wrong == {}, "methods differ between the route table and the description"


# --------------------------------------------------------------------------- 2. validity
def test_description_is_valid_openapi_3_1(description):
    from openapi_spec_validator import validate

    assert description["openapi"].startswith("3.1.")
    validate(copy.deepcopy(description))  # raises with the offending path on error


def test_schemathesis_loads_the_description(description):
    import schemathesis

    schema = schemathesis.openapi.from_dict(copy.deepcopy(description))
    schema.validate()
    loaded = [result.ok() for result in schema.get_all_operations()]  # raises on a broken operation
    assert len(loaded) == sum(1 for _ in operations(description))


def test_operations_are_consistent(description):
    ids = [op.get("operationId") for _, _, op in operations(description)]
    assert None not in ids, "every operation needs an operationId (the links use them)"
    assert len(ids) == len(set(ids)), "operationIds must be unique"
    problems = []
    for path, method, op in operations(description):
        where = f"{method.upper()} {path}"
        statuses = set(op["responses"])
        if not any(s.startswith("2") for s in statuses):
            problems.append(f"{where}: no success response")
        if "default" in statuses:
            problems.append(f"{where}: a 'default' response would hide undocumented statuses")
        # (that path parameters are declared is checked by openapi-spec-validator)
        params = list(description["paths"][path].get("parameters", [])) + list(op.get("parameters", []))
        path_params = re.findall(r"\{([^}]+)\}", path)
        if path.startswith("/api/"):
            if (params or "requestBody" in op) and "400" not in statuses:
                problems.append(f"{where}: input is validated, so 400 must be documented")
            if path_params and "404" not in statuses:
                problems.append(f"{where}: an id in the path can be unknown, so 404 must be documented")
            for status in statuses - {"200", "201", "202"}:
                if status not in ERROR_STATUSES:
                    problems.append(f"{where}: unexpected status {status}")
    assert problems == []


# --------------------------------------------------------------------------- 3. serving
def test_openapi_json_serves_the_description(api, description):
    response = api.get("/openapi.json")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    served = response.json()
    assert served["servers"] == [{"url": "/"}]
    assert {k: v for k, v in served.items() if k != "servers"} == {
        k: v for k, v in description.items() if k != "servers"
    }


def test_docs_page_loads_vendored_swagger_ui(api):
    response = api.get("/docs")
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/html")
    page = response.text
    (starter,) = re.findall(r'src="(/ui/[^"]+/docs/docs\.js)"', page)  # no inline script: a file starts it
    script = api.get(starter).text
    assert '"/openapi.json"' in script
    assert "tryItOutEnabled: true" in script
    assets = re.findall(r'(?:href|src)="(/static/[^"?]+)', page)
    assert {Path(a).name for a in assets} == {"swagger-ui.css", "swagger-ui-bundle.js"}
    for asset in re.findall(r'(?:href|src)="(/static/[^"]+)', page):
        served = api.get(asset)
        assert served.status_code == 200, asset
        assert len(served.content) > 10_000, asset
    assert "http://" not in page and "https://" not in page, "no CDN: everything is served locally"


# --------------------------------------------------------------------------- 4. schemathesis
CHECKS = "not_a_server_error,response_schema_conformance,status_code_conformance,content_type_conformance"
# Bounded: 12 examples per operation take about 2.5 minutes per store on two cores (some 60 operations);
# raise TEXIUM_SCHEMATHESIS_EXAMPLES and change the seed to explore further.
MAX_EXAMPLES = int(os.environ.get("TEXIUM_SCHEMATHESIS_EXAMPLES", "12"))
SEED = os.environ.get("TEXIUM_SCHEMATHESIS_SEED", "20260223")


def for_testing(description: dict) -> dict:
    """The served description plus one test-only link.

    Generated job bodies almost never hold a valid cron schedule, so the create -> get ->
    update -> pause -> resume -> run -> delete chain would rarely start. This link creates a
    real EchoJob for each created user. EchoJob is also the only class the run can create: the
    description names no other class, and the other built-in jobs reach the network.
    """
    schema = copy.deepcopy(description)
    links = schema["paths"]["/api/users/"]["post"]["responses"]["201"]["links"]
    links["CreateEchoJobForUser"] = {
        "operationId": "createJob",
        "requestBody": {
            "user_id": "$response.body#/user_id",
            "job_class_string": "jobs.echo.EchoJob",
            "name": "schemathesis echo",
            "minute": "*/30",
            "pub_args": ["a", 1],
            "pub_kwargs": {"key": "value"},
        },
        "x-schemathesis": {"merge_body": False},
    }
    return schema


def test_schemathesis_finds_no_failure_on_sqlite(start_server, tmp_path):
    """The mongomock run is in test_openapi_mongomock.py: a file of its own runs in the other
    test worker, so the two runs (a few minutes each) go side by side."""
    run_schemathesis("sqlite", start_server, tmp_path)


def run_schemathesis(provider, start_server, tmp_path):
    server = start_server(provider)
    served = server.api.get("/openapi.json")
    assert served.status_code == 200, served.text
    schema_path = tmp_path / "openapi.json"
    schema_path.write_text(json.dumps(for_testing(served.json())))
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        str(schema_path),
        "--url",
        server.api.base_url,
        "--checks",
        CHECKS,
        "--max-examples",
        str(MAX_EXAMPLES),
        "--seed",
        SEED,
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--request-timeout",
        "30",
        "--no-color",
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith("SCHEMATHESIS_")}
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    report = result.stdout + result.stderr
    assert result.returncode == 0, (
        f"schemathesis found failures on {provider} (exit {result.returncode}):\n{report[-20000:]}"
        f"\n--- server log (tail) ---\n{server.log()[-5000:]}"
    )
    assert server.process.poll() is None, f"the server died during the run:\n{server.log()[-5000:]}"
