"""A throw-away PostgreSQL cluster for the tests: Debian's initdb/pg_ctl on a loopback port.

The cluster lives in a private temporary directory for the test session and is owned by an
unprivileged user when the tests run as root (CI does; initdb refuses root). No binaries: the
PostgreSQL cases are skipped outside CI and fail loudly in CI (CI=true), where `.ci/run`
installs Debian's `postgresql`.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import subprocess
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server_process import free_port

USER = "texium"
PASSWORD = "pg-secret-never-logged"  # trust auth ignores it; it is there to prove it never shows


def binaries() -> Path | None:
    """The bin directory of the newest PostgreSQL Debian installed, if any."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    return Path(found[-1]).parent if found else None


def missing(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"PostgreSQL is needed in CI: {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass
class Cluster:
    bin: Path
    directory: Path
    port: int
    owner: str | None  # the system user it runs as when the tests run as root

    def run(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        command = [str(self.bin / tool), *args]
        if self.owner:
            command = ["runuser", "-u", self.owner, "--", *command]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)

    def url(self, database: str, options: str = "") -> str:
        query = f"?options={options}" if options else ""
        return f"postgresql://{USER}:{PASSWORD}@127.0.0.1:{self.port}/{database}{query}"

    def start(self) -> Cluster:
        data = self.directory / "data"
        self.run("initdb", "-D", str(data), "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync")
        settings = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self.run("pg_ctl", "start", "-w", "-D", str(data), "-l", str(self.directory / "log"), "-o", settings)
        return self

    def stop(self) -> None:
        try:
            self.run("pg_ctl", "stop", "-m", "immediate", "-D", str(self.directory / "data"))
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)

    def admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql)


def _owner() -> str | None:
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            continue
    missing("running as root and no unprivileged user (postgres, nobody) to run PostgreSQL as")
    return None


def start_cluster() -> Cluster:
    found = binaries()
    if found is None:
        missing("no PostgreSQL binaries under /usr/lib/postgresql/*/bin (apt-get install postgresql)")
    owner = _owner()
    directory = Path(tempfile.mkdtemp(prefix="texium-pg-"))  # /tmp: reachable by the owner
    if owner:
        entry = pwd.getpwnam(owner)
        os.chown(directory, entry.pw_uid, entry.pw_gid)
    cluster = Cluster(found, directory, free_port(), owner)
    try:
        return cluster.start()
    except subprocess.CalledProcessError as exc:
        shutil.rmtree(directory, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {exc.stderr or exc.stdout}", pytrace=False)


def database_name(text: str) -> str:
    return ("t_" + re.sub(r"[^a-z0-9_]", "_", text.lower()))[:50] + "_" + os.urandom(3).hex()


_shared: Cluster | None = None
_databases: dict[str, str] = {}  # data directory -> DATABASE_URL
_shared_lock = threading.Lock()


def shared_cluster() -> Cluster:
    """The test process's cluster, started on first use and stopped when the process exits."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = start_cluster()
            atexit.register(_shared.stop)
        return _shared


def database_for(data_dir: Path) -> str:
    """The DATABASE_URL of a server's store, one database per data directory: like SQLite's file
    in it, it outlives a restart and is shared by servers started on the same directory."""
    key = str(Path(data_dir).resolve())
    with _shared_lock:
        found = _databases.get(key)
    if found is None:
        cluster = shared_cluster()
        name = database_name(Path(key).parent.name)
        cluster.admin(f'CREATE DATABASE "{name}"')
        with _shared_lock:
            found = _databases.setdefault(key, cluster.url(name))
    return found
