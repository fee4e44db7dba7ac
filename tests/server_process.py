"""Start and stop real Texium servers (`python -m texium.server`) for the tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import requests
import urllib3

PROVIDERS = ("sqlite", "mongomock")
REPO = Path(__file__).resolve().parents[1]
SAMPLE_JOBS = {"TEXIUM_JOB_CLASS_PACKAGES": "tests.sample_jobs"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout=10.0, interval=0.05):
    """The predicate's first truthy value within `timeout` seconds, else its last value."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    return predicate()


def live_members(pgid: int) -> list[int]:
    """Pids of the non-zombie processes of group `pgid` (zombies wait for a reaper, harmless)."""
    import psutil

    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return []
    pids = []
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == pgid and process.status() != psutil.STATUS_ZOMBIE:
                pids.append(process.pid)
        except (OSError, psutil.Error):
            pass
    return pids


class Api:
    """A tiny client: `api.get("/api/users/")` returns the requests.Response."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.session = requests.Session()

    def request(self, method: str, path: str, **kwargs) -> requests.Response:
        kwargs.setdefault("timeout", 30)
        return self.session.request(method, self.base_url + path, **kwargs)

    def get(self, path: str, **kwargs):
        return self.request("GET", path, **kwargs)

    def post(self, path: str, json=None, **kwargs):
        return self.request("POST", path, json=json, **kwargs)

    def put(self, path: str, json=None, **kwargs):
        return self.request("PUT", path, json=json, **kwargs)

    def patch(self, path: str, **kwargs):
        return self.request("PATCH", path, **kwargs)

    def delete(self, path: str, **kwargs):
        return self.request("DELETE", path, **kwargs)

    # Helpers for the objects most tests need.
    def create_user(self, **fields) -> str:
        body = {"name": "Test User", "email": f"user{time.time_ns()}@example.com", **fields}
        response = self.post("/api/users/", json=body)
        assert response.status_code == 201, response.text
        return response.json()["user_id"]

    def create_job(self, user_id: str, **fields) -> str:
        body = {"user_id": user_id, "job_class_string": "jobs.echo.EchoJob", "name": "Echo", **fields}
        response = self.post("/api/scheduler/jobs", json=body)
        assert response.status_code == 201, response.text
        return response.json()["job_id"]

    def wait_execution(
        self,
        execution_id: str,
        timeout: float = 15,
        done=("completed", "failed", "skipped", "abandoned", "timeout", "cancelled", "retried"),
    ) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            execution = self.get(f"/api/scheduler/executions/{execution_id}").json()["data"]
            if execution["status"] in done or time.monotonic() > deadline:
                return execution
            time.sleep(0.05)


@dataclass
class ServerProcess:
    provider: str
    data_dir: Path
    env: dict = field(default_factory=dict)
    args: list = field(default_factory=list)
    port: int = 0
    process: subprocess.Popen | None = None
    log_path: Path | None = None
    preexec_fn: object = None  # run in the child before the server starts (resource limits)
    scheme: str = "http"  # https when the test gives the server a certificate (TLS_CERT_FILE)

    @property
    def api(self) -> Api:
        return Api(f"{self.scheme}://127.0.0.1:{self.port}")

    def start(self, timeout: float = 20) -> ServerProcess:
        self.port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("TEXIUM_", "MONGO_URI", "DB_NAME"))}
        env.update({"TEXIUM_DATA_DIR": str(self.data_dir), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO)})
        if self.provider == "mongomock":
            env["MONGO_URI"] = "mongomock://"
        env.update(self.env)
        self.log_path = self.data_dir.parent / f"server-{self.data_dir.name}-{self.port}.log"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "texium.server", "--port", str(self.port), "--address", "127.0.0.1", *self.args],
            cwd=self.data_dir.parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            preexec_fn=self.preexec_fn,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            try:
                if self._health() == 200:
                    return self
            except requests.ConnectionError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"server did not become healthy:\n{self.log()}")

    def _health(self) -> int:
        with warnings.catch_warnings():  # whether a test's own certificate is right is for the test to check
            warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
            return requests.get(self.api.base_url + "/api/scheduler/health", timeout=1, verify=False).status_code

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        if self.process is None or self.process.poll() is not None:
            return self.process.returncode if self.process else None
        self.process.send_signal(sig)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def kill(self) -> None:
        self.stop(signal.SIGKILL)
