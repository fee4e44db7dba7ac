import psycopg
import pytest

from tests import pg
from tests.server_process import PROVIDERS, ServerProcess
from texium.core.datastore import open_datastore

pytest_plugins = ["tests.browser"]  # the `browser` fixture (headless chromium)


@pytest.fixture(scope="session", params=PROVIDERS)
def server(request, tmp_path_factory):
    """One live server per provider, shared by the API tests (they make their own data)."""
    process = ServerProcess(request.param, tmp_path_factory.mktemp(request.param) / "data").start()
    yield process
    process.stop()


@pytest.fixture
def api(server):
    return server.api


@pytest.fixture
def start_server(tmp_path):
    """Factory for servers a test owns (restarts, crashes, special settings)."""
    started = []

    def start(provider="sqlite", data_dir=None, env=None, args=None):
        process = ServerProcess(provider, data_dir or tmp_path / "data", env=env or {}, args=args or []).start()
        started.append(process)
        return process

    yield start
    for process in started:
        process.stop()


@pytest.fixture(scope="session")
def pg_cluster():
    """A throw-away PostgreSQL cluster for the session (see tests/pg.py), stopped at exit."""
    return pg.shared_cluster()


@pytest.fixture(scope="module")
def pg_database(request, pg_cluster):
    """A DATABASE_URL of a database of this test module's own, dropped after it."""
    name = pg.database_name(request.module.__name__.rsplit(".", 1)[-1])
    pg_cluster.admin(f'CREATE DATABASE "{name}"')
    yield pg_cluster.url(name)
    pg_cluster.admin(f'DROP DATABASE "{name}" WITH (FORCE)')


@pytest.fixture
def pg_url(request, pg_cluster, pg_database):
    """A DATABASE_URL whose tables land in a schema of this test's own (fresh, like a new file)."""
    schema = pg.database_name(request.node.name)
    with psycopg.connect(pg_database, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    return f"{pg_database}?options=-csearch_path%3D{schema}"


@pytest.fixture(params=["sqlite", "mongomock", "postgres"])
def datastore(request, tmp_path):
    """A fresh store of each provider, for in-process tests of the core."""
    url = request.getfixturevalue("pg_url") if request.param == "postgres" else None
    mongo_uri = "mongomock://" if request.param == "mongomock" else None
    store = open_datastore(mongo_uri, "texium_test", str(tmp_path), database_url=url)
    store.ensure_indexes()
    yield store
    store.close()
