"""Alert channels (/api/scheduler/channels) against a live server and real local receivers that
check each vendor's payload: Slack blocks, a Teams Adaptive Card, Discord embeds, ntfy headers,
Telegram's method and chat id, PagerDuty trigger then resolve and Opsgenie create then close by
one key per job; secrets masked and bound to their destination; bad input a 400 naming the
field; a receiver that hangs delays neither another channel nor firing."""

from __future__ import annotations

import hashlib
import hmac
import http.server
import json
import threading
import time

import pytest

from tests.jobs_fixtures import http_server, smtp_server
from tests.server_process import SAMPLE_JOBS, wait_for

FLAKY = "tests.sample_jobs.operations.FlakyJob"
ECHO = "jobs.echo.EchoJob"
# Receivers listen on loopback (refused by default) over plain http (refused by default).
LOCAL = {**SAMPLE_JOBS, "TEXIUM_OUTBOUND_ALLOW": "127.0.0.1/32", "TEXIUM_CHANNEL_HTTPS_ONLY": "false"}
ROUTING_KEY = "R0UTINGKEY-very-secret-0123456789"
GENIE_KEY = "genie-key-very-secret-0123"
BOT_TOKEN = "123456:bot-token-very-secret"


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    """A server that may send to loopback over http (the receivers), with the sample jobs."""
    from tests.server_process import ServerProcess

    process = ServerProcess("sqlite", tmp_path_factory.mktemp("channels") / "data", env=LOCAL).start()
    yield process
    process.stop()


@pytest.fixture
def receiver():
    with http_server(statuses=(202,)) as server:
        yield server


def create(api, owner, **fields) -> str:
    response = api.post("/api/scheduler/channels", json={"user_id": owner, "name": fields["kind"], **fields})
    assert response.status_code == 201, response.text
    return response.json()["channel_id"]


def sent(receiver, count=1, timeout=15.0) -> list[dict]:
    assert wait_for(lambda: len(receiver.requests) >= count, timeout=timeout), receiver.requests
    return receiver.requests


def test_each_kind_speaks_its_vendor_s_payload(local, receiver):
    api = local.api
    owner = api.create_user()
    base = receiver.url
    kinds = {
        "slack": {"url": f"{base}/services/T000/B000/slacksecret"},
        "teams": {"url": f"{base}/workflows/teamssecret/triggers/manual/paths/invoke"},
        "discord": {"url": f"{base}/api/webhooks/1/discordsecret"},
        "ntfy": {"url": base, "topic": "backups", "secret": "tk_ntfytoken", "priority": 5, "tags": ["prod"]},
        "telegram": {"url": base, "secret": BOT_TOKEN, "chat_id": "-1001234"},
        "pagerduty": {"url": base, "secret": ROUTING_KEY},
        "opsgenie": {"url": base, "secret": GENIE_KEY},
        "webhook": {"url": f"{base}/hook", "secret": "signing-secret"},
    }
    for kind, fields in kinds.items():
        channel_id = create(api, owner, kind=kind, **fields)
        before = len(receiver.requests)
        response = api.post(f"/api/scheduler/channels/{channel_id}/test")
        assert response.status_code == 200, response.text
        assert response.json()["message"] == "Test message sent", response.text
        delivery = response.json()["delivery"]
        assert delivery["ok"] is True and delivery["status_code"] == 202 and delivery["event"] == "test"
        request = receiver.requests[before]
        assert request["method"] == "POST"
        body = request["body"]
        headers = {k.lower(): v for k, v in request["headers"].items()}
        if kind == "slack":
            assert request["path"] == "/services/T000/B000/slacksecret"
            payload = json.loads(body)
            assert [b["type"] for b in payload["blocks"]][:2] == ["header", "section"]
            assert payload["blocks"][0]["text"]["type"] == "plain_text" and payload["text"]
        elif kind == "teams":
            payload = json.loads(body)
            assert payload["type"] == "message"
            attachment = payload["attachments"][0]
            assert attachment["contentType"] == "application/vnd.microsoft.card.adaptive"
            card = attachment["content"]
            assert card["type"] == "AdaptiveCard" and card["version"] and card["body"][0]["type"] == "TextBlock"
        elif kind == "discord":
            embed = json.loads(body)["embeds"][0]
            assert embed["title"].startswith("Test message") and isinstance(embed["color"], int) and embed["fields"]
        elif kind == "ntfy":
            assert request["path"] == "/backups"
            assert headers["priority"] == "5" and headers["tags"].split(",")[0] == "prod"
            assert headers["authorization"] == "Bearer tk_ntfytoken" and headers["title"].startswith("Test message")
            assert body.decode().startswith("Test message")
        elif kind == "telegram":
            assert request["path"] == f"/bot{BOT_TOKEN}/sendMessage"
            payload = json.loads(body)
            assert payload["chat_id"] == "-1001234" and payload["text"].startswith("Test message")
        elif kind == "pagerduty":
            assert request["path"] == "/v2/enqueue"
            payload = json.loads(body)
            assert payload["routing_key"] == ROUTING_KEY and payload["event_action"] == "trigger"
            assert payload["payload"]["severity"] in ("critical", "error", "warning", "info")
            assert payload["payload"]["summary"] and payload["payload"]["source"]
        elif kind == "opsgenie":
            assert request["path"] == "/v2/alerts"
            assert headers["authorization"] == f"GenieKey {GENIE_KEY}"
            payload = json.loads(body)
            assert payload["message"] and payload["alias"].startswith("texium-")
        elif kind == "webhook":  # signed with the channel's own secret, like WebhookJob
            expected = hmac.new(b"signing-secret", body, hashlib.sha256).hexdigest()
            assert headers["x-texium-signature"] == f"sha256={expected}" and json.loads(body)["event"] == "test"
        deliveries = api.get(f"/api/scheduler/channels/{channel_id}/deliveries").json()
        assert deliveries["total"] == 1 and deliveries["data"][0]["ok"] is True
    for secret in (ROUTING_KEY, GENIE_KEY, BOT_TOKEN, "slacksecret", "teamssecret", "discordsecret", "tk_ntfytoken"):
        assert secret not in local.log()


def test_pagerduty_and_opsgenie_open_on_failure_and_resolve_on_recovery_by_one_key(local, receiver, tmp_path):
    api = local.api
    owner = api.create_user()
    pagerduty = create(api, owner, kind="pagerduty", url=receiver.url, secret=ROUTING_KEY)
    opsgenie = create(api, owner, kind="opsgenie", url=receiver.url, secret=GENIE_KEY)
    events = ["failure", "recovery"]
    job_id = api.create_job(
        owner,
        job_class_string=FLAKY,
        minute="0",
        hour="3",
        pub_args=[str(tmp_path / "runs")],
        pub_kwargs={"failures": 1},
        notify={"channels": [{"id": pagerduty, "events": events}, {"id": opsgenie, "events": events}]},
    )
    first = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    assert api.wait_execution(first)["status"] == "failed"
    opened = sent(receiver, 2)
    second = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    assert api.wait_execution(second)["status"] == "completed"
    closed = sent(receiver, 4)[2:]
    by_path = {r["path"]: json.loads(r["body"]) for r in opened + closed}
    key = f"texium-job-{job_id}"
    trigger = [json.loads(r["body"]) for r in opened if r["path"] == "/v2/enqueue"][0]
    resolve = [json.loads(r["body"]) for r in closed if r["path"] == "/v2/enqueue"][0]
    assert (trigger["event_action"], trigger["dedup_key"]) == ("trigger", key)
    assert (resolve["event_action"], resolve["dedup_key"], resolve["routing_key"]) == ("resolve", key, ROUTING_KEY)
    assert by_path["/v2/alerts"]["alias"] == key
    assert f"/v2/alerts/{key}/close?identifierType=alias" in by_path
    # the execution shows its channel deliveries, and so does each channel
    alerts = wait_for(lambda: api.get(f"/api/scheduler/executions/{first}").json()["data"].get("alerts"))
    assert alerts, "no alerts recorded on the execution"
    alerts = api.get(f"/api/scheduler/executions/{first}").json()["data"]["alerts"]
    assert sorted((a["channel"], a["event"], a["ok"]) for a in alerts) == [
        ("opsgenie", "failure", True),
        ("pagerduty", "failure", True),
    ]
    deliveries = api.get(f"/api/scheduler/channels/{pagerduty}/deliveries").json()["data"]
    assert [(d["event"], d["status_code"], d["execution_id"]) for d in deliveries] == [
        ("recovery", 202, second),
        ("failure", 202, first),
    ]


def test_secrets_are_masked_and_bound_to_their_destination(local, receiver):
    api = local.api
    owner = api.create_user()
    pagerduty = create(api, owner, kind="pagerduty", url=receiver.url, secret=ROUTING_KEY)
    slack = create(api, owner, kind="slack", url=f"{receiver.url}/services/T/B/slacksecret")
    shown = api.get(f"/api/scheduler/channels/{pagerduty}").json()["data"]
    assert shown["secret"] == "***" and shown["has_secret"] is True and "secret_encrypted" not in shown
    shown_slack = api.get(f"/api/scheduler/channels/{slack}").json()["data"]
    assert shown_slack["url"] == f"{receiver.url}/***" and shown_slack["secret"] is None
    listed = api.get("/api/scheduler/channels").text
    assert ROUTING_KEY not in listed and "slacksecret" not in listed and "secret_encrypted" not in listed
    # another host with the stored key: refused, naming secret
    moved = api.put(f"/api/scheduler/channels/{pagerduty}", json={"url": "http://127.0.0.2:9", "secret": "***"})
    assert moved.status_code == 400 and "secret" in moved.json()["detail"], moved.text
    moved = api.put(f"/api/scheduler/channels/{pagerduty}", json={"url": "http://127.0.0.2:9"})
    assert moved.status_code == 400 and "secret" in moved.json()["detail"], moved.text
    # the same place with *** keeps the key; the masked Slack URL sent back keeps the URL
    assert api.put(f"/api/scheduler/channels/{pagerduty}", json={"url": receiver.url, "secret": "***"}).ok
    patched = api.patch(f"/api/scheduler/channels/{slack}", json={"url": shown_slack["url"], "name": "s2"})
    assert patched.ok, patched.text
    half = api.put(f"/api/scheduler/channels/{slack}", json={"url": "http://127.0.0.2:9/***"})
    assert half.status_code == 400 and "url" in half.json()["detail"]
    assert api.post(f"/api/scheduler/channels/{pagerduty}/test").json()["delivery"]["ok"]
    assert api.post(f"/api/scheduler/channels/{slack}/test").json()["delivery"]["ok"]
    assert json.loads(receiver.requests[-2]["body"])["routing_key"] == ROUTING_KEY
    assert receiver.requests[-1]["path"] == "/services/T/B/slacksecret"
    # the test button is not a spam tap: one test per channel in 10 s
    again = api.post(f"/api/scheduler/channels/{slack}/test")
    assert again.status_code == 429 and set(again.json()) == {"detail"}, again.text
    assert len(receiver.requests) == 2


@pytest.mark.parametrize(
    "body, field",
    [
        ({"kind": "sms", "url": "https://example.com/"}, "kind"),
        ({"kind": "telegram", "secret": "t"}, "chat_id"),
        ({"kind": "pagerduty"}, "secret"),
        ({"kind": "slack", "url": "http://hooks.slack.com/services/T/B/x"}, "url"),  # https only by default
        ({"kind": "slack", "url": "https://hooks.slack.com/services/T/B/x", "topic": "t"}, "topic"),
        ({"kind": "email", "recipients": ["not an address"]}, "recipients[0]"),
        ({"kind": "webhook", "url": "https://user:pw@example.com/"}, "url"),
    ],
)
def test_bad_channels_are_a_400_naming_the_field(api, body, field):
    owner = api.create_user()
    response = api.post("/api/scheduler/channels", json={"user_id": owner, "name": "bad", **body})
    assert response.status_code == 400, response.text
    assert set(response.json()) == {"detail"} and field in response.json()["detail"], response.text


def test_a_job_names_only_channels_its_owner_may_use(api):
    owner, other = api.create_user(), api.create_user()
    theirs = create(api, other, kind="slack", url="https://hooks.slack.com/services/T/B/x")
    response = api.post(
        "/api/scheduler/jobs",
        json={
            "user_id": owner,
            "job_class_string": ECHO,
            "name": "e",
            "minute": "0",
            "hour": "3",
            "notify": {"channels": [{"id": theirs, "events": ["failure"]}]},
        },
    )
    assert response.status_code == 400 and "notify.channels[0].id" in response.json()["detail"], response.text
    mine = create(api, owner, kind="slack", url="https://hooks.slack.com/services/T/B/y")
    job_id = api.create_job(owner, minute="0", hour="3", notify={"channels": [{"id": mine, "events": ["failure"]}]})
    in_use = api.delete(f"/api/scheduler/channels/{mine}")
    assert in_use.status_code == 409 and job_id in in_use.json()["detail"]
    assert api.delete(f"/api/scheduler/jobs/{job_id}").ok
    assert api.delete(f"/api/scheduler/channels/{mine}").ok


class _Hang(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.server.hit.set()
        time.sleep(30)

    def log_message(self, *args):
        pass


def test_a_receiver_that_hangs_delays_neither_another_channel_nor_firing(local, receiver, tmp_path):
    hanging = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Hang)
    hanging.daemon_threads = True
    hanging.hit = threading.Event()
    threading.Thread(target=hanging.serve_forever, daemon=True).start()
    try:
        api = local.api
        owner = api.create_user()
        stuck = create(api, owner, kind="webhook", url=f"http://127.0.0.1:{hanging.server_address[1]}/")
        good = create(api, owner, kind="slack", url=f"{receiver.url}/services/T/B/good")
        events = ["failure"]
        job_id = api.create_job(
            owner,
            job_class_string=FLAKY,
            minute="0",
            hour="3",
            pub_args=[str(tmp_path / "runs")],
            pub_kwargs={"failures": 100},
            notify={"channels": [{"id": stuck, "events": events}, {"id": good, "events": events}]},
        )
        started = time.monotonic()
        failed = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
        assert api.wait_execution(failed)["status"] == "failed"
        assert hanging.hit.wait(10)
        sent(receiver, 1, timeout=5)
        assert time.monotonic() - started < 5, "the good channel waited for the hanging one"
        # firing goes on while the hanging delivery is still waiting for its answer
        echo = api.create_job(owner, minute="0", hour="3")
        ran = api.post(f"/api/scheduler/jobs/{echo}/run").json()["execution_id"]
        began = time.monotonic()
        assert api.wait_execution(ran, timeout=5)["status"] == "completed"
        assert time.monotonic() - began < 3
    finally:
        hanging.shutdown()
        hanging.server_close()


def test_alert_channels_default_serves_jobs_whose_notify_names_no_channel(start_server, receiver, tmp_path):
    server = start_server(env={**LOCAL, "TEXIUM_ALERT_CHANNELS": "default-oncall"})
    api = server.api
    owner = api.create_user()
    channel_id = create(api, owner, kind="discord", name="default-oncall", url=f"{receiver.url}/api/webhooks/9/x")
    job_id = api.create_job(
        owner,
        job_class_string=FLAKY,
        minute="0",
        hour="3",
        pub_args=[str(tmp_path / "runs")],
        pub_kwargs={"failures": 9},
    )
    failed = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
    assert api.wait_execution(failed)["status"] == "failed"
    embed = json.loads(sent(receiver, 1)[0]["body"])["embeds"][0]
    assert embed["title"] == "Job failing: Echo" and embed["url"].endswith(f"/#/executions/{failed}")
    deliveries = api.get(f"/api/scheduler/channels/{channel_id}/deliveries").json()["data"]
    assert [(d["event"], d["job_id"], d["ok"]) for d in deliveries] == [("failure", job_id, True)]


def test_an_email_channel_mails_its_recipients_or_by_default_its_owner(start_server):
    with smtp_server() as (handler, port):
        env = {"TEXIUM_SMTP_HOST": "127.0.0.1", "TEXIUM_SMTP_PORT": str(port), "TEXIUM_SMTP_FROM": "tx@example.org"}
        api = start_server(env=env | {"TEXIUM_EMAIL_ALLOWED_DOMAINS": "example.com"}).api
        owner = api.create_user(email="owner@example.net")
        listed = create(api, owner, kind="email", recipients=["ops@example.com", "ops@example.com"])
        default = create(api, owner, kind="email", name="mine")
        # A user's channel mails only their own address and EMAIL_ALLOWED_DOMAINS: no relay for the SMTP login.
        for way in ("post", "put"):
            path = "/api/scheduler/channels" + (f"/{listed}" if way == "put" else "")
            body = {"recipients": ["x@elsewhere.org"]} | ({} if way == "put" else {"user_id": owner, "kind": "email"})
            refused = getattr(api, way)(path, json={"name": "relay"} | body)
            assert refused.status_code == 400 and "recipients[0]" in refused.json()["detail"], refused.text
        admin = api.create_user(email="root@example.org", role="admin")
        assert create(api, admin, kind="email", name="admin's", recipients=["x@elsewhere.org"])
        assert api.get(f"/api/scheduler/channels/{listed}").json()["data"]["recipients"] == ["ops@example.com"]
        assert api.get(f"/api/scheduler/channels/{default}").json()["data"]["recipients"] == ["owner@example.net"]
        for channel_id in (listed, default):
            delivery = api.post(f"/api/scheduler/channels/{channel_id}/test").json()["delivery"]
            assert delivery["ok"] is True and delivery["status_code"] is None, delivery
    assert [m["rcpt_tos"] for m in handler.messages] == [["ops@example.com"], ["owner@example.net"]]
    assert b"Subject: [Texium] Test message" in handler.messages[0]["content"]


def test_two_nodes_on_one_store_send_one_channel_alert_per_change(datastore, receiver):
    """The job's alert state (compare-and-set) decides which node sends; a channel is no exception."""
    from tests.test_alerts import LOOPBACK, add_execution, add_job, stale
    from texium.core.events.alerts import Alerts
    from texium.core.events.channels import Deliveries, Sender

    channel = {"user_id": "0123456789abcdef01234567", "name": "pd", "kind": "pagerduty", "url": receiver.url}
    channel_id = datastore.channels.insert({**channel, "secret_encrypted": "clear-key-for-this-test"})
    job_id = add_job(datastore, {"channels": [{"id": channel_id, "events": ["failure", "recovery"]}], "events": []})
    nodes = []
    for _ in range(2):
        deliveries = Deliveries(datastore, Sender({}, LOOPBACK, backoff=0.05), lambda c: c["secret_encrypted"])
        nodes.append(Alerts(datastore, lambda *_: None, channels=deliveries))
    failed, recovered = add_execution(datastore, job_id, "failed"), add_execution(datastore, job_id, "completed")
    for run in (failed, recovered):
        for node in nodes:
            node.observe(stale(datastore, job_id), run)
        wait_for(lambda run=run: datastore.channel_deliveries.count({"execution_id": run["_id"]}) >= 1)
    time.sleep(0.5)  # a second node's duplicate, if any, would have arrived by now
    assert all(node.stop(5) for node in nodes)
    actions = [json.loads(r["body"])["event_action"] for r in receiver.requests]
    assert actions == ["trigger", "resolve"]
    assert {json.loads(r["body"])["routing_key"] for r in receiver.requests} == {"clear-key-for-this-test"}
