"""texium-restore refuses over-long lines and over-large backups with a clear one-line error,
reading line by line with a bounded read: a 300 KB archive holding one 300 MB line used to
take 2.5 GB of memory; now it is refused after reading at most one line's limit (16 MiB).
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
import time
import tracemalloc

import pytest

from tests.server_process import REPO
from texium.core.datastore import new_id, open_datastore
from texium.jobs import backup as backup_module
from texium.jobs.backup import MAX_ARCHIVE_BYTES, MAX_LINE_BYTES, DataBackupJob, encode_doc
from texium.jobs.base import JobContext, JobError
from texium.restore import RestoreError, restore_backup

LONG_LINE_BYTES = 300 * 1024 * 1024
ID = "0123456789abcdef01234567"


def _write_gz(path, lines: list[bytes]) -> None:
    with gzip.open(path, "wb", compresslevel=1) as gz:
        for line in lines:
            gz.write(line)


@pytest.fixture(scope="module")
def bomb(tmp_path_factory) -> str:
    """users.jsonl.gz: one good document, then one 300 MB line (about 300 KB compressed)."""
    path = tmp_path_factory.mktemp("bomb") / "users.jsonl.gz"
    block = b"a" * (1 << 20)
    with gzip.GzipFile(path, "wb", compresslevel=9, mtime=0) as gz:
        gz.write((encode_doc({"_id": ID, "name": "ok"}) + "\n").encode())
        gz.write(b'{"_id": "0123456789abcdef01234568", "name": "')
        for _ in range(LONG_LINE_BYTES // len(block)):
            gz.write(block)
        gz.write(b'"}\n')
    assert os.path.getsize(path) < 1024 * 1024
    return str(path)


@pytest.fixture
def store(tmp_path):
    ds = open_datastore(None, "texium_test", str(tmp_path / "target"))
    yield ds
    ds.close()


def test_limits_are_stated():
    assert MAX_LINE_BYTES == 16 * 1024 * 1024
    assert MAX_ARCHIVE_BYTES == 16 * 1024 * 1024 * 1024


def test_an_over_long_line_is_refused_without_reading_it_whole(bomb, store):
    tracemalloc.start()
    started = time.monotonic()
    try:
        with pytest.raises(RestoreError) as info:
            restore_backup(store, bomb)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert str(info.value) == "users.jsonl.gz line 2 is longer than 16 MiB, the most one document may take: refused"
    assert time.monotonic() - started < 10
    assert peak < 64 * 1024 * 1024, f"peak {peak / 2**20:.0f} MiB for a {LONG_LINE_BYTES / 2**20:.0f} MiB line"
    assert store.users.count() == 0  # nothing was written: the whole backup is checked first


def test_the_cli_refuses_it_with_one_line_a_nonzero_exit_and_little_memory(bomb, tmp_path):
    started = time.monotonic()
    # The peak is read inside the CLI's own process (VmHWM, reset by exec): wait4's ru_maxrss
    # would also count the pages a fork shares with this test process, however big pytest is.
    peak_file = tmp_path / "peak"
    wrapper = (
        "import atexit, runpy, sys\n"
        f"atexit.register(lambda: open({str(peak_file)!r}, 'w').write("
        "[l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]))\n"
        f"sys.argv = ['texium-restore', {bomb!r}, '--data-dir', {str(tmp_path / 'cli')!r}]\n"
        "runpy.run_module('texium.restore', run_name='__main__')\n"
    )
    process = subprocess.run([sys.executable, "-c", wrapper], capture_output=True)
    stdout, stderr = process.stdout, process.stderr
    assert process.returncode == 1, stderr
    assert stderr.decode().splitlines() == [
        "texium-restore: users.jsonl.gz line 2 is longer than 16 MiB, the most one document may take: refused"
    ]
    assert stdout == b""
    assert time.monotonic() - started < 30
    max_rss_mib = int(peak_file.read_text()) / 1024  # kilobytes
    assert max_rss_mib < 250, f"texium-restore used {max_rss_mib:.0f} MiB for a 300 MB line"


def test_a_backup_over_the_archive_limit_is_refused_while_streaming(tmp_path, store):
    lines = [(encode_doc({"_id": f"{i:024x}", "name": "x" * 100}) + "\n").encode() for i in range(50)]
    _write_gz(tmp_path / "users.jsonl.gz", lines[:25])
    _write_gz(tmp_path / "servers.jsonl.gz", lines[25:])
    total = sum(map(len, lines))

    assert restore_backup(store, str(tmp_path), max_bytes=total) == {
        "servers": {"inserted": 25, "skipped": 0},
        "users": {"inserted": 25, "skipped": 0},
    }
    with pytest.raises(RestoreError) as info:
        restore_backup(store, str(tmp_path), drop=True, max_bytes=total - 1)
    assert str(info.value) == (
        f"users.jsonl.gz line 25: the backup is larger than {total - 1} bytes uncompressed, the most a restore "
        "reads (texium-restore --max-bytes raises it)"
    )

    # The CLI states the limit and lets the operator raise it.
    cli = [sys.executable, "-m", "texium.restore", str(tmp_path), "--data-dir", str(tmp_path / "cli")]
    refused = subprocess.run([*cli, "--max-bytes", "1024"], capture_output=True, text=True)
    assert refused.returncode == 1
    assert refused.stderr.strip().endswith(
        "larger than 1 KiB uncompressed, the most a restore reads (texium-restore --max-bytes raises it)"
    )
    assert "\n" not in refused.stderr.strip()
    done = subprocess.run([*cli, "--max-bytes", str(total)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "Total: 50 documents inserted" in done.stdout
    usage = subprocess.run([*cli, "--max-bytes", "0"], capture_output=True, text=True)
    assert usage.returncode == 2 and "--max-bytes: must be at least 1" in usage.stderr


def test_damaged_gzip_and_oversized_manifest_are_refused_clearly(tmp_path, store):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "users.jsonl.gz").write_bytes(b"this is not gzip at all")
    with pytest.raises(RestoreError, match=r"^users.jsonl.gz: not a readable gzip file \("):
        restore_backup(store, str(broken))

    truncated = tmp_path / "truncated"
    truncated.mkdir()
    _write_gz(truncated / "users.jsonl.gz", [(encode_doc({"_id": ID}) + "\n").encode() * 1000])
    data = (truncated / "users.jsonl.gz").read_bytes()
    (truncated / "users.jsonl.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(RestoreError, match=r"^users.jsonl.gz: not a readable gzip file \("):
        restore_backup(store, str(truncated))

    big = tmp_path / "big"
    big.mkdir()
    manifest = {"format": "texium-backup", "collections": [], "padding": "x" * (2 * 1024 * 1024)}
    (big / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RestoreError, match=r"manifest.json is larger than 1 MiB: not a Texium manifest$"):
        restore_backup(store, str(big))

    bad_text = tmp_path / "latin1"
    bad_text.mkdir()
    _write_gz(bad_text / "users.jsonl.gz", [b'{"name": "caf\xe9"}\n'])
    with pytest.raises(RestoreError, match=r"^users.jsonl.gz line 1: not UTF-8 text$"):
        restore_backup(store, str(bad_text))
    assert store.users.count() == 0


def test_backup_refuses_a_document_a_restore_would_refuse(tmp_path, monkeypatch):
    monkeypatch.setattr(backup_module, "MAX_LINE_BYTES", 1000)
    data = tmp_path / "data"
    store = open_datastore(None, "texium_test", str(data))
    try:
        doc_id = store.users.insert({"name": "x" * 2000, "email": "big@example.com"})
        context = JobContext(
            execution_id=new_id(),
            job_id=new_id(),
            job_name="b",
            user_id=new_id(),
            datastore=store,
            config={"DATA_DIR": str(data)},
        )
        with pytest.raises(JobError, match=f"^document {doc_id} of users is 2.0 KiB as JSON, over the "):
            DataBackupJob(context).run(collections=["users"])
    finally:
        store.close()
    assert [n for n in os.listdir(data / "backups") if not n.startswith(".")] == []


# --------------------------------------------------------------------------- crafted backups


def _restore_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "texium.restore", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("TEXIUM_")}, "PYTHONPATH": str(REPO)},
    )


def _documents(data_dir, name: str) -> list[dict]:
    ds = open_datastore(None, "texium_test", str(data_dir))
    try:
        return ds.collection(name).find({}) if name in ds.collection_names() else []
    finally:
        ds.close()


USER = {"_id": ID, "name": "Planted", "email": "planted@example.org", "role": "admin"}


@pytest.mark.parametrize(
    "late_file, late_lines, message",
    [
        ("zz bad!", [encode_doc({"_id": new_id()})], "'zz bad!' is not a collection name Texium writes"),
        ("zz_deep", [b'{"a": ' * 5000 + b"1" + b"}" * 5000], "zz_deep.jsonl.gz line 1: nested deeper than 100"),
        (
            "zz_lists",
            [encode_doc({"_id": new_id()}), '{"a": ' + "[" * 101 + "]" * 101 + "}"],
            "line 2: field a[0][0][0][0][0][0][0]: nested deeper than 100",
        ),
        (
            "zz_regex",
            [encode_doc({"_id": new_id()}), '{"name": {"$regex": "^a", "$options": ""}}'],
            "zz_regex.jsonl.gz line 2: field name: a Regex value, which Texium never stores",
        ),
        (
            "zz_dollar",
            ['{"tags": [{"$where": "1"}]}'],
            "line 1: field tags[0]: the key '$where' may not start with '$'",
        ),
    ],
)
def test_a_crafted_backup_is_refused_in_one_line_before_anything_is_written(tmp_path, late_file, late_lines, message):
    """The users file comes first and is fine; what is wrong comes later. Nothing may be written."""
    backup = tmp_path / "backup"
    backup.mkdir()
    _write_gz(backup / "users.jsonl.gz", [(encode_doc(USER) + "\n").encode()])
    _write_gz(
        backup / f"{late_file}.jsonl.gz",
        [(line if isinstance(line, bytes) else line.encode()) + b"\n" for line in late_lines],
    )
    result = _restore_cli(str(backup), "--data-dir", str(tmp_path / "target"))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1, result.stderr
    assert message in result.stderr, result.stderr
    assert _documents(tmp_path / "target", "users") == []


def test_api_keys_in_a_backup_are_restored_only_when_asked_for(tmp_path):
    """A key planted in a backup would let whoever wrote the file in as an admin."""
    backup = tmp_path / "backup"
    backup.mkdir()
    key_doc = {"_id": new_id(), "user_id": ID, "label": "planted", "key_hash": "ab" * 32}
    _write_gz(backup / "users.jsonl.gz", [(encode_doc(USER) + "\n").encode()])
    _write_gz(backup / "api_keys.jsonl.gz", [(encode_doc(key_doc) + "\n").encode()])

    result = _restore_cli(str(backup), "--data-dir", str(tmp_path / "target"))
    assert result.returncode == 0, result.stderr
    assert "api_keys: 1 left out (credentials; --with-api-keys restores them)" in result.stdout
    assert _documents(tmp_path / "target", "api_keys") == [] and len(_documents(tmp_path / "target", "users")) == 1

    result = _restore_cli(str(backup), "--data-dir", str(tmp_path / "target"), "--with-api-keys")
    assert result.returncode == 0, result.stderr
    assert [doc["label"] for doc in _documents(tmp_path / "target", "api_keys")] == ["planted"]
