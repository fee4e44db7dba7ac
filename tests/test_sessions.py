"""The dashboard's sessions, against real servers: random tokens stored by the server, ended by
sign-out, key revocation, user deletion and expiry (a copied cookie included), a CSRF token of
their own, and shared by every node of one store."""

import hashlib
import time

import pytest

from tests.server_process import SAMPLE_JOBS
from tests.test_security import admin_key, call, client
from texium.core.datastore import open_datastore

ON = {"TEXIUM_AUTH_MODE": "on", "TEXIUM_AUTH_FAILURES_PER_MINUTE": "1000", **SAMPLE_JOBS}
COOKIE = "texium_session"


def sign_in(server, key):
    """A browser-like client signed in with `key`: (the client, its CSRF token)."""
    browser = client(server)
    answer = call(browser, "POST", "/api/auth/session", json={"key": key})
    assert answer.status_code == 200, answer.text
    return browser, answer.json()["csrf_token"]


def copy_of(server, browser):
    """Another client holding a copy of the browser's cookie (a stolen or copied cookie)."""
    thief = client(server)
    thief.cookies.set(COOKIE, browser.cookies[COOKIE])
    return thief


def new_user_key(admin, label="dashboard"):
    user_id = call(admin, "POST", "/api/users/", json={"name": "S", "email": f"s{time.time_ns()}@example.com"})
    user_id = user_id.json()["user_id"]
    made = call(admin, "POST", f"/api/users/{user_id}/api-keys", json={"label": label}).json()
    return user_id, made["key_id"], made["key"]


@pytest.mark.parametrize("provider", ["sqlite", "mongomock"])
def test_sign_out_ends_the_session_for_every_copy_of_the_cookie(start_server, tmp_path, provider):
    server = start_server(provider, tmp_path / "data", env=ON)
    browser, token = sign_in(server, admin_key(server))
    thief = copy_of(server, browser)
    assert call(thief, "GET", "/api/users/").status_code == 200
    assert call(browser, "DELETE", "/api/auth/session", headers={"X-CSRF-Token": token}).status_code == 200
    assert call(thief, "GET", "/api/users/").status_code == 401
    assert call(thief, "GET", "/api/auth/session").status_code == 401
    refused = call(thief, "POST", "/api/users/", json={"name": "X", "email": "x@example.com"})
    assert refused.status_code == 401, refused.text  # no CSRF token can revive it either


def test_each_session_is_random_and_has_its_own_csrf_token(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data", env=ON)
    admin = client(server, admin_key(server))
    user_id, key_id, key = new_user_key(admin)
    first, first_token = sign_in(server, key)
    second, second_token = sign_in(server, key)  # the same key, another browser
    assert first.cookies[COOKIE] != second.cookies[COOKIE] and first_token != second_token
    assert key_id not in first.cookies[COOKIE] and key not in first.cookies[COOKIE]
    assert call(second, "GET", "/api/auth/session").json()["csrf_token"] == second_token
    job = {"user_id": user_id, "job_class_string": "jobs.echo.EchoJob", "name": "by cookie"}
    crossed = call(second, "POST", "/api/scheduler/jobs", json=job, headers={"X-CSRF-Token": first_token})
    assert crossed.status_code == 403 and "X-CSRF-Token" in crossed.json()["detail"]
    for odd in ("é" * 43, first_token[:-1], first_token + "x", "-"):  # never a 500, never accepted
        refused = call(first, "POST", "/api/scheduler/jobs", json=job, headers={"X-CSRF-Token": odd})
        assert refused.status_code == 403, (odd, refused.text)
    made = call(first, "POST", "/api/scheduler/jobs", json=job, headers={"X-CSRF-Token": first_token})
    assert made.status_code == 201
    # Signing one browser out leaves the other signed in.
    assert call(first, "DELETE", "/api/auth/session", headers={"X-CSRF-Token": first_token}).status_code == 200
    assert call(second, "GET", "/api/scheduler/jobs").status_code == 200


def test_the_store_keeps_only_a_digest_of_the_session(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data", env=ON)
    browser, token = sign_in(server, admin_key(server))
    cookie = browser.cookies[COOKIE]
    server.stop()
    store = open_datastore(None, "texium_db", str(tmp_path / "data"))
    try:
        (session,) = store.collection("sessions").find({})
    finally:
        store.close()
    assert session["token_hash"] == hashlib.sha256(cookie.encode()).hexdigest()
    assert cookie not in str(session) and session["csrf_token"] == token
    assert session["expires_at"] > session["created_at"]


def test_revoking_the_key_or_deleting_the_user_ends_their_sessions(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data", env=ON)
    admin = client(server, admin_key(server))
    user_id, key_id, key = new_user_key(admin)
    kept_user, kept_key_id, kept_key = new_user_key(admin, "kept")
    revoked, _ = sign_in(server, key)
    kept, _ = sign_in(server, kept_key)
    assert call(admin, "DELETE", f"/api/users/{user_id}/api-keys/{key_id}").status_code == 200
    assert call(revoked, "GET", "/api/scheduler/jobs").status_code == 401
    assert call(kept, "GET", "/api/scheduler/jobs").status_code == 200
    assert call(admin, "DELETE", f"/api/users/{kept_user}").status_code == 200
    assert call(kept, "GET", "/api/scheduler/jobs").status_code == 401


def test_a_session_expires_after_its_lifetime(start_server, tmp_path):
    server = start_server("sqlite", tmp_path / "data", env={**ON, "TEXIUM_SESSION_LIFETIME_SECONDS": "2"})
    browser, _ = sign_in(server, admin_key(server))
    assert call(browser, "GET", "/api/users/").status_code == 200
    time.sleep(2.5)
    expired = call(browser, "GET", "/api/users/")
    assert expired.status_code == 401
    assert COOKIE in expired.headers.get("Set-Cookie", "")  # the browser is told to forget it


def test_a_session_works_on_every_node_of_one_store_and_ends_on_all(start_server, tmp_path):
    first = start_server("sqlite", tmp_path / "data", env=ON)
    second = start_server("sqlite", tmp_path / "data", env=ON)
    browser, token = sign_in(first, admin_key(first))
    elsewhere = copy_of(second, browser)  # the same browser behind a load balancer
    assert call(elsewhere, "GET", "/api/users/").status_code == 200
    body = {"name": "N", "email": f"n{time.time_ns()}@example.com"}
    assert call(elsewhere, "POST", "/api/users/", json=body, headers={"X-CSRF-Token": token}).status_code == 201
    assert call(elsewhere, "DELETE", "/api/auth/session", headers={"X-CSRF-Token": token}).status_code == 200
    assert call(browser, "GET", "/api/users/").status_code == 401
