"""schemathesis against a live server on the mongomock store (the SQLite run is in
test_openapi.py; apart, the two runs go side by side in the suite's two workers)."""

from tests.test_openapi import run_schemathesis


def test_schemathesis_finds_no_failure_on_mongomock(start_server, tmp_path):
    run_schemathesis("mongomock", start_server, tmp_path)
