"""Per-job failure alerts (texium.core.events.alerts) against real peers: a loopback SMTP server and
loopback HTTP receivers, on both stores (the `datastore` fixture: SQLite and mongomock)."""

from __future__ import annotations

import contextlib
import email
import email.policy
import hashlib
import hmac
import http.server
import json
import logging
import socket
import threading
import time
from datetime import timedelta

import pytest

from tests.jobs_fixtures import closed_port, http_server, smtp_server
from texium.core.events import channels as channels_module
from texium.core.events.alerts import EVENTS, Alerts, transition
from texium.core.events.channels import Deliveries, Sender
from texium.core.metrics import Metrics
from texium.core.records.legacy_notify import LegacyNotify
from texium.core.security.outbound import OutboundPolicy
from texium.core.timeutil import utcnow

LOOPBACK = OutboundPolicy.from_settings("127.0.0.1/32")  # loopback is refused by default
PUBLIC_URL = "http://127.0.0.1:8888"
STATES = (None, "ok", "failing", "missed")
STATUSES = ("completed", "failed", "abandoned", "timeout", "missed", "cancelled", "skipped", "retried", "running")


def smtp_config(port: int, **extra) -> dict:
    return {
        "SMTP_HOST": "127.0.0.1",
        "SMTP_PORT": port,
        "SMTP_FROM": "texium@example.org",
        "PUBLIC_URL": PUBLIC_URL,
        **extra,
    }


@pytest.fixture
def make_alerts(datastore):
    """Alerts on the test store that record into its executions, delivering through channels
    (a notify's e-mail and webhook become channels, as the server does); all stopped at the end."""
    made = []

    def make(config, metrics=None, store=None):
        def record(execution_id, fields):
            datastore.executions.update_many({"_id": execution_id}, fields)

        sender = Sender(config, LOOPBACK, attempts=3, backoff=0.05, webhook_secret=config.get("ALERT_WEBHOOK_SECRET"))
        deliveries = Deliveries(datastore, sender, lambda channel: None, config.get("PUBLIC_URL", ""), metrics)
        legacy = LegacyNotify(datastore)
        alerts = Alerts(
            store or datastore,
            record,
            metrics,
            channels=deliveries,
            legacy=lambda job: legacy.convert(job.get("notify"), job["user_id"], enforce=False).notify,
        )
        made.append(alerts)
        return alerts

    yield make
    for alerts in made:
        alerts.stop(5)


def add_job(datastore, notify, name="Nightly backup") -> str:
    now = utcnow()
    job = {
        "name": name,
        "job_class_string": "jobs.echo.EchoJob",
        "user_id": "0123456789abcdef01234567",
        "pub_args": ["arg-s3cret"],
        "notify": notify,
        "created_at": now,
        "updated_at": now,
    }
    return datastore.jobs.insert(job)


def stale(datastore, job_id: str) -> dict:
    """The job document as a run read it (the alerts must not trust its alert_state)."""
    return datastore.jobs.get(job_id)


def add_execution(datastore, job_id: str, status: str, error: str = "", completed_at=None) -> dict:
    start = utcnow() if completed_at is None else completed_at - timedelta(milliseconds=1500)
    execution = {
        "job_id": job_id,
        "job_name": "Nightly backup",
        "status": status,
        "error": error,
        "output": "output-s3cret",
        "scheduled_at": start - timedelta(seconds=1),
        "started_at": start,
        "completed_at": start + timedelta(milliseconds=1500),
        "duration_ms": 1500,
        "attempt": 1,
        "retry_of": None,
    }
    if status == "missed":  # a missed record names the occurrences it stands for, the last one just now
        execution["missed_until"] = execution["completed_at"]
    execution["_id"] = datastore.executions.insert(dict(execution))
    return execution


def notify(email_to=(), webhook=None, events=EVENTS) -> dict:
    return {"email": list(email_to), "webhook": webhook, "events": list(events)}


# --------------------------------------------------------------------------- the state machine


def test_transition_table():
    expected = {  # status -> {previous state: (new state, event)}
        "completed": {"ok": ("ok", None), "failing": ("ok", "recovery"), "missed": ("ok", None)},
        "failed": {"ok": ("failing", "failure"), "failing": ("failing", None), "missed": ("failing", "failure")},
        "abandoned": {"ok": ("failing", "failure"), "failing": ("failing", None), "missed": ("failing", "failure")},
        "timeout": {"ok": ("failing", "timeout"), "failing": ("failing", None), "missed": ("failing", "timeout")},
        "missed": {"ok": ("missed", "missed"), "failing": ("missed", "missed"), "missed": ("missed", None)},
    }
    for status in STATUSES + ("scheduled",):
        for state in STATES:
            unchanged = (state or "ok", None)
            assert transition(state, status) == expected.get(status, {}).get(state or "ok", unchanged), (state, status)


# --------------------------------------------------------------------------- delivery


def test_failing_three_times_then_recovering_alerts_twice_on_both_channels(datastore, make_alerts):
    metrics = Metrics()
    with smtp_server() as (handler, port), http_server([200]) as web:
        job_id = add_job(datastore, notify(["ops@example.com", "dev@example.com"], web.url + "/hook"))
        alerts = make_alerts(smtp_config(port), metrics)
        error = "\n".join(f"line {n}" for n in range(1, 31))
        runs = [add_execution(datastore, job_id, "failed", error) for _ in range(3)]
        runs.append(add_execution(datastore, job_id, "completed"))
        for run in runs:
            alerts.observe(stale(datastore, job_id), run)
        assert alerts.stop(5)

    assert [m["rcpt_tos"] for m in handler.messages] == [["ops@example.com", "dev@example.com"]] * 2
    mails = [email.message_from_bytes(m["content"], policy=email.policy.default) for m in handler.messages]
    assert [m["Subject"] for m in mails] == [
        "[Texium] Job failing: Nightly backup",
        "[Texium] Job recovered: Nightly backup",
    ]
    text = mails[0].get_content()
    assert f"{PUBLIC_URL}/#/executions/{runs[0]['_id']}" in text and job_id in text
    assert "line 20" in text and "line 21" not in text and "+00:00" in text and "1500 ms" in text
    assert "s3cret" not in text

    assert [r["headers"]["X-Texium-Event"] for r in web.requests] == ["failure", "recovery"]
    first = web.requests[0]
    assert first["headers"]["Content-Type"] == "application/json" and first["path"] == "/hook"
    assert first["headers"]["User-Agent"] == "Texium-Alerts/1"
    assert first["headers"]["X-Texium-Execution"] == runs[0]["_id"]
    assert "X-Texium-Signature" not in first["headers"]
    body = json.loads(first["body"])
    assert body["event"] == "failure" and body["link"] == f"{PUBLIC_URL}/#/executions/{runs[0]['_id']}"
    assert body["job"] == {"id": job_id, "name": "Nightly backup", "job_class_string": "jobs.echo.EchoJob"}
    assert body["execution"]["status"] == "failed" and body["execution"]["duration_ms"] == 1500
    assert body["execution"]["error"] == "\n".join(f"line {n}" for n in range(1, 21))
    assert body["execution"]["started_at"].endswith("+00:00") and body["timestamp"].endswith("+00:00")
    assert b"s3cret" not in first["body"]

    assert datastore.jobs.get(job_id)["alert_state"] == "ok"
    recorded = [datastore.executions.get(run["_id"]).get("alerts") for run in runs]
    assert recorded[1] is None and recorded[2] is None
    for entries, event in ((recorded[0], "failure"), (recorded[3], "recovery")):
        entries = sorted(entries, key=lambda a: a["channel"])  # each channel's worker adds its own when done
        assert [(a["event"], a["channel"], a["ok"], a["error"]) for a in entries] == [
            (event, "email", True, ""),
            (event, "webhook", True, ""),
        ]
        assert entries[0]["target"] == "ops@example.com, dev@example.com"
        assert entries[1]["target"] == "webhook " + web.url  # the channel made from the URL: named by its host
    assert alerts.stats() == {
        "sent": 4,
        "failed": 0,
        "muted": 0,
        "queued": 0,
        "last_failure": "",
        "last_failure_at": None,
    }
    sample = metrics.registry.get_sample_value
    assert sample("texium_alerts_total", {"channel": "webhook", "event": "recovery", "outcome": "sent"}) == 1


def test_only_the_events_listed_are_sent(datastore, make_alerts):
    with http_server([200]) as web:
        recovery_only = add_job(datastore, notify(webhook=web.url, events=["recovery"]), name="R")
        timeout_only = add_job(datastore, notify(webhook=web.url, events=["timeout"]), name="T")
        silent = add_job(datastore, None, name="S")
        alerts = make_alerts({"PUBLIC_URL": PUBLIC_URL})
        for job_id in (recovery_only, timeout_only, silent):
            for status in ("failed", "completed", "timeout", "missed", "cancelled"):
                alerts.observe(stale(datastore, job_id), add_execution(datastore, job_id, status))
        assert alerts.stop(5)
    sent = [(json.loads(r["body"])["job"]["name"], r["headers"]["X-Texium-Event"]) for r in web.requests]
    assert sent == [("R", "recovery"), ("T", "timeout")]
    # The state is kept whatever is notified: the last one moved it to "missed" (cancelled says nothing).
    assert {datastore.jobs.get(j)["alert_state"] for j in (recovery_only, timeout_only, silent)} == {"missed"}


def test_webhook_signature_verifies(datastore, make_alerts):
    with http_server([200]) as web:
        job_id = add_job(datastore, notify(webhook=web.url + "/signed"))
        alerts = make_alerts({"PUBLIC_URL": PUBLIC_URL, "ALERT_WEBHOOK_SECRET": "shh"})
        run = add_execution(datastore, job_id, "abandoned")
        alerts.observe(stale(datastore, job_id), run)
        assert alerts.stop(5)
    (request,) = web.requests
    expected = "sha256=" + hmac.new(b"shh", request["body"], hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request["headers"]["X-Texium-Signature"], expected)
    (entry,) = datastore.executions.get(run["_id"])["alerts"]
    assert entry["ok"] and entry["target"] == "webhook " + web.url  # the channel made from it: named by its host


def test_webhook_retries_5xx_and_not_4xx(datastore, make_alerts):
    with http_server([500, 500, 200]) as flaky, http_server([404]) as gone:
        retried = add_job(datastore, notify(webhook=flaky.url), name="Flaky")
        refused = add_job(datastore, notify(webhook=gone.url), name="Gone")
        alerts = make_alerts({})
        ok_run, bad_run = add_execution(datastore, retried, "failed"), add_execution(datastore, refused, "failed")
        alerts.observe(stale(datastore, retried), ok_run)
        alerts.observe(stale(datastore, refused), bad_run)
        assert alerts.stop(5)
    assert len(flaky.requests) == 3 and len(gone.requests) == 1
    assert datastore.executions.get(ok_run["_id"])["alerts"][0]["ok"] is True
    (entry,) = datastore.executions.get(bad_run["_id"])["alerts"]
    assert entry["ok"] is False and "HTTP 404" in entry["error"]
    assert alerts.stats()["sent"] == 1 and alerts.stats()["failed"] == 1


@contextlib.contextmanager
def hanging_up_smtp():
    """A port that accepts connections and closes them at once; yields (port, connection count)."""
    server = socket.create_server(("127.0.0.1", 0))
    accepted = []

    def serve():
        with contextlib.suppress(OSError):
            while True:
                conn, _ = server.accept()
                accepted.append(1)
                conn.close()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield server.getsockname()[1], accepted
    finally:
        server.close()


def test_unreachable_smtp_is_logged_counted_and_recorded(datastore, make_alerts, caplog):
    login = {"SMTP_USERNAME": "mailer", "SMTP_PASSWORD": "pw-s3cret", "SMTP_ALLOW_PLAINTEXT_LOGIN": True}
    job_id = add_job(datastore, notify(["ops@example.com"]))
    run = add_execution(datastore, job_id, "timeout")
    with caplog.at_level(logging.WARNING, logger="texium.channels"):
        alerts = make_alerts(smtp_config(closed_port(), **login))
        alerts.observe(stale(datastore, job_id), run)
        assert alerts.stop(5)
    (line,) = [r.getMessage() for r in caplog.records if r.name == "texium.channels"]
    assert "'Nightly backup'" in line and "timeout" in line and "email" in line and "cannot reach" in line
    assert "pw-s3cret" not in caplog.text
    stats = alerts.stats()
    assert stats["failed"] == 1 and stats["sent"] == 0 and "cannot reach" in stats["last_failure"]
    assert stats["last_failure_at"] is not None
    (entry,) = datastore.executions.get(run["_id"])["alerts"]
    assert entry["ok"] is False and entry["channel"] == "email" and "cannot reach" in entry["error"]

    # A server that hangs up is a connection error too: tried `attempts` (3) times.
    with hanging_up_smtp() as (port, accepted):
        other = add_job(datastore, notify(["ops@example.com"]), name="Other")
        alerts = make_alerts(smtp_config(port))
        alerts.observe(stale(datastore, other), add_execution(datastore, other, "failed"))
        assert alerts.stop(5)
    assert len(accepted) == 3 and alerts.stats()["failed"] == 1


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        time.sleep(0.6)
        self.server.hits.append(self.headers["X-Texium-Event"])
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def test_observe_returns_at_once_while_delivery_hangs(datastore, make_alerts):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowHandler)
    server.daemon_threads, server.hits = True, []
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        job_id = add_job(datastore, notify(webhook=f"http://127.0.0.1:{server.server_address[1]}/"))
        alerts = make_alerts({})
        runs = [add_execution(datastore, job_id, s) for s in ("failed", "completed")]
        took = []
        for run in runs:
            started = time.monotonic()
            alerts.observe(stale(datastore, job_id), run)
            took.append(time.monotonic() - started)
            time.sleep(0.2)  # the first delivery is under way, waiting on the receiver
        # The delivery waits on the channel's worker: the alerts thread has nothing queued.
        assert max(took) < 0.1 and alerts.stats()["queued"] == 0
        assert alerts.stop(5)
    finally:
        server.shutdown()
        server.server_close()
    assert server.hits == ["failure", "recovery"]


def test_two_nodes_on_one_store_alert_once(datastore, make_alerts):
    with smtp_server() as (handler, port), http_server([200]) as web:
        job_id = add_job(datastore, notify(["ops@example.com"], web.url))
        nodes = [make_alerts(smtp_config(port)), make_alerts(smtp_config(port))]
        run = add_execution(datastore, job_id, "failed")
        for node in nodes:
            node.observe(stale(datastore, job_id), run)
        assert all(node.stop(5) for node in nodes)
    assert len(handler.messages) == 1 and len(web.requests) == 1
    assert sum(node.stats()["sent"] for node in nodes) == 2


def test_a_store_error_drops_one_observation_and_the_thread_goes_on(datastore, make_alerts, caplog):
    class FlakyStore:
        calls = 0

        @property
        def jobs(self):
            FlakyStore.calls += 1
            if FlakyStore.calls == 1:
                raise ConnectionError("store down")
            return datastore.jobs

        channels = datastore.channels

    with http_server([200]) as web:
        job_id = add_job(datastore, notify(webhook=web.url))
        with caplog.at_level(logging.WARNING, logger="texium.alerts"):
            alerts = make_alerts({}, store=FlakyStore())
            job = stale(datastore, job_id)
            alerts.observe(job, add_execution(datastore, job_id, "failed"))  # dropped
            gone = {**job, "_id": "0123456789abcdef01234567"}
            alerts.observe(gone, add_execution(datastore, job_id, "failed"))  # no such job
            alerts.observe(job, add_execution(datastore, job_id, "failed"))
            assert alerts.stop(5)
    assert "store down" in caplog.text and len(web.requests) == 1


# --------------------------------------------------------------------------- order


def test_alternating_outcomes_alert_on_every_change_from_a_stale_job_document(datastore, make_alerts):
    with http_server([200]) as web:
        job_id = add_job(datastore, notify(webhook=web.url))
        job = stale(datastore, job_id)  # alert_state as at the start, for every run (as a run reads it)
        alerts = make_alerts({})
        start = utcnow()
        statuses = ["failed" if n % 2 == 0 else "completed" for n in range(11)]
        runs = [
            add_execution(datastore, job_id, status, completed_at=start + timedelta(seconds=n))
            for n, status in enumerate(statuses)
        ]
        for run in runs:
            alerts.observe(job, run)
        assert alerts.stop(5)
    assert [r["headers"]["X-Texium-Event"] for r in web.requests] == ["failure", "recovery"] * 5 + ["failure"]
    assert [r["headers"]["X-Texium-Execution"] for r in web.requests] == [run["_id"] for run in runs]
    final = datastore.jobs.get(job_id)
    assert final["alert_state"] == "failing" and final["alert_seen_id"] == runs[-1]["_id"]


@pytest.mark.parametrize("notified", [True, False], ids=["notify", "no-notify"])
@pytest.mark.parametrize(
    ("start", "older", "newer"),
    [(None, "failed", "completed"), ("failing", "completed", "failed")],
    ids=["failure-then-success", "success-then-failure"],
)
def test_an_older_outcome_seen_last_by_another_node_changes_nothing(
    datastore, make_alerts, start, older, newer, notified
):
    with http_server([200]) as web:
        job_id = add_job(datastore, notify(webhook=web.url) if notified else None)
        datastore.jobs.update_many({"_id": job_id}, {"alert_state": start})
        job = stale(datastore, job_id)
        now = utcnow()
        old_run = add_execution(datastore, job_id, older, completed_at=now)
        new_run = add_execution(datastore, job_id, newer, completed_at=now + timedelta(milliseconds=50))
        first, second = make_alerts({}), make_alerts({})  # two nodes on one store
        first.observe(job, new_run)
        assert first.stop(5)
        second.observe(job, old_run)
        assert second.stop(5)
    assert web.requests == []  # the newer outcome is no change; the older one is history
    assert datastore.jobs.get(job_id)["alert_state"] == transition(start, newer)[0]
    assert datastore.executions.get(old_run["_id"]).get("alerts") is None


def test_missed_occurrences_recorded_after_a_newer_run_ended_send_nothing(datastore, make_alerts):
    """A run handed back by a server that stopped, found past its grace after the restart, is
    recorded missed after the job ran again: old news, not a second outage alert."""
    with http_server([200, 200, 200]) as web:
        job_id = add_job(datastore, notify(webhook=web.url, events=["missed", "failure"]))
        alerts = make_alerts({"PUBLIC_URL": PUBLIC_URL})
        outage = add_execution(datastore, job_id, "missed")
        ran = add_execution(datastore, job_id, "completed", completed_at=outage["completed_at"] + timedelta(seconds=2))
        late = add_execution(datastore, job_id, "missed", completed_at=ran["completed_at"] + timedelta(seconds=1))
        datastore.executions.update_many({"_id": late["_id"]}, {"missed_until": outage["completed_at"]})
        late["missed_until"] = outage["completed_at"]
        for execution in (outage, ran, late):
            alerts.observe(stale(datastore, job_id), execution)
        assert alerts.stop(5)
    assert [r["headers"]["X-Texium-Event"] for r in web.requests] == ["missed"]
    assert datastore.jobs.get(job_id)["alert_state"] == "ok"


def test_stopping_with_a_full_queue_on_a_hanging_channel_returns(datastore, monkeypatch):
    """stop() waits for room in a full queue while a worker counts its finished delivery: the two
    must not need the same lock (they did, and a server with a dead channel never stopped)."""
    monkeypatch.setattr(channels_module, "QUEUE_LIMIT", 2)
    server = socket.create_server(("127.0.0.1", 0))  # accepts (in the backlog), never answers
    try:
        sender = Sender({}, LOOPBACK, attempts=1, timeout=0.5)
        deliveries = Deliveries(datastore, sender, lambda channel: None)
        channel = {"_id": "0123456789abcdef01234568", "kind": "webhook", "name": "hanging"}
        channel["url"] = f"http://127.0.0.1:{server.getsockname()[1]}/"
        job = {"_id": "0123456789abcdef01234567", "name": "Nightly backup"}
        for n in range(4):  # one under way, then two queued (full), one refused at once
            deliveries.enqueue(channel, deliveries.message(job, "failure", {"_id": str(n), "status": "failed"}))
            time.sleep(0.1 if n == 0 else 0)  # the worker has taken the first one
        stopper = threading.Thread(target=deliveries.stop, daemon=True)
        stopper.start()
        stopper.join(5)
        assert not stopper.is_alive()
    finally:
        server.close()
