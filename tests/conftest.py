import pytest

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


@pytest.fixture(params=["sqlite", "mongomock"])
def datastore(request, tmp_path):
    """A fresh store of each provider, for in-process tests of the core."""
    store = open_datastore("mongomock://" if request.param == "mongomock" else None, "texium_test", str(tmp_path))
    store.ensure_indexes()
    yield store
    store.close()
