"""Grouping (README "Alerting" > "Grouping"): twenty real jobs failing at once give a channel
ALERT_DIGEST_AFTER single messages and one digest naming the rest, also when two servers on one
store send to it; a digest that cannot be sent leaves its held messages recorded failed, never
lost; PagerDuty is never digested (it keeps trigger and resolve per job)."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from tests.jobs_fixtures import http_server
from tests.server_process import SAMPLE_JOBS, wait_for

FLAKY = "tests.sample_jobs.operations.FlakyJob"
WINDOW, AFTER = 4, 3
DIGEST = {
    **SAMPLE_JOBS,
    "TEXIUM_OUTBOUND_ALLOW": "127.0.0.1/32",
    "TEXIUM_CHANNEL_HTTPS_ONLY": "false",
    "TEXIUM_ALERT_DIGEST_SECONDS": str(WINDOW),
    "TEXIUM_ALERT_DIGEST_AFTER": str(AFTER),
}


def channel(api, owner, **fields) -> str:
    response = api.post("/api/scheduler/channels", json={"user_id": owner, "name": fields["kind"], **fields})
    assert response.status_code == 201, response.text
    return response.json()["channel_id"]


def failing_jobs(api, owner, channel_id, count, tmp_path) -> dict[str, str]:
    """`count` jobs that always fail, alerting `channel_id` on failure: id -> name."""
    jobs = {}
    for n in range(count):
        name = f"etl-{n:02d}"
        job_id = api.create_job(
            owner,
            name=name,
            job_class_string=FLAKY,
            minute="0",
            hour="3",
            pub_args=[str(tmp_path / f"runs-{n}")],
            pub_kwargs={"failures": 1000},
            notify={"channels": [{"id": channel_id, "events": ["failure"]}]},
        )
        jobs[job_id] = name
    return jobs


def fail_at_once(apis, job_ids) -> list[dict]:
    """Run every job now (spread over `apis`, round robin), in parallel; their executions once ended."""

    def run(index_job):
        index, job_id = index_job
        api = apis[index % len(apis)]
        response = api.post(f"/api/scheduler/jobs/{job_id}/run")
        assert response.status_code in (200, 201, 202), response.text
        return api.wait_execution(response.json()["execution_id"])

    with ThreadPoolExecutor(10) as pool:
        executions = list(pool.map(run, enumerate(job_ids)))
    assert {e["status"] for e in executions} == {"failed"}, executions
    return executions


def settle(receiver, expected: int) -> list[dict]:
    """The requests once `expected` arrived, and nothing more came for a window and a sweep."""
    assert wait_for(lambda: len(receiver.requests) >= expected, timeout=WINDOW + 20), receiver.requests
    time.sleep(WINDOW + 6)  # a second digest (another node's, a late one) would have come by now
    return list(receiver.requests)


def deliveries(api, channel_id) -> list[dict]:
    return api.get(f"/api/scheduler/channels/{channel_id}/deliveries?limit=100").json()["data"]


def test_twenty_jobs_failing_at_once_give_three_messages_and_one_slack_digest(start_server, tmp_path):
    api = start_server(env=DIGEST).api
    owner = api.create_user()
    with http_server(statuses=(200,)) as receiver:
        slack = channel(api, owner, kind="slack", url=f"{receiver.url}/services/T/B/secret")
        jobs = failing_jobs(api, owner, slack, 20, tmp_path)
        executions = fail_at_once([api], list(jobs))
        requests = settle(receiver, AFTER + 1)
    bodies = [json.loads(r["body"]) for r in requests]
    singles = [b for b in bodies if b["text"].startswith("Job failing: ")]
    digests = [b for b in bodies if b["text"].startswith("Alert digest")]
    assert len(singles) == AFTER and len(digests) == 1 and len(bodies) == AFTER + 1, [b["text"] for b in bodies]
    digest = digests[0]
    assert digest["text"] == "Alert digest: 17 more alerts (17 jobs)"
    assert digest["blocks"][0] == {"type": "header", "text": {"type": "plain_text", "text": digest["text"]}}
    listed = "\n".join(b["text"]["text"] for b in digest["blocks"] if b["type"] == "section")
    alone = {b["text"].removeprefix("Job failing: ") for b in singles}
    held = set(jobs.values()) - alone
    assert len(held) == 17 and all(f"failure {name}: " in listed for name in held), listed
    assert not any(f" {name}:" in listed for name in alone)
    assert listed.count("JobError: failure number 1") == 17 or listed.count(": failure number 1") == 17, listed
    # Every message is a delivery: three sent, seventeen held then digested, the digest itself.
    records = deliveries(api, slack)
    by_status = {}
    for record in records:
        by_status.setdefault((record["event"], record["status"]), []).append(record)
    assert {k: len(v) for k, v in by_status.items()} == {
        ("failure", "sent"): 3,
        ("failure", "digested"): 17,
        ("digest", "sent"): 1,
    }
    digest_record = by_status[("digest", "sent")][0]
    assert digest_record["items"] == 17 and digest_record["ok"] is True
    assert {r["digest_id"] for r in by_status[("failure", "digested")]} == {digest_record["digest_id"]}
    assert {r["job_id"] for r in by_status[("failure", "digested")]} == {j for j, n in jobs.items() if n in held}
    # The executions say which of their alerts was held for the digest.
    statuses = []
    for execution in executions:
        alerts = api.get(f"/api/scheduler/executions/{execution['_id']}").json()["data"]["alerts"]
        statuses += [a["status"] for a in alerts]
    assert sorted(statuses) == ["held"] * 17 + ["sent"] * 3


def test_two_servers_on_one_store_send_one_webhook_digest(start_server, tmp_path):
    first = start_server(env=DIGEST, data_dir=tmp_path / "shared")
    second = start_server(env=DIGEST, data_dir=tmp_path / "shared")
    api = first.api
    owner = api.create_user()
    with http_server(statuses=(200,)) as receiver:
        hook = channel(api, owner, kind="webhook", url=f"{receiver.url}/hook", secret="signing-secret")
        jobs = failing_jobs(api, owner, hook, 20, tmp_path)
        executions = fail_at_once([first.api, second.api], list(jobs))
        requests = settle(receiver, AFTER + 1)
    assert len({e["node_id"] for e in executions}) == 2, "both nodes ran (and alerted for) some of the jobs"
    bodies = [json.loads(r["body"]) for r in requests]
    assert sorted(b["event"] for b in bodies) == ["digest"] + ["failure"] * AFTER, bodies
    digest = next(b for b in bodies if b["event"] == "digest")
    assert digest["count"] == 17 and digest["more"] == 0 and len(digest["alerts"]) == 17
    named = {a["job"]["name"] for a in digest["alerts"]} | {b["job"]["name"] for b in bodies if b["event"] != "digest"}
    assert named == set(jobs.values())
    assert {a["event"] for a in digest["alerts"]} == {"failure"} and all(a["at"] for a in digest["alerts"])
    headers = {k.lower(): v for k, v in next(r for r in requests if b'"digest"' in r["body"])["headers"].items()}
    assert headers["x-texium-event"] == "digest" and headers["x-texium-signature"].startswith("sha256=")
    assert [r["status"] for r in deliveries(api, hook)].count("digested") == 17


def test_a_digest_that_cannot_be_sent_leaves_its_messages_recorded_failed(start_server, tmp_path):
    api = start_server(env=DIGEST).api
    owner = api.create_user()
    # The three single messages are answered 200; the digest 400 (final: not retried).
    with http_server(statuses=(200, 200, 200, 400)) as receiver:
        discord = channel(api, owner, kind="discord", url=f"{receiver.url}/api/webhooks/1/secret")
        fail_at_once([api], list(failing_jobs(api, owner, discord, 6, tmp_path)))
        requests = settle(receiver, AFTER + 1)
    assert len(requests) == AFTER + 1
    assert json.loads(requests[-1]["body"])["embeds"][0]["title"] == "Alert digest: 3 more alerts (3 jobs)"
    records = deliveries(api, discord)
    digest = [r for r in records if r["event"] == "digest"]
    assert len(digest) == 1 and digest[0]["ok"] is False and digest[0]["status"] == "failed"
    held = [r for r in records if r["event"] == "failure" and r.get("digest_id")]
    assert len(held) == 3 and {r["status"] for r in held} == {"failed"}
    assert all(r["error"].startswith("digest not delivered: HTTP 400") for r in held), held


def test_pagerduty_is_never_digested(start_server, tmp_path):
    api = start_server(env=DIGEST).api
    owner = api.create_user()
    with http_server(statuses=(202,)) as receiver:
        pagerduty = channel(api, owner, kind="pagerduty", url=receiver.url, secret="routing-key-0123456789")
        jobs = failing_jobs(api, owner, pagerduty, 6, tmp_path)
        fail_at_once([api], list(jobs))
        requests = settle(receiver, 6)
    payloads = [json.loads(r["body"]) for r in requests]
    assert [p["event_action"] for p in payloads] == ["trigger"] * 6
    assert {p["dedup_key"] for p in payloads} == {f"texium-job-{job_id}" for job_id in jobs}
    assert {(r["event"], r["status"]) for r in deliveries(api, pagerduty)} == {("failure", "sent")}


def test_a_digest_is_claimed_by_one_node_and_a_dead_node_s_claim_is_taken_over(datastore):
    """On both stores: two nodes count into one window, race for its digest (one wins), and a
    node killed after claiming leaves the digest to another once its claim expired."""
    from texium.core.events.channels import Message
    from texium.core.events.digests import Digests
    from texium.core.timeutil import utcnow

    doc = {"user_id": "0123456789abcdef01234567", "name": "ops", "kind": "webhook", "url": "http://127.0.0.1:9/"}
    channel = {**doc, "_id": datastore.channels.insert(dict(doc))}
    nodes = [Digests(datastore, 60, 2), Digests(datastore, 60, 2)]
    held = []
    for n in range(5):
        job = {"_id": f"0123456789abcdef0123aaa{n}", "name": f"etl {n}"}
        message = Message(job, "failure", {"_id": f"run-{n}", "error": f"boom {n}\nTraceback ..."}, "")
        held.append(nodes[n % 2].admit(channel, message))
    assert [record is None for record in held] == [True, True, False, False, False]
    assert [record["excerpt"] for record in held[2:]] == ["boom 2", "boom 3", "boom 4"]
    assert nodes[0].due(channel["_id"]) == []  # the window has not ended
    datastore.channel_digests.update_many({"channel_id": channel["_id"]}, {"due_at": utcnow() - timedelta(seconds=1)})
    (pending,) = nodes[0].due(channel["_id"])

    def killed(channel, message):
        raise RuntimeError("the node died while sending")

    with pytest.raises(RuntimeError):
        nodes[0].send(channel, pending, killed)
    sent = []

    def deliver(channel, message):
        sent.append(message)
        return {"ok": True, "_id": "0123456789abcdef0123bbbb", "error": ""}

    assert nodes[1].send(channel, pending, deliver) is False  # node 0 claimed it first
    assert nodes[1].due(channel["_id"]) == []  # ... and its claim has not expired
    expired = {"claim_expires_at": utcnow() - timedelta(seconds=1)}
    datastore.channel_digests.update_many({"channel_id": channel["_id"]}, expired)
    (orphan,) = nodes[1].due(channel["_id"])
    assert nodes[1].send(channel, orphan, deliver) is True
    assert nodes[0].send(channel, orphan, deliver) is False  # taken over once, not twice
    assert len(sent) == 1 and sent[0].count == 3 and sent[0].lines[0].endswith("failure etl 2: boom 2")
    records = datastore.channel_deliveries.find({"digest_id": held[2]["digest_id"]})
    assert sorted(r["status"] for r in records) == ["digested"] * 3
    assert nodes[0].due(channel["_id"]) == [] and nodes[1].due(channel["_id"]) == []


def test_one_job_s_own_messages_are_never_held(datastore):
    """Grouping is about many jobs: one job's failure, re-alerts and recovery in one window all
    go out, and still count it as one of the window's first jobs."""
    from texium.core.events.channels import Message
    from texium.core.events.digests import Digests

    doc = {"user_id": "0123456789abcdef01234567", "name": "ops", "kind": "webhook", "url": "http://127.0.0.1:9/"}
    channel = {**doc, "_id": datastore.channels.insert(dict(doc))}
    digests = Digests(datastore, 60, 2)
    flaky = {"_id": "0123456789abcdef0123bbbb", "name": "flaky"}
    for n, event in enumerate(["failure", "still_failing", "recovery", "failure", "recovery"]):
        assert digests.admit(channel, Message(flaky, event, {"_id": f"run-{n}"}, "")) is None
    other = {"_id": "0123456789abcdef0123cccc", "name": "other"}
    assert digests.admit(channel, Message(other, "failure", {"_id": "run-o"}, "")) is None
    third = {"_id": "0123456789abcdef0123dddd", "name": "third"}
    assert digests.admit(channel, Message(third, "failure", {"_id": "run-t"}, ""))["status"] == "held"
