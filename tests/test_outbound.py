"""Outbound calls of the jobs (webhook, health check) and the SMTP login rule.

By default the webhook and the health check refuse loopback, link-local (the cloud metadata
address), multicast, unspecified and reserved addresses in every spelling, checked on the
resolved address at connect time, and always the cloud metadata services and the machine's own
addresses; OUTBOUND_ALLOW allows networks, OUTBOUND_DENY_PRIVATE refuses private ranges too. The
peers here are real: loopback HTTP(S) and SMTP servers, and addresses put on the loopback interface
of a network namespace of the test's own.
"""

from __future__ import annotations

import contextlib
import http.server
import ipaddress
import json
import os
import shlex
import socket
import ssl
import subprocess
import sys
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.jobs_fixtures import (
    RecordingSMTPHandler,
    _PortZeroController,
    admin_owner,
    closed_port,
    http_server,
    listening_port,
    server_doc,
    smtp_server,
)
from tests.server_process import REPO, ServerProcess, wait_for
from texium.config import ConfigError, load_settings
from texium.core.datastore import new_id, open_datastore
from texium.core.security.local_addresses import read_machine_addresses
from texium.core.security.outbound import (
    METADATA,
    OWN,
    OutboundPolicy,
    OutboundRefused,
    http_request,
    parse_networks,
)
from texium.jobs.base import JobContext, JobError
from texium.jobs.email import EmailNotificationJob
from texium.jobs.server import ServerHealthCheckJob
from texium.jobs.webhook import WebhookJob

LOOPBACK_SPELLINGS = ["127.1", "2130706433", "0x7f.1", "017700000001", "localhost", "[::1]", "[::ffff:127.0.0.1]"]
LOOPBACK = "is a loopback address (set OUTBOUND_ALLOW to allow it)"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def store(tmp_path):
    ds = open_datastore(None, "texium_test", str(tmp_path / "db"))
    yield ds
    ds.close()


@pytest.fixture
def run(store, tmp_path):
    """run(cls, *args, **kwargs) with `run.config` as the job's settings (default: no OUTBOUND_*)."""

    def call(cls, *args, **kwargs):
        context = JobContext(
            execution_id=new_id(),
            job_id=new_id(),
            job_name=f"test {cls.__name__}",
            user_id=admin_owner(store),
            datastore=store,
            config=call.config,
        )
        return cls(context).run(*args, **kwargs)

    call.config = {"DATA_DIR": str(tmp_path / "data")}
    call.store = store
    return call


@pytest.fixture
def fake_dns(monkeypatch):
    """names: {name: [address, ...] or a callable returning them}; calls: the names looked up."""
    names: dict = {}
    calls: list[str] = []
    real = socket.getaddrinfo

    def getaddrinfo(host, port, *args, **kwargs):
        if host not in names:
            return real(host, port, *args, **kwargs)
        calls.append(host)
        answer = names[host]
        answer = answer() if callable(answer) else answer
        infos = []
        for address in answer:
            if ":" in address:
                infos.append((socket.AF_INET6, socket.SOCK_STREAM, 6, "", (address, int(port), 0, 0)))
            else:
                infos.append((socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, int(port))))
        return infos

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    return names, calls


# --------------------------------------------------------------------------- the rule


@pytest.mark.parametrize(
    "address, rule",
    [
        ("127.0.0.1", "a loopback address"),
        ("127.255.0.9", "a loopback address"),
        ("::1", "a loopback address"),
        ("::ffff:127.0.0.1", "a loopback address"),
        ("0.0.0.0", "an unspecified address"),
        ("0.1.2.3", "an unspecified address"),
        ("::", "an unspecified address"),
        ("169.254.169.254", "a link-local address"),
        ("::ffff:169.254.169.254", "a link-local address"),
        ("fe80::1%lo", "a link-local address"),
        ("224.0.0.1", "a multicast address"),
        ("239.255.255.250", "a multicast address"),
        ("ff02::1", "a multicast address"),
        ("255.255.255.255", "a reserved address"),
        ("240.0.0.1", "a reserved address"),
        ("::7f00:1", "a reserved address"),  # IPv4-compatible
    ],
)
def test_special_addresses_are_refused_by_default(address, rule):
    assert OutboundPolicy().refusal(address) == rule
    assert OutboundPolicy(deny_private=True).refusal(address) == rule
    # OUTBOUND_ALLOW lifts the refusal for exactly the networks it names.
    network = str(ipaddress.ip_network(address.split("%")[0]))
    assert OutboundPolicy.from_settings([network]).refusal(address) is None


def test_private_ranges_are_allowed_unless_denied():
    default, strict = OutboundPolicy(), OutboundPolicy.from_settings(None, deny_private=True)
    for address in ("10.1.2.3", "172.16.0.1", "192.168.1.10", "100.64.0.1", "fd00::5", "fec0::1", "::ffff:10.0.0.1"):
        assert default.refusal(address) is None, address
        assert strict.refusal(address) == "a private address", address
    assert OutboundPolicy.from_settings("10.0.0.0/8", deny_private=True).refusal("10.1.2.3") is None
    for address in ("93.184.216.34", "2606:4700::1111"):  # public addresses: always allowed
        assert default.refusal(address) is None and strict.refusal(address) is None


@pytest.mark.parametrize("address", ["fd00:ec2::254", "100.100.100.200", "192.0.0.192", "168.63.129.16"])
def test_cloud_metadata_addresses_are_refused_even_where_private_ones_are_allowed(address):
    """AWS over IPv6, Alibaba, Oracle and Azure: none of them is link-local, and 192.0.0.192 and
    168.63.129.16 even count as public, so neither rule caught them."""
    for policy in (OutboundPolicy(), OutboundPolicy(deny_private=True)):
        assert policy.refusal(address) == METADATA, (address, policy)
    assert OutboundPolicy().refusal(f"::ffff:{address}" if "." in address else address) == METADATA
    assert OutboundPolicy.from_settings([address]).refusal(address) is None  # named in OUTBOUND_ALLOW


def test_the_machine_s_own_addresses_are_refused_unless_allowed():
    own = {ipaddress.ip_address("10.9.9.9"), ipaddress.ip_address("fd12::9")}
    policy = OutboundPolicy(own_addresses=lambda: own)
    for address in ("10.9.9.9", "::ffff:10.9.9.9", "fd12::9"):
        assert policy.refusal(address) == OWN, address
    assert policy.refusal("10.9.9.8") is None
    allowed = OutboundPolicy(parse_networks("10.9.9.0/24"), own_addresses=lambda: own)
    assert allowed.refusal("10.9.9.9") is None
    assert OutboundPolicy().refusal("127.0.0.1") == "a loopback address"  # the rule it had, named as before
    # Read from the interfaces: loopback is always among them.
    assert {ipaddress.ip_address("127.0.0.1")} <= read_machine_addresses()


def test_allow_list_parsing():
    assert parse_networks(["127.0.0.0/8", " 10.0.0.0/8 ,fd00::/8", ""]) == tuple(
        ipaddress.ip_network(n) for n in ("127.0.0.0/8", "10.0.0.0/8", "fd00::/8")
    )
    assert parse_networks("127.0.0.1") == (ipaddress.ip_network("127.0.0.1/32"),)
    assert parse_networks(None) == parse_networks([]) == parse_networks("") == ()
    for bad in (["not-a-net"], "10.0.0.0/33", [5], 5):
        with pytest.raises(ValueError, match="^OUTBOUND_ALLOW: "):
            parse_networks(bad)


def test_settings_are_validated_with_one_line_naming_the_setting(tmp_path):
    settings = load_settings(
        environ={"TEXIUM_OUTBOUND_ALLOW": "127.0.0.0/8, 10.0.0.0/8", "TEXIUM_OUTBOUND_DENY_PRIVATE": "true"},
        cwd=str(tmp_path),
    )
    assert settings["OUTBOUND_ALLOW"] == ["127.0.0.0/8", "10.0.0.0/8"] and settings["OUTBOUND_DENY_PRIVATE"] is True
    defaults = load_settings(environ={}, cwd=str(tmp_path))
    assert defaults["OUTBOUND_ALLOW"] == [] and defaults["OUTBOUND_DENY_PRIVATE"] is False
    assert defaults["SMTP_ALLOW_PLAINTEXT_LOGIN"] is False
    with pytest.raises(ConfigError) as info:
        load_settings(environ={"TEXIUM_OUTBOUND_ALLOW": "127.0.0.0/8,localhost"}, cwd=str(tmp_path))
    assert str(info.value) == (
        "Invalid setting OUTBOUND_ALLOW: 'localhost' is not a CIDR network such as 10.0.0.0/8 or fd00::/8"
    )
    with pytest.raises(
        ConfigError, match="^Invalid setting TEXIUM_OUTBOUND_DENY_PRIVATE: 'maybe' is not true or false$"
    ):
        load_settings(environ={"TEXIUM_OUTBOUND_DENY_PRIVATE": "maybe"}, cwd=str(tmp_path))
    with pytest.raises(ConfigError, match="^Invalid setting SMTP_ALLOW_PLAINTEXT_LOGIN: "):
        load_settings(flags={"SMTP_ALLOW_PLAINTEXT_LOGIN": "yes"}, environ={}, cwd=str(tmp_path))


# --------------------------------------------------------------------------- webhook


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS)
def test_webhook_refuses_every_spelling_of_loopback(run, host):
    with http_server([200]) as web:
        port = web.server_address[1]
        with pytest.raises(JobError) as info:
            run(WebhookJob, f"http://{host}:{port}/hook", retries=2, backoff=0.01)
        assert web.requests == []  # nothing was sent
    message = str(info.value)
    assert message.startswith(f"POST http://{host}:{port}/hook refused: "), message
    assert message.endswith("a loopback address (set OUTBOUND_ALLOW to allow it)"), message
    assert "attempt" not in message  # refused at once, not retried


@pytest.mark.parametrize(
    "url, needle",
    [
        ("http://0.0.0.0:{port}/", "refused: 0.0.0.0 is an unspecified address (set OUTBOUND_ALLOW to allow it)"),
        ("http://[::]:{port}/", "refused: :: is an unspecified address"),
        ("http://169.254.169.254/latest/meta-data/", "refused: 169.254.169.254 is a link-local address"),
        ("http://[fe80::1]:{port}/", "refused: fe80::1 is a link-local address"),
        ("http://224.0.0.251:{port}/", "refused: 224.0.0.251 is a multicast address"),
        ("https://[ff02::1]/", "refused: ff02::1 is a multicast address"),
        ("http://255.255.255.255:{port}/", "refused: 255.255.255.255 is a reserved address"),
    ],
)
def test_webhook_refuses_unspecified_link_local_multicast_reserved(run, url, needle):
    run.config = dict(run.config, OUTBOUND_ALLOW=["127.0.0.0/8"])  # allowing loopback allows nothing else
    with listening_port() as (port, _close):
        with pytest.raises(JobError) as info:
            run(WebhookJob, url.format(port=port), retries=0, timeout=2)
    assert needle in str(info.value)


def test_webhook_refuses_a_name_that_resolves_to_loopback(run, fake_dns):
    names, calls = fake_dns
    names["hooks.example.test"] = ["127.0.0.1"]
    names["metadata.example.test"] = ["169.254.169.254"]
    names["mixed.example.test"] = ["::1", "127.0.0.1"]
    with http_server([200]) as web:
        port = web.server_address[1]
        for name, rule in (
            ("hooks.example.test", "127.0.0.1, a loopback address"),
            ("metadata.example.test", "169.254.169.254, a link-local address"),
            ("mixed.example.test", "::1, a loopback address"),
        ):
            with pytest.raises(JobError) as info:
                run(WebhookJob, f"http://{name}:{port}/", retries=0)
            assert f"refused: {name} resolves to {rule} (set OUTBOUND_ALLOW to allow it)" in str(info.value)
        assert web.requests == []


def test_webhook_with_outbound_allow_reaches_a_real_local_server(run, fake_dns):
    run.config = dict(run.config, OUTBOUND_ALLOW="10.0.0.0/8, 127.0.0.0/8")  # text, as from the environment
    with http_server([200]) as web:
        port = web.server_address[1]
        out = run(WebhookJob, f"http://127.1:{port}/a", event="x")
        assert "HTTP 200" in out
        assert web.requests[-1]["path"] == "/a" and web.requests[-1]["headers"]["Host"] == f"127.1:{port}"

        # A name: the connection goes to the checked address, the Host header keeps the name.
        names, _ = fake_dns
        names["hooks.example.test"] = ["127.0.0.1"]
        out = run(WebhookJob, f"http://hooks.example.test:{port}/b", retries=0)
        assert "HTTP 200" in out and web.requests[-1]["headers"]["Host"] == f"hooks.example.test:{port}"

        # user:password@ becomes Basic authentication, and is never shown.
        out = run(WebhookJob, f"http://hook-user:p%40ss@127.0.0.1:{port}/auth", retries=0)
        assert "p%40ss" not in out and "p@ss" not in out and f"http://***@127.0.0.1:{port}/auth" in out
        assert web.requests[-1]["headers"]["Authorization"] == "Basic aG9vay11c2VyOnBAc3M="  # hook-user:p@ss

        # The allowance is exactly the networks listed.
        run.config = dict(run.config, OUTBOUND_ALLOW=["127.0.0.2/32"])
        with pytest.raises(JobError, match="refused: 127.0.0.1 is a loopback address"):
            run(WebhookJob, f"http://127.0.0.1:{port}/c", retries=0)
    assert [r["path"] for r in web.requests] == ["/a", "/b", "/auth"]


def test_connection_goes_to_the_checked_address_not_a_second_lookup(run, fake_dns):
    """DNS rebinding: the name resolves to an allowed address once and to another afterwards.
    The job connects to the address it checked, so the later answer never matters."""
    names, calls = fake_dns
    answers = iter([["127.0.0.1"]])
    names["rebind.example.test"] = lambda: next(answers, ["127.0.0.2"])
    run.config = dict(run.config, OUTBOUND_ALLOW=["127.0.0.1/32"])  # 127.0.0.2 stays refused
    with http_server([200]) as web:
        out = run(WebhookJob, f"http://rebind.example.test:{web.server_address[1]}/", retries=0)
    assert "HTTP 200" in out and len(web.requests) == 1
    assert calls == ["rebind.example.test"]  # resolved once, by the policy
    with pytest.raises(JobError, match="resolves to 127.0.0.2, a loopback address"):
        run(WebhookJob, "http://rebind.example.test:1/", retries=0)


def test_redirect_to_loopback_is_not_followed(run):
    run.config = dict(run.config, OUTBOUND_ALLOW=["127.0.0.1/32"])
    with http_server([200]) as target:
        location = f"http://127.0.0.1:{target.server_address[1]}/internal"
        with http_server([302], extra_headers={"Location": location}) as web:
            with pytest.raises(JobError, match=r"was redirected \(HTTP 302\); redirects are not followed"):
                run(WebhookJob, web.url + "/hook", retries=0)
            assert len(web.requests) == 1
        assert target.requests == []  # the redirect target was never contacted


def test_outbound_settings_errors_fail_the_job(run):
    run.config = dict(run.config, OUTBOUND_ALLOW=["nonsense"])
    with pytest.raises(JobError, match="^invalid setting OUTBOUND_ALLOW: 'nonsense' is not a CIDR network"):
        run(WebhookJob, "http://127.0.0.1:1/")
    run.config = dict(run.config, OUTBOUND_ALLOW=[], OUTBOUND_DENY_PRIVATE="perhaps")
    with pytest.raises(JobError, match="OUTBOUND_DENY_PRIVATE must be true or false"):
        run(WebhookJob, "http://127.0.0.1:1/")


def test_deny_private_refuses_private_targets(run, fake_dns):
    names, _ = fake_dns
    names["intranet.example.test"] = ["192.168.10.20"]
    run.config = dict(run.config, OUTBOUND_DENY_PRIVATE=True)
    hint = "(OUTBOUND_DENY_PRIVATE is on; set OUTBOUND_ALLOW to allow it)"
    for url, message in (
        ("http://10.255.255.1/", f"refused: 10.255.255.1 is a private address {hint}"),
        (
            "http://intranet.example.test/",
            f"refused: intranet.example.test resolves to 192.168.10.20, a private address {hint}",
        ),
    ):
        with pytest.raises(JobError) as info:
            run(WebhookJob, url, retries=0, timeout=1)
        assert str(info.value) == f"POST {url} {message}"


# --------------------------------------------------------------------------- https


def _certificate(tmp_path, name: str, ips=()) -> tuple[str, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    alt_names = [x509.DNSName(name), *(x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips)]
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, False, False, False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / f"{name}.crt", tmp_path / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return str(cert_path), str(key_path)


@contextlib.contextmanager
def https_server(cert: str, key: str):
    """A recording HTTPS server on 127.0.0.1; `server.sni` lists the server names clients sent."""
    with http_server([200]) as web:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        web.sni = []
        context.sni_callback = lambda sslobj, name, ctx: web.sni.append(name)
        web.socket = context.wrap_socket(web.socket, server_side=True)
        yield web


def test_https_connects_to_the_checked_address_with_sni_and_certificate_on_the_name(
    run, fake_dns, tmp_path, monkeypatch
):
    cert, key = _certificate(tmp_path, "hooks.example.test")
    monkeypatch.setenv("SSL_CERT_FILE", cert)  # ssl.create_default_context() trusts this certificate
    names, calls = fake_dns
    names["hooks.example.test"] = ["127.0.0.1"]
    run.config = dict(run.config, OUTBOUND_ALLOW=["127.0.0.0/8"])
    with https_server(cert, key) as web:
        port = web.server_address[1]
        out = run(WebhookJob, f"https://hooks.example.test:{port}/tls", retries=0, timeout=5)
        assert "HTTP 200" in out
        assert web.sni == ["hooks.example.test"]
        assert web.requests[0]["headers"]["Host"] == f"hooks.example.test:{port}"
        assert calls == ["hooks.example.test"]

        # The same server by its address: the certificate does not name 127.0.0.1, so TLS fails.
        with pytest.raises(JobError, match="CERTIFICATE_VERIFY_FAILED|certificate verify failed"):
            run(WebhookJob, f"https://127.0.0.1:{port}/tls", retries=0, timeout=5)
        assert len(web.requests) == 1

        # http_request, the helper both jobs use, reports the address it connected to.
        answer = http_request(
            OutboundPolicy.from_settings(["127.0.0.0/8"]), "GET", f"https://hooks.example.test:{port}/x", timeout=5
        )
        assert answer.status == 200 and answer.peer == "127.0.0.1"
        with pytest.raises(OutboundRefused):
            http_request(OutboundPolicy(), "GET", f"https://hooks.example.test:{port}/x", timeout=5)


# --------------------------------------------------------------------------- health check


@pytest.mark.parametrize("host", [*LOOPBACK_SPELLINGS, "0.0.0.0", "169.254.169.254", "224.0.0.1"])
def test_health_check_refuses_special_hosts_and_leaves_the_server_unchanged(run, host):
    with listening_port() as (port, _close):
        sid = server_doc(run.store, hostname=host.strip("[]"), port=port, status="running")
        with pytest.raises(JobError) as info:
            run(ServerHealthCheckJob, sid, timeout=2)
    message = str(info.value)
    assert message.startswith(f"TCP {host.strip('[]')}:{port} refused: "), message
    assert message.endswith("(set OUTBOUND_ALLOW to allow it)") and "address" in message
    doc = run.store.servers.get(sid)
    assert doc["status"] == "running" and "last_check" not in doc


def test_health_check_is_no_port_scanner(run):
    """Open and closed loopback ports give the same answer: refused before any connection."""
    with listening_port() as (open_port, _close):
        answers = []
        for port in (open_port, closed_port()):
            sid = server_doc(run.store, hostname="127.0.0.1", port=port)
            with pytest.raises(JobError) as info:
                run(ServerHealthCheckJob, sid, timeout=2)
            answers.append(str(info.value).replace(str(port), "PORT"))
    assert answers[0] == answers[1] == f"TCP 127.0.0.1:PORT refused: 127.0.0.1 {LOOPBACK}"


def test_health_check_instance_url_goes_through_the_rule_too(run):
    run.config = dict(run.config, OUTBOUND_ALLOW=["127.0.0.0/8"])
    with http_server([200]) as web:
        port = web.server_address[1]
        sid = server_doc(run.store, port=port, instance_url=web.url + "/health")
        out = run(ServerHealthCheckJob, sid, timeout=2)
        assert "is running" in out and f"HTTP GET {web.url}/health: 200" in out

        sid = server_doc(run.store, port=port, instance_url="http://169.254.169.254/latest/meta-data/")
        with pytest.raises(JobError) as info:
            run(ServerHealthCheckJob, sid, timeout=2)
        assert str(info.value) == (
            "HTTP GET http://169.254.169.254/latest/meta-data/ refused: 169.254.169.254 is a link-local address "
            "(set OUTBOUND_ALLOW to allow it)"
        )
        assert run.store.servers.get(sid)["status"] == "unknown"

    # A redirect is reported as the status the instance URL answers, not followed.
    with http_server([200]) as target:
        location = f"http://127.0.0.1:{target.server_address[1]}/"
        with http_server([301], extra_headers={"Location": location}) as web:
            sid = server_doc(run.store, port=web.server_address[1], instance_url=web.url + "/")
            out = run(ServerHealthCheckJob, sid, timeout=2)
        assert ": 301 (" in out and target.requests == []


# --------------------------------------------------------------------------- through the API


def test_a_refused_target_is_a_failed_execution_naming_the_rule(start_server, tmp_path):
    server = start_server("sqlite", data_dir=tmp_path / "data")  # default settings: no OUTBOUND_ALLOW
    api = server.api
    user_id = api.create_user()
    with http_server([200]) as web:
        job_id = api.create_job(
            user_id,
            job_class_string="jobs.webhook.WebhookJob",
            name="Loopback hook",
            pub_args=[f"http://2130706433:{web.server_address[1]}/"],
            pub_kwargs={"retries": 0},
            is_enabled=False,
        )
        started = api.post(f"/api/scheduler/jobs/{job_id}/run")
        assert started.status_code in (200, 202), started.text
        execution = api.wait_execution(started.json()["execution_id"])
        assert web.requests == []
    assert execution["status"] == "failed", execution
    assert execution["error"] == (
        f"POST http://2130706433:{web.server_address[1]}/ refused: 2130706433 resolves to 127.0.0.1, "
        "a loopback address (set OUTBOUND_ALLOW to allow it)"
    )


# Inside a network namespace of its own (nothing is exposed, nothing real is reached), these are
# put on the loopback interface: the metadata addresses, an address of the machine (10.77.0.1)
# and one that OUTBOUND_ALLOW names (10.77.0.2). One receiver answers on all of them.
NAMESPACE_ADDRESSES = ("100.100.100.200", "192.0.0.192", "168.63.129.16", "fd00:ec2::254", "10.77.0.1", "10.77.0.2")
INTERNAL_REPLY = "internal-service-page-4f7c"
ENDED = ("completed", "failed", "timeout", "cancelled")


class _DualStackReceiver(http.server.ThreadingHTTPServer):
    address_family = socket.AF_INET6
    daemon_threads = True

    def server_bind(self):
        self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _Answer(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        body = INTERNAL_REPLY.encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def webhooks_inside_the_namespace(data_dir: str) -> None:
    """Run by test_a_user_s_webhook_reaches_no_metadata_service_and_not_this_machine in the namespace:
    prints {host: {owner role: [status, output + error]}} as JSON."""
    receiver = _DualStackReceiver(("::", 0), _Answer)
    threading.Thread(target=receiver.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    port = receiver.server_address[1]
    env = {"TEXIUM_AUTH_MODE": "on", "TEXIUM_AUTH_FAILURES_PER_MINUTE": "1000", "TEXIUM_OUTBOUND_ALLOW": "10.77.0.2"}
    server = ServerProcess("sqlite", Path(data_dir), env=env).start()
    try:
        admin = requests.Session()
        admin.headers["Authorization"] = "Bearer " + (Path(data_dir) / "admin-api-key").read_text().strip()
        base = server.api.base_url

        def owner(role: str) -> tuple[str, requests.Session]:
            body = {"name": role, "email": f"{role}@example.org", "role": role}
            user_id = admin.post(base + "/api/users/", json=body).json()["user_id"]
            session = requests.Session()
            key = admin.post(f"{base}/api/users/{user_id}/api-keys", json={"label": role}).json()["key"]
            session.headers["Authorization"] = f"Bearer {key}"
            return user_id, session

        owners = {"user": owner("user"), "admin": owner("admin")}
        results: dict = {}
        for address in NAMESPACE_ADDRESSES:
            host = f"[{address}]" if ":" in address else address
            for role, (user_id, session) in owners.items():
                job = {
                    "user_id": user_id,
                    "job_class_string": "jobs.webhook.WebhookJob",
                    "name": f"hook {address}",
                    "pub_args": [f"http://{host}:{port}/latest/meta-data/"],
                    "pub_kwargs": {"retries": 0, "timeout": 3},
                    "is_enabled": False,
                }
                created = session.post(base + "/api/scheduler/jobs", json=job)
                assert created.status_code == 201, created.text
                started = session.post(f"{base}/api/scheduler/jobs/{created.json()['job_id']}/run").json()
                url = f"{base}/api/scheduler/executions/{started['execution_id']}"
                seen = wait_for(lambda: (e := session.get(url).json()["data"])["status"] in ENDED and e, 20)  # noqa: B023
                results.setdefault(address, {})[role] = [seen["status"], f"{seen['output']}\n{seen['error']}"]
        print(json.dumps(results))
    finally:
        server.stop()
        receiver.shutdown()


def test_a_user_s_webhook_reaches_no_metadata_service_and_not_this_machine(tmp_path):
    """Real addresses on a real interface, a real server and receiver: the metadata services and
    the machine's own address are refused for every owner; a private address that OUTBOUND_ALLOW
    names is reached, and its reply is in the output of an admin's job only."""
    setup = ["ip link set lo up"] + [
        f"ip {'-6 ' if ':' in address else ''}addr add {address}/{128 if ':' in address else 32} dev lo"
        for address in NAMESPACE_ADDRESSES
    ]
    code = f"from tests.test_outbound import webhooks_inside_the_namespace as w; w({str(tmp_path / 'data')!r})"
    result = subprocess.run(
        ["unshare", "--net", "sh", "-ec", " && ".join([*setup, f"{sys.executable} -c {shlex.quote(code)}"])],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    results = json.loads(result.stdout.strip().splitlines()[-1])
    for address in NAMESPACE_ADDRESSES[:4]:
        for role in ("user", "admin"):
            status, text = results[address][role]
            assert status == "failed" and f"{address} is a cloud metadata address" in text, (address, role, text)
            assert INTERNAL_REPLY not in text
    for role in ("user", "admin"):
        status, text = results["10.77.0.1"][role]
        assert status == "failed" and "10.77.0.1 is an address of this machine" in text, (role, text)
    user_status, user_text = results["10.77.0.2"]["user"]
    admin_status, admin_text = results["10.77.0.2"]["admin"]
    assert user_status == admin_status == "completed", results["10.77.0.2"]
    assert INTERNAL_REPLY not in user_text and "(not shown: the reply came from a private address" in user_text
    assert f"Response: {INTERNAL_REPLY}" in admin_text


# --------------------------------------------------------------------------- SMTP login


def _smtp_config(port: int, **extra) -> dict:
    return {"SMTP_HOST": "127.0.0.1", "SMTP_PORT": port, "SMTP_FROM": "texium@example.org", "SMTP_TIMEOUT": 5, **extra}


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_smtp_login_over_plain_tcp_is_refused_unless_allowed(run):
    with smtp_server(credentials=("mailer", "s3cret-pw")) as (handler, port):
        login = {"SMTP_USERNAME": "mailer", "SMTP_PASSWORD": "s3cret-pw"}
        run.config = _smtp_config(port, **login)
        with pytest.raises(JobError) as info:
            run(EmailNotificationJob, "bob@example.com", message="hi")
        message = str(info.value)
        assert message.startswith("SMTP login refused: SMTP_USERNAME is set but the connection to 127.0.0.1:")
        assert "SMTP_STARTTLS" in message and "SMTP_ALLOW_PLAINTEXT_LOGIN=true" in message
        assert "s3cret-pw" not in message and handler.messages == []

        run.config = _smtp_config(port, SMTP_ALLOW_PLAINTEXT_LOGIN=True, **login)
        assert "Email sent to bob@example.com" in run(EmailNotificationJob, "bob@example.com", message="hi")
        assert len(handler.messages) == 1

        # SMTP_STARTTLS on a server without STARTTLS: the job fails before any login is sent.
        run.config = _smtp_config(port, SMTP_STARTTLS=True, **login)
        with pytest.raises(JobError, match="STARTTLS extension not supported"):
            run(EmailNotificationJob, "bob@example.com", message="hi")
    assert len(handler.messages) == 1

    # Without a login, plain TCP stays allowed.
    with smtp_server() as (handler, port):
        run.config = _smtp_config(port)
        assert "Email sent to" in run(EmailNotificationJob, "carol@example.com", message="hi")
        assert len(handler.messages) == 1


def test_smtp_login_with_starttls_is_sent(run, tmp_path, monkeypatch):
    cert, key = _certificate(tmp_path, "localhost", ips=["127.0.0.1"])
    monkeypatch.setenv("SSL_CERT_FILE", cert)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    handler = RecordingSMTPHandler()
    logins = []

    def authenticator(server, session, envelope, mechanism, auth_data):
        logins.append((session.ssl is not None, auth_data.login.decode(), auth_data.password.decode()))
        return True

    controller = _PortZeroController(
        handler, hostname="127.0.0.1", tls_context=tls, require_starttls=True, authenticator=authenticator
    )
    controller.start()
    try:
        run.config = _smtp_config(controller.port, SMTP_STARTTLS=True, SMTP_USERNAME="mailer", SMTP_PASSWORD="pw")
        assert "Email sent to" in run(EmailNotificationJob, "dave@example.com", message="over TLS")
    finally:
        controller.stop()
    assert logins == [(True, "mailer", "pw")]  # the login happened inside TLS
    assert len(handler.messages) == 1
