"""Users API against a live server, on every provider."""

import threading
import time

import requests


def unique_email(tag="u"):
    return f"{tag}{time.time_ns()}@example.com"


# One list for both places an address is checked (texium.core.validation.email_address): a
# user's email here, EmailNotificationJob's recipient in tests/test_jobs_builtin.py.
VALID_EMAILS = {  # address -> what the check makes of it (the domain in lower case)
    "zoë@example.com": "zoë@example.com",  # internationalised (sent with SMTPUTF8)
    "ops@bücher.de": "ops@bücher.de",
    "ops@example.com": "ops@example.com",
    "first.last+tag@mail.example.co.uk": "first.last+tag@mail.example.co.uk",
    "o'brien@example.org": "o'brien@example.org",
    "UPPER@EXAMPLE.COM": "UPPER@example.com",
}
INVALID_EMAILS = [
    "ops@exa_mple.com",  # an underscore is not allowed in a domain name
    "ops@localhost",  # no dot: not a domain anyone can mail
    "ops@example",
    "ops@host.test",  # special-use domain
    "not-an-address",
    "x@",
    "@example.com",
    "a@@example.com",
    "a b@example.com",
    "a@exa mple.com",
    "a..b@example.com",
    ".a@example.com",
    "a@-example.com",
    "a@example..com",
    "a@example.com.",
    '"quoted"@example.com',
    "a@[127.0.0.1]",
    "Name <a@example.com>",
    "evil@example.com\r\nBcc: x@example.com",
]


def test_create_get_list_update_delete(api):
    email = unique_email()
    created = api.post("/api/users/", json={"name": "John Doe", "email": email, "role": "admin"})
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "success" and body["message"] == "User created successfully"
    user_id = body["user_id"]
    assert len(user_id) == 24 and int(user_id, 16) >= 0

    got = api.get(f"/api/users/{user_id}").json()
    assert got["message"] == "User retrieved successfully"
    user = got["data"]
    assert user["_id"] == user_id and user["name"] == "John Doe" and user["role"] == "admin"
    assert user["email"] == email
    assert user["created_at"].endswith("+00:00") and user["updated_at"] == user["created_at"]

    listed = api.get("/api/users/", params={"limit": 1000}).json()
    assert listed["message"] == "Users retrieved successfully"
    assert listed["total"] >= 1 and any(u["_id"] == user_id for u in listed["data"])

    time.sleep(0.01)
    updated = api.put(f"/api/users/{user_id}", json={"name": "Jane Doe", "role": "user"})
    assert updated.status_code == 200
    assert updated.json() == {"status": "success", "message": "User updated successfully", "user_id": user_id}
    user = api.get(f"/api/users/{user_id}").json()["data"]
    assert user["name"] == "Jane Doe" and user["role"] == "user" and user["updated_at"] > user["created_at"]

    deleted = api.delete(f"/api/users/{user_id}")
    assert deleted.json() == {"status": "success", "message": "User deleted successfully", "user_id": user_id}
    assert api.get(f"/api/users/{user_id}").status_code == 404


def test_trailing_slash_is_optional(api):
    assert api.get("/api/users").status_code == 200
    assert api.get("/api/users/").status_code == 200
    user_id = api.create_user()
    assert api.get(f"/api/users/{user_id}/").status_code == 200


def test_role_defaults_to_user(api):
    user_id = api.create_user()
    assert api.get(f"/api/users/{user_id}").json()["data"]["role"] == "user"


def test_validation_messages_name_the_field(api):
    cases = [
        ({"email": unique_email()}, "Missing required field: name"),
        ({"name": "A"}, "Missing required field: email"),
        ({"name": "", "email": unique_email()}, "name"),
        ({"name": 5, "email": unique_email()}, "name"),
        ({"name": "A", "email": "not-an-email"}, "email"),
        ({"name": "A", "email": unique_email(), "role": "root"}, "role"),
        ({"name": "A", "email": unique_email(), "colour": "red"}, "colour"),
    ]
    for body, expected in cases:
        response = api.post("/api/users/", json=body)
        assert response.status_code == 400, (body, response.text)
        assert expected in response.json()["detail"], (body, response.json())


def test_email_addresses_are_checked_like_the_email_job_checks_them(api):
    for address, normalised in VALID_EMAILS.items():
        created = api.post("/api/users/", json={"name": "Mail", "email": address})
        assert created.status_code == 201, (address, created.text)
        user_id = created.json()["user_id"]
        assert api.get(f"/api/users/{user_id}").json()["data"]["email"] == normalised.lower()
        assert api.delete(f"/api/users/{user_id}").status_code == 200  # frees the address again
    for address in INVALID_EMAILS:
        refused = api.post("/api/users/", json={"name": "Mail", "email": address})
        assert refused.status_code == 400, (address, refused.text)
        assert refused.json() == {"detail": f"Invalid field email: {address!r} is not a valid email address"}


def test_duplicate_email_is_a_conflict_and_case_insensitive(api):
    email = unique_email("dup")
    api.create_user(email=email)
    again = api.post("/api/users/", json={"name": "B", "email": email.upper()})
    assert again.status_code == 409
    assert email in again.json()["detail"]
    other = api.create_user()
    clash = api.put(f"/api/users/{other}", json={"email": email})
    assert clash.status_code == 409
    assert api.get(f"/api/users/{other}").json()["data"]["email"] != email


def test_unknown_and_malformed_ids(api):
    missing = "507f1f77bcf86cd799439011"
    for method in ("get", "delete"):
        response = getattr(api, method)(f"/api/users/{missing}")
        assert response.status_code == 404 and response.json() == {"detail": "User not found"}
    assert api.put(f"/api/users/{missing}", json={"name": "x"}).json() == {"detail": "User not found"}
    bad = api.get("/api/users/not-an-id")
    assert bad.status_code == 400 and "user_id" in bad.json()["detail"]


def test_update_needs_fields_and_keeps_data_on_bad_input(api):
    user_id = api.create_user(name="Keep Me")
    assert api.put(f"/api/users/{user_id}", json={}).status_code == 400
    assert api.put(f"/api/users/{user_id}", json={"email": "broken"}).status_code == 400
    assert api.put(f"/api/users/{user_id}", data=b"{not json").status_code == 400
    assert api.get(f"/api/users/{user_id}").json()["data"]["name"] == "Keep Me"


def test_delete_refuses_to_orphan_unless_cascade(api):
    user_id = api.create_user()
    server = api.post("/api/servers/create", json={"user_id": user_id, "name": "S", "hostname": "h"}).json()[
        "server_id"
    ]
    job_id = api.create_job(user_id)
    refused = api.delete(f"/api/users/{user_id}")
    assert refused.status_code == 409
    assert "1 server" in refused.json()["detail"] and "1 job" in refused.json()["detail"]
    assert api.get(f"/api/users/{user_id}").status_code == 200
    assert api.delete(f"/api/users/{user_id}", params={"cascade": "true"}).status_code == 200
    assert api.get(f"/api/servers/{server}").status_code == 404
    assert api.get(f"/api/scheduler/jobs/{job_id}").status_code == 404
    assert api.get(f"/api/users/{user_id}").status_code == 404


def test_concurrent_writers_lose_nothing(api):
    """20 threads create users at once; five of them race for one e-mail address."""
    shared = unique_email("race")
    results = []

    def create(i):
        email = shared if i < 5 else unique_email(f"t{i}-")
        response = requests.post(api.base_url + "/api/users/", json={"name": f"T{i}", "email": email}, timeout=30)
        results.append((i, response.status_code, response.json()))

    threads = [threading.Thread(target=create, args=(i,)) for i in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    codes = sorted(code for _, code, _ in results)
    assert codes.count(201) == 16 and codes.count(409) == 4
    for _, code, body in results:
        if code == 201:
            assert api.get(f"/api/users/{body['user_id']}").status_code == 200


def test_plain_list_returns_more_than_a_hundred(api):
    for _ in range(105 - api.get("/api/users/").json()["total"]):
        api.create_user()
    listed = api.get("/api/users/").json()
    assert listed["total"] >= 105 and len(listed["data"]) == listed["total"]
    assert len(api.get("/api/users/", params={"limit": 10, "offset": 5}).json()["data"]) == 10
