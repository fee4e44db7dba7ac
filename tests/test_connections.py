"""Connection floods without a key: a server under a small open-file limit stays up.

Each server runs with RLIMIT_NOFILE set in its own process (preexec_fn), as under systemd's
default of 1024, only smaller; the attackers hold requests they never finish.
"""

from __future__ import annotations

import http.client
import json
import resource
import socket
import time

import psutil

from tests.server_process import SAMPLE_JOBS, ServerProcess, wait_for

HALF_REQUEST = b"GET /api/scheduler/health HTTP/1.1\r\nHost: 127.0.0.1\r\n"  # never finished


def file_limit(files: int):
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))

    return limit


def start(tmp_path, files: int, env: dict | None = None) -> ServerProcess:
    server = ServerProcess(
        "sqlite", tmp_path / "data", env={**SAMPLE_JOBS, **(env or {})}, preexec_fn=file_limit(files)
    )
    return server.start()


def health_from(server: ServerProcess, source: str, timeout: float = 3) -> int | None:
    """The health answer's status, asked from another loopback address; None if none came."""
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout, source_address=(source, 0))
    try:
        connection.request("GET", "/api/scheduler/health")
        return connection.getresponse().status
    except OSError:
        return None
    finally:
        connection.close()


def hold_half_requests(port: int, count: int) -> list[socket.socket]:
    held = []
    for _ in range(count):
        try:
            sock = socket.create_connection(("127.0.0.1", port), timeout=2)
            sock.sendall(HALF_REQUEST)
            held.append(sock)
        except OSError:
            pass
    return held


def closed_by_server(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1, socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def cpu_seconds_over(pid: int, seconds: float) -> float:
    process = psutil.Process(pid)
    before = process.cpu_times()
    time.sleep(seconds)
    after = process.cpu_times()
    return (after.user + after.system) - (before.user + before.system)


def test_idle_half_requests_cannot_take_a_server_down(tmp_path):
    """150 half-sent requests from one address against a 96-file limit: the server keeps its
    handles (one address gets at most half the connections the limit allows, the rest are
    closed at once), health answers other clients, no core spins, the log stays short."""
    server = start(tmp_path, 96)
    try:
        held = hold_half_requests(server.port, 150)
        time.sleep(1)
        assert health_from(server, "127.0.0.2") == 200
        assert cpu_seconds_over(server.process.pid, 3) < 0.5
        assert health_from(server, "127.0.0.3") == 200
        open_ones = [sock for sock in held if not closed_by_server(sock)]
        assert 0 < len(open_ones) <= 16, len(open_ones)  # (96 - 64 reserved) / 2 per address
        log = server.log()
        assert "Too many open files" not in log
        assert log.count("Refused connections") <= 2 and len(log) < 20_000, log[-3000:]
        assert "MAX_CONNECTIONS=1000 does not fit the open-file limit of 96" in log
        for sock in held:
            sock.close()
    finally:
        server.stop()


def test_out_of_file_handles_the_server_pauses_accepting_instead_of_spinning(tmp_path):
    """When something else (here a job) has taken every handle, accept() fails: the server
    stops accepting for a moment, logs that once, and serves again when handles come back."""
    server = start(tmp_path, 256)
    try:
        api = server.api
        marker = tmp_path / "held"
        job_id = api.create_job(
            api.create_user(),
            job_class_string="tests.sample_jobs.handles.HandleHogJob",
            pub_args=[str(marker)],
            pub_kwargs={"seconds": 5},
            minute="0",
            hour="0",
            day_of_month="1",
            month="1",  # yearly: no occurrence during the test but its own run-now
        )
        api.post(f"/api/scheduler/jobs/{job_id}/run")
        assert wait_for(lambda: marker.exists() and marker.read_text(), timeout=10)
        held = hold_half_requests(server.port, 20)
        assert cpu_seconds_over(server.process.pid, 2.5) < 0.5
        log = server.log()
        assert log.count("Cannot accept connections: Too many open files") == 1, log[-3000:]
        assert len(log) < 20_000, log[-3000:]
        assert health_from(server, "127.0.0.2", timeout=15) == 200  # once the job gave them back
        executions = api.get(f"/api/scheduler/executions?job_id={job_id}").json()["data"]
        assert executions[0]["status"] == "completed", json.dumps(executions[0])
        for sock in held:
            sock.close()
    finally:
        server.stop()


def test_a_client_dribbling_its_body_is_dropped(tmp_path):
    """A half-sent body does not hold a connection for ever (BODY_TIMEOUT_SECONDS)."""
    server = start(tmp_path, 1024, env={"TEXIUM_BODY_TIMEOUT_SECONDS": "1"})
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
            sock.sendall(b"POST /api/users/ HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n\r\n{")
            started = time.monotonic()
            assert wait_for(lambda: closed_by_server(sock), timeout=8)
            assert time.monotonic() - started < 4
    finally:
        server.stop()
