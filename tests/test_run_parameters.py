"""Typed run parameters, published results and what a chained run receives (issue 23).

Through a real server on loopback: a job's `parameters` declaration (400 naming the field), a
run-now's values (400 naming the parameter, defaults, secrets "***" in the API and the output),
a Python job's `params`, a script's TEXIUM_PARAM_* environment (never its argv), results from a
Python job, a script's `::texium-result` line and a webhook's answer, the 64 KB limit. The
parent result of a chained run (whose records the chain core makes) in-process, through the
real datastore of each provider.
"""

from __future__ import annotations

import json
import sqlite3

import pytest
from cryptography.fernet import Fernet

from tests.jobs_fixtures import ended_record, http_server
from tests.server_process import ServerProcess
from texium.core.datastore import open_datastore
from texium.core.parameters import SEALED
from texium.core.registry import JobRegistry
from texium.core.scheduling.claims import Claims
from texium.core.scheduling.dispatch import Dispatcher
from texium.core.scheduling.nodes import NodeIdentity
from texium.core.scheduling.occurrences import CHAIN, RUN_NOW
from texium.core.scheduling.recorder import Recorder
from texium.core.scheduling.runner import JobRunner
from texium.core.security.secrets import SecretBox
from texium.core.timeutil import utcnow

PARAMS_JOB = "tests.sample_jobs.inputs.ParamsJob"
TOKEN = "tok-5e3c-run-secret"
DECLARED = [
    {"name": "region", "type": "choice", "choices": ["eu", "us"], "default": "eu"},
    {"name": "count", "type": "integer", "required": True},
    {"name": "ratio", "type": "number", "default": 0.5},
    {"name": "verbose", "type": "boolean", "default": False},
    {"name": "label", "type": "string", "description": "free text"},
    {"name": "token", "type": "secret"},
]
SCRIPT = r"""#!/usr/bin/env python3
import json, os, sys
print("argv=" + json.dumps(sys.argv[1:]))
for key in sorted(os.environ):
    if key.startswith(("TEXIUM_PARAM_", "TEXIUM_PARENT_", "TEXIUM_TRIGGER")):
        print(key + "=" + os.environ[key])
print('::texium-result {"first": true}')
print('::texium-result {"count": ' + os.environ.get("TEXIUM_PARAM_COUNT", "0") + ', "token": "'
      + os.environ.get("TEXIUM_PARAM_TOKEN", "") + '"}')
print("done")
"""


@pytest.fixture(scope="module")
def scripts(tmp_path_factory):
    path = tmp_path_factory.mktemp("scripts")
    script = path / "show_env.py"
    script.write_text(SCRIPT)
    script.chmod(0o755)
    return path


@pytest.fixture(scope="module")
def served(tmp_path_factory, scripts):
    """A server that knows the sample jobs, runs scripts and may post to loopback; an admin owner."""
    env = {
        "TEXIUM_JOB_CLASS_PACKAGES": "tests.sample_jobs",
        "TEXIUM_SCRIPTS_DIR": str(scripts),
        "TEXIUM_OUTBOUND_ALLOW": "127.0.0.0/8",
    }
    process = ServerProcess("sqlite", tmp_path_factory.mktemp("params") / "data", env=env).start()
    try:
        process.owner = process.api.create_user(name="Params", role="admin")
        yield process
    finally:
        process.stop()


def create(served, job_class=PARAMS_JOB, **fields) -> str:
    return served.api.create_job(served.owner, job_class_string=job_class, is_enabled=False, **fields)


def run(served, job_id: str, body=None) -> dict:
    response = served.api.post(f"/api/scheduler/jobs/{job_id}/run", json=body)
    assert response.status_code == 200, response.text
    execution = served.api.wait_execution(response.json()["execution_id"])
    assert execution["status"] == "completed", execution
    return execution


def refused(response, detail: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["detail"].startswith(detail), response.text


# --------------------------------------------------------------------------- the declaration


@pytest.mark.parametrize(
    "declaration, detail",
    [
        ([{"name": "a", "type": "string"}, {"name": "A", "type": "integer"}], "Invalid field parameters[1].name:"),
        ([{"name": "env", "type": "choice"}], "Invalid field parameters[0].choices: a choice needs its choices"),
        ([{"name": "n", "type": "integer", "choices": [1, 2]}], "Invalid field parameters[0].choices: only a choice"),
        ([{"name": "n", "type": "integer", "default": "7"}], "Invalid field parameters[0].default: must be an integer"),
        (
            [{"name": "b", "type": "boolean", "default": 1}],
            "Invalid field parameters[0].default: must be true or false",
        ),
        ([{"name": "e", "type": "choice", "choices": ["a"], "default": "b"}], "Invalid field parameters[0].default:"),
        ([{"name": "k", "type": "secret", "default": "x"}], "Invalid field parameters[0].default: a secret has no"),
        ([{"name": "bad-name", "type": "string"}], 'Invalid field parameters[0]["name"]'),
        ([{"name": "x", "type": "date"}], 'Invalid field parameters[0]["type"]'),
    ],
)
def test_a_bad_declaration_is_a_400_naming_the_field(served, declaration, detail):
    body = {"user_id": served.owner, "job_class_string": PARAMS_JOB, "name": "p", "parameters": declaration}
    refused(served.api.post("/api/scheduler/jobs", json=body), detail)
    job_id = create(served)
    refused(served.api.put(f"/api/scheduler/jobs/{job_id}", json={"parameters": declaration}), detail)


def test_the_declaration_is_stored_and_served(served):
    job_id = create(served, parameters=DECLARED)
    assert served.api.get(f"/api/scheduler/jobs/{job_id}").json()["data"]["parameters"] == DECLARED


# --------------------------------------------------------------------------- run-now's values


def test_run_now_records_the_values_with_defaults_and_secrets_masked(served):
    job_id = create(served, parameters=DECLARED)
    execution = run(served, job_id, {"parameters": {"count": 3.0, "token": TOKEN, "label": "nightly"}})
    shown = {"region": "eu", "count": 3, "ratio": 0.5, "verbose": False, "label": "nightly", "token": "***"}
    assert execution["parameters"] == shown
    assert execution["trigger"] == "run_now"
    # The job received the real values as `params` (the secret too); output and result show ***.
    assert "'token': '***'" in execution["output"] and "secret in the output: ***" in execution["output"]
    assert execution["result"] == {"params": shown, "parent_result": None, "trigger": "run_now"}
    listed = served.api.get(f"/api/scheduler/executions?job_id={job_id}")
    one = served.api.get(f"/api/scheduler/executions/{execution['_id']}")
    for text in (listed.text, one.text):
        assert TOKEN not in text and SEALED not in text
    # At rest: sealed, not in clear.
    with sqlite3.connect(served.data_dir / "texium.db") as db:
        stored = db.execute("SELECT doc FROM scheduler_executions WHERE id = ?", (execution["_id"],)).fetchone()[0]
    assert TOKEN not in stored and json.loads(stored)[SEALED]


def test_a_bad_value_is_a_400_naming_the_parameter(served):
    job_id = create(served, parameters=DECLARED)
    post = lambda body: served.api.post(f"/api/scheduler/jobs/{job_id}/run", json=body)  # noqa: E731
    refused(post({"parameters": {"count": 1, "colour": "red"}}), "Invalid parameter colour: the job does not declare")
    refused(post({"parameters": {"count": "three"}}), "Invalid parameter count: must be an integer")
    refused(post({"parameters": {"count": True}}), "Invalid parameter count: must be an integer")
    refused(post({"parameters": {"count": 1, "region": "asia"}}), 'Invalid parameter region: must be one of "eu", "us"')
    refused(post({"parameters": {"count": 1, "verbose": "yes"}}), "Invalid parameter verbose: must be true or false")
    refused(post({"parameters": {"count": 1, "token": 5}}), "Invalid parameter token: must be a string")
    refused(post({"parameters": {}}), "Invalid parameter count: it is required and has no default")
    refused(post(None), "Invalid parameter count: it is required and has no default")
    refused(post({"params": {}}), "Unknown field: params")
    assert served.api.get(f"/api/scheduler/executions?job_id={job_id}").json()["total"] == 0


def test_a_job_without_a_declaration_refuses_values_and_runs_as_before(served):
    job_id = create(served, job_class="tests.sample_jobs.inputs.PlainJob")
    refused(
        served.api.post(f"/api/scheduler/jobs/{job_id}/run", json={"parameters": {"x": 1}}),
        "Invalid parameter x: the job does not declare it (declared: none)",
    )
    execution = run(served, job_id)
    assert execution.get("parameters") is None and execution["result"] == "hello"


def test_python_jobs_get_params_by_name_or_through_kwargs_and_others_keep_their_arguments(served):
    declared = [{"name": "size", "type": "integer", "default": 2}]
    kwargs_job = create(served, job_class="tests.sample_jobs.inputs.KwargsJob", parameters=declared)
    assert run(served, kwargs_job)["result"] == {"kwargs": ["params"]}
    plain = create(served, job_class="tests.sample_jobs.inputs.PlainJob", parameters=declared)
    execution = run(served, plain, {"parameters": {"size": 5}})
    assert execution["parameters"] == {"size": 5} and execution["result"] == "hello"
    # A built-in job whose **kwargs are its own arguments does not receive them.
    echo = create(served, job_class="jobs.echo.EchoJob", parameters=declared, pub_kwargs={"a": 1})
    assert "Kwargs: {'a': 1, 'params': {'size': 2}}" in run(served, echo)["output"]


def test_a_retry_runs_with_the_same_values(served):
    declared = [{"name": "token", "type": "secret"}, {"name": "size", "type": "integer", "default": 1}]
    job_id = served.api.create_job(  # enabled (a disabled job's retry is skipped), due on 1 January only
        served.owner,
        job_class_string="tests.sample_jobs.slow.SlowJob",
        minute="0",
        hour="3",
        day_of_month="1",
        month="1",
        pub_kwargs={"seconds": 0, "fail": True},
        parameters=declared,
        retries=1,
        retry_delay_seconds=0,
        retry_backoff="fixed",
    )
    response = served.api.post(f"/api/scheduler/jobs/{job_id}/run", json={"parameters": {"token": TOKEN, "size": 2}})
    first = served.api.wait_execution(response.json()["execution_id"])
    assert first["status"] == "retried", first
    retry = served.api.wait_execution(first["next_attempt_id"])
    assert retry["status"] == "failed" and retry["attempt"] == 2
    assert retry["parameters"] == first["parameters"] == {"token": "***", "size": 2}
    with sqlite3.connect(served.data_dir / "texium.db") as db:
        rows = db.execute("SELECT doc FROM scheduler_executions WHERE id IN (?, ?)", (first["_id"], retry["_id"]))
        sealed = [json.loads(doc)[SEALED] for (doc,) in rows]
    assert len(sealed) == 2 and sealed[0] == sealed[1]


# --------------------------------------------------------------------------- scripts


def test_a_script_gets_its_parameters_in_its_environment_never_on_its_command_line(served):
    declared = [
        {"name": "count", "type": "integer", "default": 4},
        {"name": "mode", "type": "string"},
        {"name": "dry_run", "type": "boolean", "default": True},
        {"name": "token", "type": "secret"},
    ]
    job_id = create(served, job_class="jobs.custom.CustomScriptJob", pub_args=["show_env.py"], parameters=declared)
    execution = run(served, job_id, {"parameters": {"mode": "full run", "token": TOKEN}})
    output = execution["output"]
    assert "argv=[]" in output
    for line in (
        "TEXIUM_PARAM_COUNT=4",
        "TEXIUM_PARAM_MODE=full run",
        "TEXIUM_PARAM_DRY_RUN=true",
        "TEXIUM_PARAM_TOKEN=***",
        "TEXIUM_TRIGGER=run_now",
        "TEXIUM_PARENT_EXECUTION_ID=",
    ):
        assert line + "\n" in output, output
    assert "TEXIUM_PARENT_RESULT" not in output
    assert TOKEN not in json.dumps(execution)
    # The last ::texium-result line wins; the secret in it is masked.
    assert execution["result"] == {"count": 4, "token": "***"}


# --------------------------------------------------------------------------- results


def test_a_webhook_keeps_the_answer_s_json_when_asked(served):
    with http_server([200]) as receiver:
        kept = create(served, job_class="jobs.webhook.WebhookJob", pub_args=[receiver.url], pub_kwargs={"retries": 0})
        assert "result" not in run(served, kept)
        asked = create(
            served,
            job_class="jobs.webhook.WebhookJob",
            pub_args=[receiver.url],
            pub_kwargs={"retries": 0, "keep_response_json": True, "note": "n"},
        )
        execution = run(served, asked)
        assert execution["result"] == {"answer": 200}
        sent = json.loads(receiver.requests[-1]["body"])
        assert sent["data"] == {"note": "n"}  # keep_response_json is not sent


def test_a_users_webhook_keeps_no_json_from_a_private_address(served):
    user = served.api.create_user(name="Plain user")
    with http_server([200]) as receiver:
        job_id = served.api.create_job(
            user,
            job_class_string="jobs.webhook.WebhookJob",
            is_enabled=False,
            pub_args=[receiver.url],
            pub_kwargs={"retries": 0, "keep_response_json": True},
        )
        execution = run(served, job_id)
    assert "result" not in execution
    assert "No result: the reply came from a private address" in execution["output"]


def test_a_result_is_at_most_64_kb_of_json_and_a_larger_one_is_left_out_with_a_line(served):
    job_class = "tests.sample_jobs.inputs.SizedResultJob"
    fits = run(served, create(served, job_class=job_class, pub_kwargs={"size": 64 * 1024 - 2}))
    assert fits["result"] == "x" * (64 * 1024 - 2) and "no result published" not in fits["output"]
    over = run(served, create(served, job_class=job_class, pub_kwargs={"size": 64 * 1024 - 1}))
    assert "result" not in over
    assert "[no result published: 65537 bytes of JSON, over the limit of 65536 bytes;" in over["output"]
    odd = run(served, create(served, job_class=job_class, pub_kwargs={"not_json": True}))
    assert "result" not in odd and "[no result published: it is not JSON" in odd["output"]


# --------------------------------------------------------------------------- chained runs, in-process


class Node:
    """A dispatcher and runner on a real store: what a server runs, without the HTTP layer."""

    def __init__(self, store, scripts):
        self.ds = store
        self.recorder = Recorder(store)
        config = {"SCRIPTS_DIR": str(scripts)}
        runner = JobRunner(
            store, JobRegistry(["tests.sample_jobs"]), job_config=config, secrets=SecretBox(Fernet.generate_key())
        )
        self.dispatcher = Dispatcher(store, Claims(store, NodeIdentity()), runner, self.recorder, pool_size=2)
        self.dispatcher.start()

    def job(self, job_class, **fields) -> dict:
        doc = {"name": "chained", "job_class_string": job_class, "pub_args": [], "pub_kwargs": {}, **fields}
        doc["_id"] = self.ds.jobs.insert({**doc, "created_at": utcnow(), "is_enabled": True})
        return doc

    def ended(self, job_class: str, result=None) -> dict:
        """An upstream run that ended, written straight into the store."""
        upstream = self.job(job_class)
        record = {"job_id": upstream["_id"], "status": "completed", "trigger": "schedule", "created_at": utcnow()}
        if result is not None:
            record["result"] = result
        return {"job_id": upstream["_id"], "execution_id": self.ds.executions.insert(record)}

    def run(self, job: dict, trigger: str = CHAIN, **fields) -> dict:
        return ended_record(self.ds, self.recorder, self.dispatcher.run_now(job, trigger, **fields))

    def close(self):
        self.dispatcher.close(2)
        self.recorder.stop(2)


@pytest.fixture(params=["sqlite", "mongomock"])
def node(request, tmp_path, scripts):
    store = open_datastore("mongomock://" if request.param == "mongomock" else None, "texium_test", str(tmp_path))
    store.ensure_indexes()
    made = Node(store, scripts)
    yield made
    made.close()
    store.close()


def test_a_chained_run_receives_its_parent_s_result(node):
    parent = node.ended(PARAMS_JOB, result={"rows": 12, "file": "out.csv"})
    chained = {"triggered_by": dict(parent), "parent_execution_id": parent["execution_id"], "chain_depth": 1}
    execution = node.run(node.job(PARAMS_JOB), **chained)
    assert execution["result"]["parent_result"] == {"rows": 12, "file": "out.csv"}
    assert execution["result"]["trigger"] == "chain"
    kwargs_run = node.run(node.job("tests.sample_jobs.inputs.KwargsJob"), **chained)
    assert kwargs_run["result"] == {"kwargs": ["parent_result"]}

    script = node.run(node.job("jobs.custom.CustomScriptJob", pub_args=["show_env.py"]), **chained)
    assert f"TEXIUM_PARENT_EXECUTION_ID={parent['execution_id']}\n" in script["output"]
    assert 'TEXIUM_PARENT_RESULT={"rows": 12, "file": "out.csv"}\n' in script["output"]
    assert "TEXIUM_TRIGGER=chain\n" in script["output"]

    silent = node.ended(PARAMS_JOB)  # published nothing
    execution = node.run(
        node.job("jobs.custom.CustomScriptJob", pub_args=["show_env.py"]),
        triggered_by=dict(silent),
        parent_execution_id=silent["execution_id"],
    )
    assert "TEXIUM_PARENT_RESULT=null\n" in execution["output"]


def test_a_fan_in_run_receives_every_upstream_result_by_job(node):
    first, second = node.ended(PARAMS_JOB, result=[1, 2]), node.ended(PARAMS_JOB, result="ok")
    silent = node.ended(PARAMS_JOB)
    fan_in = {**second, "fan_in": [first, second, silent]}
    execution = node.run(node.job(PARAMS_JOB), triggered_by=fan_in, parent_execution_id=second["execution_id"])
    assert execution["result"]["parent_result"] == {
        first["job_id"]: [1, 2],
        second["job_id"]: "ok",
        silent["job_id"]: None,
    }


@pytest.mark.parametrize("trigger", [CHAIN, RUN_NOW])
def test_a_run_recorded_without_values_gets_the_declared_defaults(node, trigger):
    """A record made without `parameters` (as the planner makes a scheduled occurrence's, or a
    chained start that gives none) runs with the declared defaults and records them."""
    declared = [
        {"name": "region", "type": "choice", "choices": ["eu", "us"], "default": "us"},
        {"name": "label", "type": "string"},
    ]
    job = node.job(PARAMS_JOB, parameters=declared)
    parent = node.ended(PARAMS_JOB)
    fields = {"parent_execution_id": parent["execution_id"]} if trigger == CHAIN else {}
    execution = node.run(job, trigger, **fields)
    assert execution["result"]["params"] == {"region": "us"}
    assert execution["parameters"] == {"region": "us"}
