"""What Texium writes to disk is owner-only, whatever the umask: DATA_DIR 0700, the SQLite
database with its WAL and shared-memory files 0600, backups and reports 0600 in 0700 dirs.

Every test runs under the usual permissive umask 022, under which the files used to be 0644.
"""

from __future__ import annotations

import logging
import os
import stat

import pytest

from texium.core.datastore import new_id, open_datastore
from texium.core.security import files
from texium.jobs.backup import DataBackupJob
from texium.jobs.base import JobContext
from texium.jobs.report import ReportGenerationJob


@pytest.fixture(autouse=True)
def permissive_umask():
    old = os.umask(0o022)
    yield
    os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _context(store, config) -> JobContext:
    return JobContext(
        execution_id=new_id(), job_id=new_id(), job_name="modes", user_id=new_id(), datastore=store, config=config
    )


def test_new_sqlite_data_dir_database_wal_and_shm_are_owner_only(tmp_path):
    data = tmp_path / "missing-parent" / "data"
    store = open_datastore(None, "texium_test", str(data))
    try:
        store.users.insert({"name": "a", "email": "a@example.com"})
        assert store.users.count() == 1
        assert mode(data) == 0o700
        for name in ("texium.db", "texium.db-wal", "texium.db-shm"):
            assert (data / name).exists(), name
            assert mode(data / name) == 0o600, name
    finally:
        store.close()


def test_an_existing_database_is_made_owner_only_and_a_shared_dir_is_reported(tmp_path, caplog):
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    store = open_datastore(None, "texium_test", str(data))
    store.users.insert({"name": "a", "email": "a@example.com"})
    store.close()
    for name in ("texium.db", "texium.db-wal", "texium.db-shm"):
        if (data / name).exists():
            os.chmod(data / name, 0o644)  # as an older version left them

    with caplog.at_level(logging.WARNING, logger="texium.files"):
        store = open_datastore(None, "texium_test", str(data))
    try:
        assert store.users.count() == 1
        for name in ("texium.db", "texium.db-wal", "texium.db-shm"):
            if (data / name).exists():
                assert mode(data / name) == 0o600, name
        # An existing directory keeps its mode (it may be shared on purpose) but is reported.
        assert mode(data) == 0o755
        assert any("is accessible to other users (mode 0755)" in r.getMessage() for r in caplog.records)
    finally:
        store.close()


def test_backup_files_and_directories_are_owner_only(tmp_path):
    data = tmp_path / "data"
    store = open_datastore(None, "texium_test", str(data))
    try:
        store.users.insert({"name": "a", "email": "a@example.com"})
        config = {"DATA_DIR": str(data), "BACKUP_DIR": str(tmp_path / "deep" / "backups")}
        out = DataBackupJob(_context(store, config)).run()
    finally:
        store.close()
    backup_dir = out.splitlines()[0].removeprefix("Backup written to ").strip()
    assert mode(tmp_path / "deep" / "backups") == 0o700 and mode(backup_dir) == 0o700
    names = os.listdir(backup_dir)
    assert "manifest.json" in names and "users.jsonl.gz" in names
    for name in names:
        assert mode(os.path.join(backup_dir, name)) == 0o600, name


def test_report_files_and_directory_are_owner_only(tmp_path):
    data = tmp_path / "data"
    store = open_datastore(None, "texium_test", str(data))
    try:
        config = {"DATA_DIR": str(data), "REPORT_DIR": str(tmp_path / "reports")}
        result = ReportGenerationJob(_context(store, config)).run()
    finally:
        store.close()
    text = str(result)
    assert mode(tmp_path / "reports") == 0o700
    written = os.listdir(tmp_path / "reports")
    assert {os.path.splitext(n)[1] for n in written} == {".json", ".csv"}, text
    for name in written:
        assert mode(tmp_path / "reports" / name) == 0o600, name


def test_private_helpers_do_not_depend_on_the_umask(tmp_path):
    os.umask(0)  # the most permissive umask: modes come from the code alone
    assert files.private_dir(str(tmp_path / "a" / "b")) is True
    assert mode(tmp_path / "a" / "b") == 0o700
    assert files.private_dir(str(tmp_path / "a" / "b")) is False
    path = tmp_path / "a" / "b" / "f"
    assert files.create_private_file(str(path)) is True and mode(path) == 0o600
    assert files.create_private_file(str(path)) is False
    with open(tmp_path / "g", "w", opener=files.private_opener) as fh:
        fh.write("x")
    assert mode(tmp_path / "g") == 0o600
    os.chmod(path, 0o664)
    files.restrict_file(str(path))
    assert mode(path) == 0o600
    files.restrict_file(str(tmp_path / "missing"))  # no error


def test_the_server_creates_its_data_dir_owner_only(start_server, tmp_path):
    fresh = tmp_path / "fresh-data"
    server = start_server("sqlite", data_dir=tmp_path / "data", args=["--data-dir", str(fresh)])
    api = server.api
    api.create_user()  # a write: the WAL exists
    assert mode(fresh) == 0o700
    for name in ("texium.db", "texium.db-wal", "texium.db-shm", "secret.key"):
        if name == "secret.key" and not (fresh / name).exists():
            continue
        assert mode(fresh / name) == 0o600, name


def test_the_secret_key_s_new_data_dir_is_private_too(tmp_path):
    """With MongoDB the key file may be the first thing written into DATA_DIR."""
    from texium.core.security.secrets import load_or_create_key

    old = os.umask(0o022)
    try:
        data_dir = tmp_path / "fresh" / "data"
        load_or_create_key("", str(data_dir))
    finally:
        os.umask(old)
    assert stat.S_IMODE(data_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((data_dir / "secret.key").stat().st_mode) == 0o600
