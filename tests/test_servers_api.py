"""Servers API against a live server, on every provider."""

import pytest


@pytest.fixture
def owner(api):
    return api.create_user()


def server_body(owner, **fields):
    return {
        "user_id": owner,
        "name": "Production Server",
        "hostname": "prod.example.com",
        "port": 8080,
        "status": "running",
        "connection_name": "ServiceNow Connection",
        "instance_url": "https://dev123456.service-now.com",
        "username": "admin",
        "password": "password123",
        **fields,
    }


def test_create_and_read_never_shows_the_password(api, owner):
    created = api.post("/api/servers/create", json=server_body(owner))
    assert created.status_code == 201
    assert created.json()["message"] == "Server Production Server created successfully"
    server_id = created.json()["server_id"]
    got = api.get(f"/api/servers/{server_id}")
    assert got.json()["message"] == "Server retrieved successfully"
    server = got.json()["data"]
    assert server["_id"] == server_id and server["user_id"] == owner and server["port"] == 8080
    assert server["instance_url"] == "https://dev123456.service-now.com" and server["status"] == "running"
    assert server["has_password"] is True
    for response in (got, api.get("/api/servers/", params={"limit": 1000}), api.get(f"/api/servers/user/{owner}")):
        assert "password123" not in response.text and "password_encrypted" not in response.text


def test_list_all_and_by_user(api, owner):
    other = api.create_user()
    for name in ("a", "b"):
        api.post("/api/servers/create", json=server_body(owner, name=name))
    api.post("/api/servers/create", json=server_body(other, name="c"))
    mine = api.get(f"/api/servers/user/{owner}").json()
    assert mine["message"] == "Servers retrieved successfully"
    assert mine["total"] == 2 and sorted(s["name"] for s in mine["data"]) == ["a", "b"]
    everything = api.get("/api/servers").json()
    assert everything["total"] >= 3
    assert api.get("/api/servers/user/507f1f77bcf86cd799439011").status_code == 404


def test_update_and_delete(api, owner):
    server_id = api.post("/api/servers/create", json=server_body(owner)).json()["server_id"]
    updated = api.put(f"/api/servers/{server_id}", json={"status": "stopped", "password": ""})
    assert updated.json() == {"status": "success", "message": "Server updated successfully", "server_id": server_id}
    server = api.get(f"/api/servers/{server_id}").json()["data"]
    assert server["status"] == "stopped" and server["has_password"] is False
    deleted = api.delete(f"/api/servers/{server_id}")
    assert deleted.json() == {"status": "success", "message": "Server deleted successfully", "server_id": server_id}
    assert api.get(f"/api/servers/{server_id}").json() == {"detail": "Server not found"}


@pytest.mark.parametrize(
    "fields, named",
    [
        ({"port": 0}, "port"),
        ({"port": 70000}, "port"),
        ({"port": "80"}, "port"),
        ({"port": True}, "port"),
        ({"status": "exploded"}, "status"),
        ({"instance_url": "ftp://x"}, "instance_url"),
        ({"instance_url": "not a url"}, "instance_url"),
        ({"instance_url": "https://.]x"}, "instance_url"),
        ({"instance_url": "http://[::1"}, "instance_url"),
        ({"instance_url": "http://h:99999/"}, "instance_url"),
        ({"name": ""}, "name"),
        ({"hostname": None}, "hostname"),
        ({"user_id": "507f1f77bcf86cd799439011"}, "user_id"),
        ({"user_id": "xyz"}, "user_id"),
        ({"extra": 1}, "extra"),
    ],
)
def test_validation(api, owner, fields, named):
    response = api.post("/api/servers/create", json=server_body(owner, **fields))
    assert response.status_code == 400, response.text
    assert named in response.json()["detail"]


def test_missing_fields_and_defaults(api, owner):
    assert api.post("/api/servers/create", json={"user_id": owner, "name": "x"}).json() == {
        "detail": "Missing required field: hostname"
    }
    server_id = api.post("/api/servers/create", json={"user_id": owner, "name": "x", "hostname": "h"}).json()[
        "server_id"
    ]
    server = api.get(f"/api/servers/{server_id}").json()["data"]
    assert server["status"] == "unknown" and server["port"] is None and server["has_password"] is False


def test_password_is_encrypted_at_rest(server, owner):
    api = server.api
    api.post("/api/servers/create", json=server_body(owner, password="s3cret-at-rest"))
    if server.provider == "sqlite":
        raw = b"".join(p.read_bytes() for p in server.data_dir.glob("texium.db*"))
        assert b"s3cret-at-rest" not in raw
    assert "s3cret-at-rest" not in server.log()
