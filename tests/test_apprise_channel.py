"""The `apprise` channel kind (the optional extra) through a real server: a local receiver gets
apprise's JSON through its `json://127.0.0.1:PORT/` URL, the URL is a write-only secret never in an
answer or a log line, the outbound rules apply to its host, and a server without the package
answers a 400 saying to install the extra."""

from __future__ import annotations

import json

from tests.jobs_fixtures import http_server
from tests.server_process import REPO, SAMPLE_JOBS, wait_for

FLAKY = "tests.sample_jobs.operations.FlakyJob"
LOCAL = {**SAMPLE_JOBS, "TEXIUM_OUTBOUND_ALLOW": "127.0.0.1/32"}
YEARLY = {"second": "0", "minute": "0", "hour": "0", "day_of_month": "1", "month": "1"}


def apprise_url(receiver, path="/hooks/s3cret-path-token") -> str:
    return "json://" + receiver.url.removeprefix("http://") + path


def test_an_apprise_channel_delivers_tests_and_alerts_and_keeps_its_url_secret(start_server, tmp_path):
    with http_server(statuses=(200,)) as receiver:
        server = start_server("sqlite", tmp_path / "data", env=LOCAL)
        api = server.api
        owner = api.create_user()
        url = apprise_url(receiver)
        body = {"user_id": owner, "name": "Long tail", "kind": "apprise", "url": url}
        created = api.post("/api/scheduler/channels", json=body)
        assert created.status_code == 201, created.text
        channel_id = created.json()["channel_id"]
        shown = api.get(f"/api/scheduler/channels/{channel_id}").json()["data"]
        assert shown["url"] == "json://***" and shown["has_secret"] is True and shown["secret"] is None

        tested = api.post(f"/api/scheduler/channels/{channel_id}/test").json()
        assert tested["delivery"]["ok"] is True, tested
        job_id = api.create_job(
            owner,
            name="Nightly import",
            job_class_string=FLAKY,
            pub_args=[str(tmp_path / "runs.log")],
            pub_kwargs={"failures": 1},
            notify={"channels": [{"id": channel_id, "events": ["failure", "recovery"]}]},
            **YEARLY,
        )
        for status in ("failed", "completed"):
            run = api.post(f"/api/scheduler/jobs/{job_id}/run").json()["execution_id"]
            assert api.wait_execution(run)["status"] == status
        assert wait_for(lambda: len(receiver.requests) >= 3, timeout=15), receiver.requests
        # Sending the masked URL back keeps the stored one; anything else with *** is refused.
        assert api.put(f"/api/scheduler/channels/{channel_id}", json={"url": "json://***"}).status_code == 200
        refused = api.put(f"/api/scheduler/channels/{channel_id}", json={"url": "json://***/x"})
        assert refused.status_code == 400 and refused.json()["detail"].startswith("Invalid field url")

    requests = receiver.requests
    assert [r["path"] for r in requests] == ["/hooks/s3cret-path-token"] * 3
    payloads = [json.loads(r["body"]) for r in requests]
    assert [(p["title"], p["type"]) for p in payloads] == [
        ("Test message: channel Long tail", "info"),
        ("Job failing: Nightly import", "failure"),
        ("Job recovered: Nightly import", "success"),
    ]
    assert "failure number 1" in payloads[1]["message"]
    deliveries = api.get(f"/api/scheduler/channels/{channel_id}/deliveries").json()["data"]
    assert sorted((d["event"], d["ok"]) for d in deliveries) == [("failure", True), ("recovery", True), ("test", True)]
    assert "s3cret-path-token" not in server.log()
    for path in ("/api/scheduler/channels", f"/api/scheduler/executions?job_id={job_id}"):
        assert "s3cret-path-token" not in api.get(path).text


def test_apprise_urls_are_checked_and_follow_the_outbound_rules(start_server, tmp_path):
    with http_server(statuses=(200,)) as receiver:
        api = start_server("sqlite", tmp_path / "data", env=SAMPLE_JOBS).api  # loopback refused (the default)
        owner = api.create_user()
        for url, why in (
            ("nosuchservice://token", "Invalid field url: not an apprise URL"),
            ("https://example.com/x", "Invalid field url: not an apprise URL"),
        ):
            answer = api.post(
                "/api/scheduler/channels", json={"user_id": owner, "name": "x", "kind": "apprise", "url": url}
            )
            assert answer.status_code == 400 and answer.json()["detail"].startswith(why), answer.text
        body = {"user_id": owner, "name": "Local", "kind": "apprise", "url": apprise_url(receiver)}
        channel_id = api.post("/api/scheduler/channels", json=body).json()["channel_id"]
        delivery = api.post(f"/api/scheduler/channels/{channel_id}/test").json()["delivery"]
        assert delivery["ok"] is False and "a loopback address" in delivery["error"], delivery
        assert "s3cret" not in delivery["error"]
    assert receiver.requests == []


def test_without_the_extra_an_apprise_channel_is_a_400_saying_to_install_it(start_server, tmp_path):
    blocker = tmp_path / "no-apprise" / "apprise"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text('raise ImportError("apprise is not installed here")\n')
    env = {**LOCAL, "PYTHONPATH": f"{blocker.parent}:{REPO}"}
    api = start_server("sqlite", tmp_path / "data", env=env).api
    body = {"user_id": api.create_user(), "name": "x", "kind": "apprise", "url": "json://127.0.0.1:9/"}
    answer = api.post("/api/scheduler/channels", json=body)
    assert answer.status_code == 400
    assert (
        answer.json()["detail"]
        == "Invalid field kind: apprise channels need the apprise extra: pip install 'texium[apprise]'"
    )
