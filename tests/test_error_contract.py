"""Every error is JSON {"detail": ...} with the right status, never HTML or a traceback."""

import pytest
import requests


def assert_json_error(response, status):
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str) and body["detail"]
    assert "Traceback" not in response.text and "<html" not in response.text.lower()
    return body["detail"]


@pytest.mark.parametrize("path", ["/api/users/", "/api/servers/create", "/api/scheduler/jobs"])
@pytest.mark.parametrize(
    "payload, expected",
    [
        (b"{broken", "Malformed JSON"),
        (b"[1, 2]", "JSON object"),
        (b'"text"', "JSON object"),
        (b"", "JSON object"),
        (b"\xff\xfe", "Malformed JSON"),
        (b"null", "JSON object"),
        (b'{"name": NaN}', "NaN"),
        (b'{"name": Infinity}', "Infinity"),
        (b'{"pub_args": [123456789012345678901234567890]}', "64 bits"),
        (b'{"pub_args": [1e400]}', "too large"),
        (b'{"pub_kwargs": {"a\\u0000": 1}}', "NUL"),
        (b'{"pub_kwargs": {"$set": 1}}', "'$'"),
        (b'{"x": ' + b"[" * 990 + b"]" * 990 + b"}", "nested deeper"),
        (b'{"x": ' + b"[" * 40 + b"]" * 40 + b"}", "nested deeper"),
        (b'{"name": "\\ud800"}', "Malformed JSON"),
    ],
)
def test_bad_bodies(api, path, payload, expected):
    response = api.post(path, data=payload, headers={"Content-Type": "application/json"})
    assert expected in assert_json_error(response, 400)


def test_unknown_route_and_wrong_method(api):
    assert assert_json_error(api.get("/api/nope"), 404) == "Not found"
    assert assert_json_error(api.get("/nothing/here"), 404) == "Not found"
    assert assert_json_error(api.delete("/api/users/"), 405) == "Method not allowed"
    assert assert_json_error(api.patch("/api/scheduler/jobs"), 405) == "Method not allowed"
    assert assert_json_error(api.get("/api/servers/create"), 405) == "Method not allowed"
    assert api.delete("/api/scheduler/health").headers["Allow"] == "GET"
    assert api.put("/api/users/").headers["Allow"] == "GET, POST"


def test_body_over_the_limit_is_413(api):
    big = b'{"name": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    assert "larger than" in assert_json_error(api.post("/api/users/", data=big), 413)
    # the server keeps serving afterwards
    assert api.get("/api/users/").status_code == 200


def test_chunked_body_over_the_limit_is_413(api):
    def chunks():
        for _ in range(20):
            yield b"x" * 65536

    response = requests.post(api.base_url + "/api/users/", data=chunks(), timeout=30)
    assert_json_error(response, 413)


@pytest.mark.parametrize("query", ["limit=0", "limit=1001", "limit=abc", "offset=-1", "offset=%EF%BC%91", "limit=1_0"])
def test_bad_paging(api, query):
    assert "limit" in assert_json_error(api.get(f"/api/users/?{query}"), 400) or "offset" in query


def test_times_have_an_explicit_offset(api):
    user_id = api.create_user()
    user = api.get(f"/api/users/{user_id}").json()["data"]
    assert user["created_at"].endswith("+00:00")
    assert api.get("/api/scheduler/health").json()["timestamp"].endswith("+00:00")
