"""https: served by Texium itself (TLS_CERT_FILE / TLS_KEY_FILE), or ended by a proxy in front.

The certificate is made by the test (python `cryptography`). The proxy is Debian's nginx, run by
the test as a throw-away server on loopback with the README's configuration; the dashboard is
used through it in Chromium.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import requests

from tests.server_process import REPO, SAMPLE_JOBS, ServerProcess, free_port, wait_for

ON = {"TEXIUM_AUTH_MODE": "on", **SAMPLE_JOBS}
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key (PEM files)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def admin_key(server: ServerProcess) -> str:
    return (server.data_dir / "admin-api-key").read_text().strip()


def sign_in(base_url: str, key: str, **kwargs) -> tuple[requests.Response, str, str]:
    """The sign-in answer, the session cookie as a Cookie header value, and the CSRF token."""
    answer = requests.post(base_url + "/api/auth/session", json={"key": key}, timeout=10, **kwargs)
    assert answer.status_code == 200, answer.text
    cookie = answer.headers["Set-Cookie"].split(";", 1)[0]
    return answer, cookie, answer.json()["csrf_token"]


def create_user_by_cookie(base_url: str, cookie: str, token: str, origin: str, **kwargs) -> requests.Response:
    """What the dashboard sends to create a user (requests keeps no Secure cookie over http)."""
    headers = {"Cookie": cookie, "X-CSRF-Token": token, "Origin": origin, **kwargs.pop("headers", {})}
    body = {"name": "By cookie", "email": f"cookie{free_port()}@example.com"}
    return requests.post(base_url + "/api/users/", json=body, headers=headers, timeout=10, **kwargs)


# --------------------------------------------------------------------------- TLS served here
def test_tls_is_served_with_hsts_and_a_secure_session_cookie(tmp_path):
    cert, key = make_certificate(tmp_path / "tls")
    env = {**ON, "TEXIUM_TLS_CERT_FILE": str(cert), "TEXIUM_TLS_KEY_FILE": str(key)}
    server = ServerProcess("sqlite", tmp_path / "data", env=env, scheme="https").start()
    try:
        base = server.api.base_url
        health = requests.get(base + "/api/scheduler/health", verify=str(cert), timeout=10)
        assert health.status_code == 200
        assert health.headers["Strict-Transport-Security"] == "max-age=31536000"
        page = requests.get(base + "/", verify=str(cert), timeout=10)
        assert page.headers["Strict-Transport-Security"] == "max-age=31536000"
        answer, cookie, token = sign_in(base, admin_key(server), verify=str(cert))
        assert "Secure" in answer.headers["Set-Cookie"].split(";")[1:] or "; Secure" in answer.headers["Set-Cookie"]
        created = create_user_by_cookie(base, cookie, token, f"https://127.0.0.1:{server.port}", verify=str(cert))
        assert created.status_code == 201, created.text
        with pytest.raises(requests.ConnectionError):  # nothing in clear on that port
            requests.get(f"http://127.0.0.1:{server.port}/api/scheduler/health", timeout=5)
        assert f"listening on https://127.0.0.1:{server.port}/" in server.log()
    finally:
        server.stop()


def test_an_unusable_certificate_stops_start_up_with_one_line(tmp_path):
    cert, _ = make_certificate(tmp_path / "tls")
    env = {**ON, "TEXIUM_TLS_CERT_FILE": str(cert), "TEXIUM_TLS_KEY_FILE": str(tmp_path / "missing.pem")}
    server = ServerProcess("sqlite", tmp_path / "data", env=env, scheme="https")
    with pytest.raises(RuntimeError, match="server exited with 2"):
        server.start()
    assert f"texium: Cannot use TLS_CERT_FILE {cert} / TLS_KEY_FILE {tmp_path / 'missing.pem'}" in server.log()
    assert "Traceback" not in server.log()


# --------------------------------------------------------------------------- behind a proxy
def test_forwarded_proto_is_believed_only_from_trusted_proxies(tmp_path):
    """X-Forwarded-Proto from TRUSTED_PROXIES: the cookie is Secure and the Origin the browser
    sends (https://...) is this server's own; from anyone else the header changes nothing."""
    trusted = ServerProcess("sqlite", tmp_path / "trusted", env={**ON, "TEXIUM_TRUSTED_PROXIES": "127.0.0.1/32"})
    untrusted = ServerProcess("sqlite", tmp_path / "untrusted", env={**ON, "TEXIUM_TRUSTED_PROXIES": "10.0.0.0/8"})
    proxied = {"X-Forwarded-Proto": "https"}
    try:
        for server in (trusted.start(), untrusted.start()):
            base, https_origin = server.api.base_url, f"https://127.0.0.1:{server.port}"
            answer, cookie, token = sign_in(base, admin_key(server), headers=proxied)
            secure = "secure" in answer.headers["Set-Cookie"].lower()
            created = create_user_by_cookie(base, cookie, token, https_origin, headers=proxied)
            if server is trusted:
                assert secure and created.status_code == 201, created.text
                assert answer.headers["Strict-Transport-Security"] == "max-age=31536000"
                plain = create_user_by_cookie(base, cookie, token, f"http://127.0.0.1:{server.port}", headers=proxied)
                assert plain.status_code == 403  # the browser was on https: an http origin is another site
            else:
                assert not secure and created.status_code == 403, created.text
                assert "Strict-Transport-Security" not in answer.headers
                assert "Cross-site request refused (Origin https://" in created.json()["detail"]
    finally:
        trusted.stop()
        untrusted.stop()


def test_an_https_public_url_makes_requests_for_its_host_https(tmp_path):
    env = {**ON, "TEXIUM_PUBLIC_URL": "https://texium.example.com", "TEXIUM_ALLOWED_HOSTS": "texium.example.com"}
    server = ServerProcess("sqlite", tmp_path / "data", env=env).start()
    try:
        base, public = server.api.base_url, {"Host": "texium.example.com"}
        answer, cookie, token = sign_in(base, admin_key(server), headers=public)
        assert "secure" in answer.headers["Set-Cookie"].lower()
        created = create_user_by_cookie(base, cookie, token, "https://texium.example.com", headers=public)
        assert created.status_code == 201, created.text
        local, _, _ = sign_in(base, admin_key(server))  # by its loopback address: plain http
        assert "secure" not in local.headers["Set-Cookie"].lower()
    finally:
        server.stop()


# --------------------------------------------------------------------------- nginx in front
def readme_nginx_server_block() -> str:
    readme = (REPO / "README.md").read_text()
    return re.search(r"### Behind a reverse proxy.*?```nginx\n(.*?)```", readme, re.S).group(1)


@pytest.fixture
def nginx_in_front(tmp_path):
    """Debian's nginx ending TLS on a free loopback port, with the README's configuration, in
    front of a Texium server that trusts it; yields (https base URL, the Texium server, the
    certificate)."""
    assert NGINX, "nginx must be installed (apt-get install nginx-light)"
    cert, key = make_certificate(tmp_path / "tls")
    server = ServerProcess("sqlite", tmp_path / "data", env={**ON, "TEXIUM_TRUSTED_PROXIES": "127.0.0.1/32"}).start()
    port, root = free_port(), tmp_path / "nginx"
    root.mkdir()
    block = (
        readme_nginx_server_block()
        .replace("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;")
        .replace("server_name texium.example.com;", "server_name localhost;")
        .replace("/etc/ssl/texium/cert.pem", str(cert))
        .replace("/etc/ssl/texium/key.pem", str(key))
        .replace("http://127.0.0.1:8000", f"http://127.0.0.1:{server.port}")
    )
    assert str(server.port) in block and str(cert) in block, block
    # Everything nginx writes stays in tmp_path: no system paths, no root needed (run as root,
    # its workers drop to nobody and only relay: nothing is buffered to disk).
    (root / "nginx.conf").write_text(
        f"""worker_processes 1;
pid {root}/nginx.pid;
error_log {root}/error.log info;
events {{ worker_connections 128; }}
http {{
    access_log {root}/access.log;
    client_body_temp_path {root}/body;
    proxy_temp_path {root}/proxy;
    fastcgi_temp_path {root}/fastcgi;
    uwsgi_temp_path {root}/uwsgi;
    scgi_temp_path {root}/scgi;
{block}}}
"""
    )
    nginx = subprocess.Popen(
        [NGINX, "-p", str(root), "-e", str(root / "error.log"), "-c", str(root / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    base = f"https://localhost:{port}"

    def answers() -> bool:
        try:
            return requests.get(base + "/api/scheduler/health", verify=str(cert), timeout=2).status_code == 200
        except requests.RequestException:
            return nginx.poll() is not None  # ends the wait; asserted below

    try:
        assert wait_for(answers, timeout=15) and nginx.poll() is None, (root / "error.log").read_text()
        yield base, server, cert
    finally:
        nginx.terminate()
        nginx.wait(10)
        server.stop()


def test_the_dashboard_works_through_nginx_ending_tls(browser, nginx_in_front):
    """Sign in and create a job from the dashboard in Chromium, through nginx on https."""
    base, server, cert = nginx_in_front
    context = browser.new_context(viewport={"width": 1280, "height": 900}, ignore_https_errors=True)
    context.set_default_timeout(15_000)
    refused = []
    page = context.new_page()
    page.on("response", lambda r: r.status == 403 and refused.append(f"{r.request.method} {r.url}"))
    try:
        page.goto(base + "/#/jobs")
        page.get_by_label("API key").fill(admin_key(server))
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("button", name="New job").click()
        page.get_by_label("Name", exact=True).fill("Through the proxy")
        page.get_by_label("Job class").select_option("jobs.echo.EchoJob")
        page.get_by_label("Owner").select_option(index=0)  # the first admin, made at start-up
        page.get_by_role("button", name="Save").click()
        page.locator("main h1").filter(has_text="Through the proxy").wait_for()
        assert refused == []
        cookie = next(c for c in context.cookies() if c["name"] == "texium_session")
        assert cookie["secure"] and cookie["httpOnly"] and cookie["sameSite"] == "Strict"
        jobs = requests.get(
            server.api.base_url + "/api/scheduler/jobs",
            headers={"Authorization": f"Bearer {admin_key(server)}"},
            timeout=10,
        ).json()["data"]
        assert [job["name"] for job in jobs] == ["Through the proxy"]
        assert "Strict-Transport-Security" in requests.get(base + "/", verify=str(cert), timeout=10).headers
    finally:
        context.close()
