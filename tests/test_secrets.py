"""Secret job arguments and URL credentials: encrypted at rest, "***" in every response, audit entry,
output, error and log line, kept when "***" comes back. In-process, on both providers.

The test job class below declares its secrets; the webhook tests assume jobs.webhook.WebhookJob
declares `secret_arguments = ("secret", "headers.*")`.
"""

import hashlib
import hmac
import json
import logging
import sqlite3

import pytest
from cryptography.fernet import Fernet

from tests.jobs_fixtures import ended_record, http_server
from texium.core.datastore import open_datastore
from texium.core.errors import ValidationError
from texium.core.job import JobBase, JobError
from texium.core.records.audit import AuditLog
from texium.core.records.servers import ServerService
from texium.core.registry import JobRegistry
from texium.core.scheduler_manager import SchedulerManager
from texium.core.scheduling.claims import Claims
from texium.core.scheduling.dispatch import Dispatcher
from texium.core.scheduling.nodes import NodeIdentity, NodeRegistry
from texium.core.scheduling.recorder import Recorder
from texium.core.scheduling.runner import JobRunner
from texium.core.security import secret_args
from texium.core.security.secrets import SecretBox
from texium.core.timeutil import utcnow

RECEIVED: list[tuple[tuple, dict]] = []
SECRET_JOB = "tests.test_secrets.SecretJob"
WEBHOOK = "jobs.webhook.WebhookJob"
TOKEN, BEARER, POSITIONAL, URL_PASSWORD = "tok-3f9a-secret", "Bearer abc-123-xyz", "pos-secret-77", "pw-9z8y-url"


class SecretJob(JobBase):
    """Records what it receives and echoes it everywhere: output, log, error"""

    secret_arguments = ("token", "headers.*", "args.1")

    def run(self, *args, **kwargs):
        RECEIVED.append((args, kwargs))
        self.write(f"received args={list(args)} kwargs={kwargs}")
        self.context.logger.warning("token in use: %s", kwargs.get("token"))
        if kwargs.get("fail") == "job-error":
            raise JobError(f"refused with token {kwargs.get('token')}")
        if kwargs.get("fail"):
            raise RuntimeError(f"crashed with {json.dumps(kwargs)}")
        return {"args": list(args), "kwargs": kwargs}


# --------------------------------------------------------------------------- the services


class Env:
    def __init__(self, datastore, box):
        self.ds, self.box = datastore, box
        self.registry = JobRegistry(["tests.test_secrets"])  # as JOB_CLASS_PACKAGES names a package
        self.recorder = Recorder(datastore)
        identity = NodeIdentity()
        runner = JobRunner(datastore, self.registry, job_config={"OUTBOUND_ALLOW": ["127.0.0.0/8"]}, secrets=box)
        self.dispatcher = Dispatcher(datastore, Claims(datastore, identity), runner, self.recorder, pool_size=2)
        self.dispatcher.start()  # runs what run-now queues; no scheduler pass here
        self.audit = AuditLog(datastore)
        nodes = NodeRegistry(datastore, identity, "test")
        self.manager = SchedulerManager(datastore, self.registry, self.dispatcher, self.audit, self.recorder, nodes)
        self.servers = ServerService(datastore, box)
        self.user_id = datastore.users.insert({"name": "Owner", "email": "owner@example.org", "created_at": utcnow()})

    def create(self, job_class=SECRET_JOB, pub_args=(), pub_kwargs=None, **fields):
        body = {
            "user_id": self.user_id,
            "job_class_string": job_class,
            "name": "secret job",
            "pub_args": list(pub_args),
            "pub_kwargs": pub_kwargs or {},
            "is_enabled": False,
            **fields,
        }
        return self.manager.create(body, "tester")[0]

    def shown(self, job_id) -> dict:
        """The job as GET /api/scheduler/jobs/{id} serves it."""
        return json.loads(self.manager.get_json(job_id))

    def listed(self) -> list[dict]:
        return [json.loads(item) for item in self.manager.list(None, 100, 0).items]

    def stored_text(self, job_id) -> str:
        """What the store holds for the job: the raw SQLite text, or the whole MongoDB document."""
        if self.ds.provider == "sqlite":
            with sqlite3.connect(self.ds.path) as db:
                return db.execute("SELECT doc FROM scheduler_jobs WHERE id = ?", (job_id,)).fetchone()[0]
        return json.dumps(self.ds.jobs.get(job_id), default=str)

    def secrets_of(self, job_id) -> dict:
        return secret_args.decrypt(self.ds.jobs.get(job_id)[secret_args.FIELD], self.box)

    def audit_text(self, job_id) -> str:
        return json.dumps(self.ds.audit_logs.find({"job_id": job_id}), default=str)

    def run(self, job_id, timeout=15.0) -> dict:
        return ended_record(self.ds, self.recorder, self.manager.run_now(job_id, "tester"), timeout)

    def close(self):
        self.dispatcher.close(2)
        self.recorder.stop(2)


def make_env(provider: str, tmp_path):
    store = open_datastore("mongomock://" if provider == "mongomock" else None, "texium_test", str(tmp_path))
    store.ensure_indexes()
    RECEIVED.clear()
    return Env(store, SecretBox(Fernet.generate_key()))


@pytest.fixture(params=["sqlite", "mongomock"])
def env(request, tmp_path):
    made = make_env(request.param, tmp_path)
    yield made
    made.close()
    made.ds.close()


@pytest.fixture
def sqlite_env(tmp_path):
    made = make_env("sqlite", tmp_path)
    yield made
    made.close()
    made.ds.close()


def assert_hidden(text: str, *values: str) -> None:
    for value in values:
        assert value not in text, f"{value!r} leaked: {text}"


# --------------------------------------------------------------------------- at rest and in responses


def test_declared_secrets_are_encrypted_at_rest_and_masked_everywhere(env):
    job_id = env.create(
        pub_args=["visible", POSITIONAL],
        pub_kwargs={"token": TOKEN, "headers": {"Authorization": BEARER, "X-Team": "ops"}, "note": "plain"},
    )
    shown = env.shown(job_id)
    assert shown["pub_args"] == ["visible", "***"]
    assert shown["pub_kwargs"] == {
        "token": "***",
        "headers": {"Authorization": "***", "X-Team": "***"},
        "note": "plain",
    }
    assert secret_args.FIELD not in shown
    listed = next(job for job in env.listed() if job["_id"] == job_id)
    assert listed == shown
    stored = env.stored_text(job_id)
    assert_hidden(stored + env.manager.get_json(job_id), TOKEN, BEARER, POSITIONAL)
    assert env.secrets_of(job_id) == {
        ("pub_args", 1): POSITIONAL,
        ("pub_kwargs", "token"): TOKEN,
        ("pub_kwargs", "headers", "Authorization"): BEARER,
        ("pub_kwargs", "headers", "X-Team"): "ops",
    }
    assert_hidden(env.audit_text(job_id), TOKEN, BEARER, POSITIONAL)


def test_the_hidden_field_is_the_last_member_of_the_stored_text(sqlite_env):
    """Only the embedded store slices stored text, so this is about SQLite alone."""
    env = sqlite_env
    plain = env.create(pub_kwargs={"note": "nothing secret"})
    secret = env.create(pub_kwargs={"token": TOKEN})
    for job_id in (plain, secret):
        text = env.stored_text(job_id)
        assert text.rsplit(",", 1)[1].startswith(f'"{secret_args.FIELD}":"'), text
    env.manager.update(secret, {"name": "renamed", "pub_kwargs": {"token": "***", "more": 1}}, "tester")
    env.manager.pause(secret, "tester")
    env.run(secret)
    assert env.stored_text(secret).rsplit(",", 1)[1].startswith(f'"{secret_args.FIELD}":"')
    assert env.stored_text(plain).endswith(f',"{secret_args.FIELD}":""}}')


def test_three_stars_sent_back_keep_the_secret_a_new_value_replaces_it_a_missing_key_removes_it(env):
    job_id = env.create(pub_args=["a", POSITIONAL], pub_kwargs={"token": TOKEN, "headers": {"Authorization": BEARER}})
    token_before = env.ds.jobs.get(job_id)[secret_args.FIELD]

    # What a client read, sent back whole: every secret is kept, nothing changes.
    shown = env.shown(job_id)
    env.manager.update(job_id, {"pub_args": shown["pub_args"], "pub_kwargs": shown["pub_kwargs"]}, "tester")
    assert env.secrets_of(job_id)[("pub_kwargs", "token")] == TOKEN
    assert env.ds.jobs.get(job_id)[secret_args.FIELD] == token_before  # unchanged, not re-encrypted
    assert env.shown(job_id)["pub_kwargs"] == {"token": "***", "headers": {"Authorization": "***"}}

    # A new value replaces the stored one; the other "***" keeps its own.
    env.manager.update(job_id, {"pub_kwargs": {"token": "new-token-42", "headers": {"Authorization": "***"}}}, "tester")
    secrets = env.secrets_of(job_id)
    assert secrets[("pub_kwargs", "token")] == "new-token-42"
    assert secrets[("pub_kwargs", "headers", "Authorization")] == BEARER
    assert env.shown(job_id)["pub_kwargs"]["token"] == "***"

    # A key left out is gone, its secret too.
    env.manager.update(job_id, {"pub_kwargs": {"token": "***"}}, "tester")
    assert env.secrets_of(job_id) == {("pub_args", 1): POSITIONAL, ("pub_kwargs", "token"): "new-token-42"}
    assert env.shown(job_id)["pub_kwargs"] == {"token": "***"}

    # Changing something else leaves the secrets alone.
    env.manager.update(job_id, {"name": "other name", "minute": "5"}, "tester")
    assert env.secrets_of(job_id)[("pub_kwargs", "token")] == "new-token-42"

    env.run(job_id)
    assert RECEIVED[-1] == (("a", POSITIONAL), {"token": "new-token-42"})

    audit = env.audit_text(job_id)
    assert_hidden(audit, TOKEN, BEARER, POSITIONAL, "new-token-42")
    descriptions = [entry["description"] for entry in env.ds.audit_logs.find({"job_id": job_id, "event": "updated"})]
    assert "secret pub_kwargs.token changed" in descriptions[1]
    assert "secret pub_kwargs.headers.Authorization removed" in descriptions[2]
    assert descriptions[0] == "no changes"


def test_three_stars_with_nothing_stored_are_refused(env):
    with pytest.raises(ValidationError, match=r"pub_kwargs\.token: \*\*\* stands for a stored secret"):
        env.create(pub_kwargs={"token": "***"})
    job_id = env.create(pub_kwargs={"token": TOKEN})
    with pytest.raises(ValidationError, match=r"pub_kwargs\.headers\.Authorization"):
        env.manager.update(job_id, {"pub_kwargs": {"token": "***", "headers": {"Authorization": "***"}}}, "tester")
    assert env.secrets_of(job_id) == {("pub_kwargs", "token"): TOKEN}


def test_a_run_receives_the_real_values_and_its_output_error_and_log_are_masked(env, caplog):
    job_id = env.create(pub_args=["a", POSITIONAL], pub_kwargs={"token": TOKEN, "headers": {"Authorization": BEARER}})
    with caplog.at_level(logging.WARNING, logger="texium.jobs"):
        execution = env.run(job_id)
    assert execution["status"] == "completed", execution
    assert RECEIVED[-1] == (("a", POSITIONAL), {"token": TOKEN, "headers": {"Authorization": BEARER}})
    assert (
        "received args=['a', '***'] kwargs={'token': '***', 'headers': {'Authorization': '***'}}"
        in (execution["output"])
    )
    assert_hidden(execution["output"], TOKEN, BEARER, POSITIONAL)
    assert "token in use: ***" in caplog.text
    assert_hidden(caplog.text, TOKEN)

    # A failure's message and traceback: a JobError, then any exception (JSON-escaped values too).
    env.manager.update(job_id, {"pub_kwargs": {"token": "***", "fail": "job-error"}}, "tester")
    failed = env.run(job_id)
    assert failed["status"] == "failed" and failed["error"] == "refused with token ***"
    env.manager.update(job_id, {"pub_kwargs": {"token": 'quo"te-secret', "fail": "crash"}}, "tester")
    crashed = env.run(job_id)
    assert crashed["status"] == "failed" and crashed["error"].startswith("RuntimeError: crashed with ")
    assert_hidden(crashed["error"] + crashed["output"], 'quo"te-secret', 'quo\\"te-secret')
    served = json.dumps(env.ds.executions.find({"job_id": job_id}), default=str)
    assert_hidden(served, TOKEN, BEARER, POSITIONAL, 'quo"te-secret', 'quo\\"te-secret')


def test_a_secret_stays_secret_when_the_class_changes(env):
    job_id = env.create(pub_kwargs={"token": TOKEN, "note": "plain"})
    env.manager.update(job_id, {"job_class_string": "jobs.echo.EchoJob"}, "tester")  # declares nothing
    assert env.shown(job_id)["pub_kwargs"] == {"token": "***", "note": "plain"}
    assert env.secrets_of(job_id) == {("pub_kwargs", "token"): TOKEN}
    execution = env.run(job_id)
    assert execution["status"] == "completed", execution
    assert execution["output"].endswith("Kwargs: {'token': '***', 'note': 'plain'}\n")
    audit = [entry["description"] for entry in env.ds.audit_logs.find({"job_id": job_id, "event": "updated"})]
    assert audit == ["job_class_string: 'tests.test_secrets.SecretJob' -> 'jobs.echo.EchoJob'"]


# --------------------------------------------------------------------------- URL credentials


def test_url_credentials_are_masked_kept_and_not_sent_elsewhere(env):
    url = f"http://admin:{URL_PASSWORD}@127.0.0.1:9/hook"
    job_id = env.create(pub_args=[url], pub_kwargs={"mirror": {"urls": [f"https://u:{URL_PASSWORD}x@example.org/"]}})
    shown = env.shown(job_id)
    assert shown["pub_args"] == ["http://admin:***@127.0.0.1:9/hook"]
    assert shown["pub_kwargs"] == {"mirror": {"urls": ["https://u:***@example.org/"]}}
    assert_hidden(env.stored_text(job_id) + env.audit_text(job_id), URL_PASSWORD)

    # Sent back masked: kept; the path may change, the password follows.
    env.manager.update(job_id, {"pub_args": ["http://admin:***@127.0.0.1:9/other"]}, "tester")
    assert env.secrets_of(job_id)[("pub_args", 0)] == f"http://admin:{URL_PASSWORD}@127.0.0.1:9/other"
    assert env.secrets_of(job_id)[("pub_kwargs", "mirror", "urls", 0)] == f"https://u:{URL_PASSWORD}x@example.org/"
    # Never to another host, port or user.
    for elsewhere in (
        "http://admin:***@evil.example:9/",
        "http://admin:***@127.0.0.1:10/",
        "http://root:***@127.0.0.1:9/",
    ):
        with pytest.raises(ValidationError, match="same scheme, user, host and port"):
            env.manager.update(job_id, {"pub_args": [elsewhere]}, "tester")
    # A new password replaces it; a URL without one drops it.
    env.manager.update(job_id, {"pub_args": ["http://admin:fresh-pass@127.0.0.1:9/"]}, "tester")
    assert env.secrets_of(job_id)[("pub_args", 0)] == "http://admin:fresh-pass@127.0.0.1:9/"
    env.manager.update(job_id, {"pub_args": ["http://127.0.0.1:9/"], "pub_kwargs": {}}, "tester")
    assert env.secrets_of(job_id) == {} and env.shown(job_id)["pub_args"] == ["http://127.0.0.1:9/"]
    assert_hidden(env.audit_text(job_id), URL_PASSWORD, "fresh-pass")
    with pytest.raises(ValidationError, match="stands for a stored one"):
        env.manager.update(job_id, {"pub_args": ["http://admin:***@127.0.0.1:9/"]}, "tester")


def test_a_run_gets_the_real_url_and_its_output_shows_the_masked_one(env):
    url = f"http://admin:{URL_PASSWORD}@127.0.0.1:9/hook"
    job_id = env.create(pub_args=[url, POSITIONAL])
    execution = env.run(job_id)
    assert RECEIVED[-1][0] == (url, POSITIONAL)
    assert "http://admin:***@127.0.0.1:9/hook" in execution["output"]
    assert_hidden(execution["output"], URL_PASSWORD, POSITIONAL)


# --------------------------------------------------------------------------- the webhook job


def test_webhook_secret_header_and_url_password_are_masked_and_sent(env):
    """Needs `secret_arguments = ("secret", "headers.*")` on jobs.webhook.WebhookJob."""
    with http_server((200,)) as hook:
        port = hook.server_address[1]
        url = f"http://hook-user:{URL_PASSWORD}@127.0.0.1:{port}/texium"
        job_id = env.create(
            WEBHOOK,
            [url],
            {"event": "done", "secret": "hmac-s3cret-key", "headers": {"X-Api-Key": "key-0a1b2c3d"}, "retries": 0},
        )
        shown = env.shown(job_id)
        assert shown["pub_args"] == [f"http://hook-user:***@127.0.0.1:{port}/texium"]
        assert shown["pub_kwargs"] == {"event": "done", "secret": "***", "headers": {"X-Api-Key": "***"}, "retries": 0}
        assert_hidden(env.stored_text(job_id), URL_PASSWORD, "hmac-s3cret-key", "key-0a1b2c3d")

        env.manager.update(job_id, {"pub_kwargs": {**shown["pub_kwargs"], "event": "again"}}, "tester")
        execution = env.run(job_id)
        assert execution["status"] == "completed", execution
        request = hook.requests[-1]
    headers = {k.lower(): v for k, v in request["headers"].items()}
    assert headers["x-api-key"] == "key-0a1b2c3d"
    assert (
        headers["x-texium-signature"]
        == "sha256=" + hmac.new(b"hmac-s3cret-key", request["body"], hashlib.sha256).hexdigest()
    )
    assert headers["authorization"].startswith("Basic ")  # the URL's real credentials
    assert json.loads(request["body"])["data"] == {"event": "again"}
    everything = env.stored_text(job_id) + env.audit_text(job_id) + json.dumps(execution, default=str)
    assert_hidden(everything, URL_PASSWORD, "hmac-s3cret-key", "key-0a1b2c3d")


def test_webhook_secrets_are_bound_to_the_scheme_host_and_port_they_were_given_for(env):
    """Whoever may edit a webhook job cannot point it at their own host and keep "***": the stored
    HMAC secret and headers would be sent there in clear."""
    with http_server((200,)) as hook:
        port = hook.server_address[1]
        job_id = env.create(
            WEBHOOK,
            [f"http://127.0.0.1:{port}/texium"],
            {"secret": "hmac-s3cret-key", "headers": {"Authorization": BEARER}, "retries": 0},
        )
        stored = env.secrets_of(job_id)
        kwargs = env.shown(job_id)["pub_kwargs"]
        assert kwargs == {"secret": "***", "headers": {"Authorization": "***"}, "retries": 0}

        for elsewhere in (
            f"http://attacker.example:{port}/texium",  # host
            f"http://127.0.0.1:{port + 1}/texium",  # port
            f"https://127.0.0.1:{port}/texium",  # scheme
            "http://127.0.0.1/texium",  # the default port is another port
        ):
            with pytest.raises(ValidationError) as refused:
                env.manager.update(job_id, {"pub_args": [elsewhere], "pub_kwargs": kwargs}, "tester")
            message = str(refused.value)
            assert "enter the secret again" in message and "pub_args[0]" in message, message
            assert message.startswith("Invalid field pub_kwargs.secret") or "headers.Authorization" in message
            with pytest.raises(ValidationError, match="enter the secret again"):  # a header alone: the same
                env.manager.update(
                    job_id, {"pub_args": [elsewhere], "pub_kwargs": {"headers": {"Authorization": "***"}}}, "tester"
                )
            assert env.secrets_of(job_id) == stored and env.shown(job_id)["pub_args"] == [
                f"http://127.0.0.1:{port}/texium"
            ]

        # Changing the class is changing where the secrets go, too.
        with pytest.raises(ValidationError, match="enter the secret again"):
            env.manager.update(job_id, {"job_class_string": "jobs.echo.EchoJob"}, "tester")

        # The same destination (another path, the host spelled in capitals) keeps them.
        env.manager.update(job_id, {"pub_args": [f"HTTP://127.0.0.1:{port}/other"], "pub_kwargs": kwargs}, "tester")
        assert env.secrets_of(job_id) == stored
        execution = env.run(job_id)
        assert execution["status"] == "completed", execution
        request = hook.requests[-1]
        assert request["path"] == "/other" and request["headers"]["Authorization"] == BEARER

    # A new destination with the secrets entered again is fine.
    new_kwargs = {"secret": "new-hmac-key", "headers": {"Authorization": "***"}, "retries": 0}
    with pytest.raises(ValidationError, match=r"headers\.Authorization.*enter the secret again"):
        env.manager.update(job_id, {"pub_args": ["https://hooks.example.org/x"], "pub_kwargs": new_kwargs}, "tester")
    new_kwargs["headers"] = {"Authorization": "Bearer new"}
    env.manager.update(job_id, {"pub_args": ["https://hooks.example.org/x"], "pub_kwargs": new_kwargs}, "tester")
    assert env.secrets_of(job_id) == {
        ("pub_kwargs", "secret"): "new-hmac-key",
        ("pub_kwargs", "headers", "Authorization"): "Bearer new",
    }


# --------------------------------------------------------------------------- jobs stored before


def test_jobs_stored_in_clear_before_are_sealed_at_start(env):
    now = utcnow()
    job_id = env.ds.jobs.insert(
        {
            "user_id": env.user_id,
            "job_class_string": SECRET_JOB,
            "name": "old",
            "pub_args": [f"http://a:{URL_PASSWORD}@example.org/"],
            "pub_kwargs": {"token": TOKEN},
            "is_enabled": False,
            "is_paused": False,
            "created_at": now,
            "updated_at": now,
            "next_run_time": None,
        }
    )
    plain_id = env.ds.jobs.insert(
        {
            "user_id": env.user_id,
            "job_class_string": SECRET_JOB,
            "name": "plain",
            "pub_args": [],
            "pub_kwargs": {},
            "updated_at": now,
        }
    )
    assert env.manager.seal_stored_secrets() == 1
    assert env.shown(job_id)["pub_kwargs"] == {"token": "***"}
    assert env.shown(job_id)["pub_args"] == ["http://a:***@example.org/"]
    assert_hidden(env.stored_text(job_id), TOKEN, URL_PASSWORD)
    assert env.ds.jobs.get(plain_id)[secret_args.FIELD] == ""
    assert env.manager.seal_stored_secrets() == 0
    env.run(job_id)
    assert RECEIVED[-1] == ((f"http://a:{URL_PASSWORD}@example.org/",), {"token": TOKEN})


# --------------------------------------------------------------------------- servers


def test_server_instance_url_credentials_are_masked_and_kept(env):
    body = {
        "user_id": env.user_id,
        "name": "web",
        "hostname": "127.0.0.1",
        "port": 80,
        "instance_url": f"http://admin:{URL_PASSWORD}@127.0.0.1/status",
        "username": "admin",
        "password": "server-pass-1",
    }
    server_id, _ = env.servers.create(body)
    shown = env.servers.get(server_id)
    assert shown["instance_url"] == "http://admin:***@127.0.0.1/status"
    assert "instance_url_encrypted" not in shown and "password_encrypted" not in shown
    listed = env.servers.list(None, 100, 0).items
    assert_hidden(json.dumps([shown, *listed], default=str), URL_PASSWORD, "server-pass-1")
    stored = env.ds.servers.get(server_id)
    assert_hidden(json.dumps(stored, default=str), URL_PASSWORD, "server-pass-1")
    assert env.servers.instance_url(stored) == body["instance_url"]

    env.servers.update(server_id, {"instance_url": "http://admin:***@127.0.0.1/health"})
    assert env.servers.instance_url(env.ds.servers.get(server_id)) == f"http://admin:{URL_PASSWORD}@127.0.0.1/health"
    with pytest.raises(ValidationError, match="same scheme, user, host and port"):
        env.servers.update(server_id, {"instance_url": "http://admin:***@evil.example/"})
    env.servers.update(server_id, {"instance_url": "http://admin:other-pw@127.0.0.1/"})
    assert env.servers.instance_url(env.ds.servers.get(server_id)) == "http://admin:other-pw@127.0.0.1/"
    env.servers.update(server_id, {"instance_url": ""})
    assert (
        env.servers.get(server_id)["instance_url"] == ""
        and env.ds.servers.get(server_id)["instance_url_encrypted"] is None
    )
    with pytest.raises(ValidationError, match="stands for a stored one"):
        env.servers.create({**body, "instance_url": "http://admin:***@127.0.0.1/"})


def test_server_urls_stored_in_clear_before_are_masked_and_sealed(env):
    server_id = env.ds.servers.insert(
        {"user_id": env.user_id, "name": "old", "instance_url": f"https://a:{URL_PASSWORD}@h.example/"}
    )
    assert env.servers.get(server_id)["instance_url"] == "https://a:***@h.example/"
    assert env.servers.seal_stored_urls() == 1
    assert_hidden(json.dumps(env.ds.servers.get(server_id), default=str), URL_PASSWORD)
    assert env.servers.instance_url(env.ds.servers.get(server_id)) == f"https://a:{URL_PASSWORD}@h.example/"


# --------------------------------------------------------------------------- declarations and pieces


def test_declarations():
    assert secret_args.parse_declaration(("secret", "headers.*", "args.0", "kwargs.args")) == (
        ("pub_kwargs", "secret"),
        ("pub_kwargs", "headers", "*"),
        ("pub_args", "0"),
        ("pub_kwargs", "args"),
    )
    assert secret_args.parse_declaration("secret") == (("pub_kwargs", "secret"),)

    class BadDeclaration(JobBase):
        secret_arguments = ("ok", 3)

    with pytest.raises(ValueError, match=r"BadDeclaration.secret_arguments: 3 is not an argument path"):
        JobRegistry()._add(BadDeclaration)
    assert JobRegistry().secret_arguments("jobs.echo.EchoJob") == ()
    assert JobRegistry().secret_arguments("no.such.Job") == ()
    # Header names match whatever their case.
    _, kwargs, secrets = secret_args.seal(
        [], {"headers": {"authorization": "x-y-z-1"}}, [("pub_kwargs", "headers", "Authorization")]
    )
    assert kwargs == {"headers": {"authorization": "***"}} and secrets == {
        ("pub_kwargs", "headers", "authorization"): "x-y-z-1"
    }


def test_masking_forms():
    values = secret_args.searched_values({("pub_args", 0): "http://u:p%40ss-word@h/", ("pub_kwargs", "k"): "ab"})
    text = "GET http://u:p%40ss-word@h/ pass p@ss-word encoded p%40ss-word ab"
    assert secret_args.redact(text, values) == "GET http://u:***@h/ pass *** encoded *** ab"
    assert secret_args.mask_url("https://user:pw@host:8443/x?y=1") == "https://user:***@host:8443/x?y=1"
    assert secret_args.mask_url("https://user@host/") == "https://user@host/"
    assert secret_args.mask_url("ftp://user:pw@host/") == "ftp://user:pw@host/"
    cut = secret_args.redact("output ends with tok-3f9", secret_args.searched_values({("x",): TOKEN}), truncated=True)
    assert cut == "output ends with "


# --------------------------------------------------------------------------- through the HTTP API


@pytest.fixture
def app(tmp_path, monkeypatch):
    """The application as the server builds it (mongomock), the runner given the server's key:
    what context.py's wiring does (the partial also works once it does)."""
    import functools

    from texium.config import load_settings
    from texium.server import context as context_module
    from texium.server.app import make_app

    key = Fernet.generate_key().decode()
    box = SecretBox(key.encode())
    monkeypatch.setattr(context_module, "JobRunner", functools.partial(JobRunner, secrets=box))
    environ = {"MONGO_URI": "mongomock://", "DATA_DIR": str(tmp_path), "SECRET_KEY": key, "AUTH_MODE": "off"}
    settings = load_settings(environ, environ={}, cwd=str(tmp_path))
    ctx = context_module.build_context(settings)
    ctx.scheduler.start()
    yield make_app(ctx)
    ctx.close(1)


@pytest.mark.gen_test
async def test_the_api_serves_masks_and_keeps_secrets(http_client, base_url):
    async def call(path, method="GET", body=None):
        response = await http_client.fetch(
            base_url + path, method=method, body=None if body is None else json.dumps(body), raise_error=False
        )
        return response.code, response.body.decode()

    code, text = await call("/api/users/", "POST", {"name": "A", "email": "a@example.org"})
    assert code == 201, text
    user_id = json.loads(text)["user_id"]
    url = f"http://hook:{URL_PASSWORD}@127.0.0.1:9/"
    job = {"user_id": user_id, "job_class_string": WEBHOOK, "name": "hook", "pub_args": [url], "is_enabled": False}
    job["pub_kwargs"] = {"secret": "hmac-s3cret-key", "headers": {"Authorization": BEARER}}
    code, text = await call("/api/scheduler/jobs", "POST", job)
    assert code == 201, text
    job_id = json.loads(text)["job_id"]
    code, text = await call(f"/api/scheduler/jobs/{job_id}")
    assert code == 200, text
    shown = json.loads(text)["data"]
    assert shown["pub_args"] == ["http://hook:***@127.0.0.1:9/"]
    assert shown["pub_kwargs"] == {"secret": "***", "headers": {"Authorization": "***"}}
    code, text = await call(f"/api/scheduler/jobs/{job_id}", "PUT", {"pub_kwargs": shown["pub_kwargs"], "name": "h2"})
    assert code == 200, text
    code, text = await call(f"/api/scheduler/jobs/{job_id}", "PUT", {"pub_kwargs": {"secret": "***", "x": "***"}})
    assert code == 200, text  # x is not secret: a plain "***"
    evil = ["http://hook:***@evil.example/"]
    code, text = await call(f"/api/scheduler/jobs/{job_id}", "PUT", {"pub_args": evil})
    assert code == 400 and "enter the secret again" in json.loads(text)["detail"]  # the stored HMAC secret
    code, text = await call(f"/api/scheduler/jobs/{job_id}", "PUT", {"pub_args": evil, "pub_kwargs": {"secret": "s2"}})
    assert code == 400 and "same scheme, user, host and port" in text  # the URL's password
    served = ""
    for path in (
        f"/api/scheduler/jobs/{job_id}",
        "/api/scheduler/jobs",
        f"/api/scheduler/users/{user_id}/jobs",
        f"/api/scheduler/audit-logs?job_id={job_id}",
    ):
        code, text = await call(path)
        assert code == 200, (path, text)
        assert secret_args.FIELD not in text, path
        served += text
    assert_hidden(served, URL_PASSWORD, "hmac-s3cret-key", BEARER)
    assert "secret pub_kwargs.headers.Authorization removed" in served

    server = {"user_id": user_id, "name": "web", "hostname": "127.0.0.1", "instance_url": url, "password": "pw-1234"}
    code, text = await call("/api/servers/create", "POST", server)
    assert code == 201, text
    server_id = json.loads(text)["server_id"]
    code, text = await call(f"/api/servers/{server_id}", "PUT", {"instance_url": "http://hook:***@127.0.0.1:9/x"})
    assert code == 200, text
    served = ""
    for path in (f"/api/servers/{server_id}", "/api/servers", f"/api/servers/user/{user_id}"):
        code, text = await call(path)
        assert code == 200, (path, text)
        assert "instance_url_encrypted" not in text and "password_encrypted" not in text
        served += text
    assert "http://hook:***@127.0.0.1:9/x" in served
    assert_hidden(served, URL_PASSWORD, "pw-1234")
