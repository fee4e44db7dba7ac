"""Real loopback peers for the built-in job tests: an SMTP server and a scripted HTTP server.

Everything binds 127.0.0.1 port 0 and is shut down by the caller (use the context managers).
"""

from __future__ import annotations

import contextlib
import http.server
import socket
import threading
from dataclasses import dataclass, field

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def closed_port() -> int:
    """A loopback port nothing listens on (bound once, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def listening_port():
    """A TCP port that accepts connections while the block runs; yields (port, close_fn)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    closed = []

    def close():
        if not closed:
            closed.append(True)
            sock.close()

    try:
        yield sock.getsockname()[1], close
    finally:
        close()


# --------------------------------------------------------------------------- SMTP


class _PortZeroController(Controller):
    """aiosmtpd's Controller with a kernel-chosen port (it would otherwise poll port 0)."""

    async def _create_server(self):
        server = await self.loop.create_server(self._factory_invoker, host=self.hostname, port=0, ssl=self.ssl_context)
        self.port = server.sockets[0].getsockname()[1]
        return server


@dataclass
class RecordingSMTPHandler:
    """Keeps every message it accepts; refuses recipients listed in `refuse`."""

    refuse: set = field(default_factory=set)
    messages: list = field(default_factory=list)

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            {
                "mail_from": envelope.mail_from,
                "rcpt_tos": list(envelope.rcpt_tos),
                "content": envelope.original_content or envelope.content,
                "login": getattr(session, "auth_data", None),
            }
        )
        return "250 Message accepted"


@contextlib.contextmanager
def smtp_server(refuse=(), credentials: tuple[str, str] | None = None):
    """Yields (handler, port). With `credentials`, AUTH is required (allowed without TLS)."""
    handler = RecordingSMTPHandler(refuse=set(refuse))
    kwargs = {}
    if credentials is not None:

        def authenticator(server, session, envelope, mechanism, auth_data):
            ok = (
                isinstance(auth_data, LoginPassword)
                and (auth_data.login.decode(), auth_data.password.decode()) == credentials
            )
            return AuthResult(success=ok, handled=False)

        kwargs = {"authenticator": authenticator, "auth_required": True, "auth_require_tls": False}
    controller = _PortZeroController(handler, hostname="127.0.0.1", **kwargs)
    controller.start()
    try:
        yield handler, controller.port
    finally:
        controller.stop()


# --------------------------------------------------------------------------- HTTP


class RecordingHTTPServer(http.server.ThreadingHTTPServer):
    """Answers each request with the next status of `statuses` (the last one repeats) and
    records (method, path, headers, body)."""

    daemon_threads = True

    def __init__(self, statuses, extra_headers=None):
        self.statuses = list(statuses)
        self.extra_headers = dict(extra_headers or {})
        self.requests: list[dict] = []
        self.lock = threading.Lock()
        super().__init__(("127.0.0.1", 0), _RecordingHandler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def next_status(self) -> int:
        with self.lock:
            return self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]


class _RecordingHandler(http.server.BaseHTTPRequestHandler):
    def _answer(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        self.server.requests.append(
            {
                "method": self.command,
                "path": self.path,
                "headers": dict(self.headers.items()),
                "body": body,
            }
        )
        status = self.server.next_status()
        payload = f'{{"answer": {status}}}'.encode()
        self.send_response(status)
        for name, value in self.server.extra_headers.items():
            self.send_header(name, value)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer

    def log_message(self, *args):  # keep test output quiet
        pass


@contextlib.contextmanager
def http_server(statuses=(200,), extra_headers=None):
    server = RecordingHTTPServer(statuses, extra_headers)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def server_doc(datastore, **fields) -> str:
    """A server record written straight into the store (health-check tests); returns its id."""
    from cryptography.fernet import Fernet

    from texium.core.datastore import new_id
    from texium.core.timeutil import utcnow

    now = utcnow()
    doc = {
        "user_id": new_id(),
        "name": "web-1",
        "hostname": "127.0.0.1",
        "port": 1,
        "status": "unknown",
        "connection_name": "c",
        "instance_url": None,
        "username": "admin",
        "password_encrypted": Fernet(Fernet.generate_key()).encrypt(b"hunter2").decode(),
        "created_at": now,
        "updated_at": now,
    }
    doc.update(fields)
    return datastore.servers.insert(doc)


def admin_owner(datastore) -> str:
    """An admin user written straight into the store, as the owner of jobs run in-process: a job
    runs on behalf of its owner, and only an admin's may use every user's records."""
    from texium.core.datastore import new_id
    from texium.core.timeutil import utcnow

    now = utcnow()
    return datastore.users.insert(
        {
            "name": "Admin",
            "email": f"admin-{new_id()}@example.com",
            "role": "admin",
            "created_at": now,
            "updated_at": now,
        }
    )


def ended_record(datastore, recorder, execution_id: str, timeout: float = 15.0) -> dict:
    """An in-process run's record once it completed or failed (the recorder flushed as it goes)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        recorder.flush(1)
        execution = datastore.executions.get(execution_id)
        if execution["status"] in ("completed", "failed"):
            return execution
        time.sleep(0.02)
    raise AssertionError(f"execution {execution_id} did not end: {datastore.executions.get(execution_id)}")
