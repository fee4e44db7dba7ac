import pytest

from tests.server_process import PROVIDERS, ServerProcess


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
