"""Restore a Texium backup written by DataBackupJob.

    python -m texium.restore FILE_OR_DIR [--data-dir D | --mongo-uri U --db-name N] [--drop]

FILE_OR_DIR is a backup directory (texium-backup-.../), its manifest.json, or one
`<collection>.jsonl.gz` file. Documents keep their original `_id`; a document whose id already
exists is skipped unless `--drop` empties each restored collection first. With a manifest,
every file's SHA-256 is checked before anything is written.

Limits (a backup may come from elsewhere): one line (one document) at most MAX_LINE_BYTES
(16 MiB), all files of one restore at most MAX_ARCHIVE_BYTES (16 GiB) uncompressed, counted
while streaming (--max-bytes changes it), and manifest.json at most MAX_MANIFEST_BYTES (1 MiB).
Files are read line by line with a bounded read, so an over-long line is refused after at most
MAX_LINE_BYTES of it were decompressed, never read whole.

Everything is checked before anything is written: the collection names, and every document
(an object, a 24-hex `_id`, at most MAX_DEPTH levels deep, no key starting with '$' or holding a
NUL, and only the values Texium stores: text, numbers that fit 64 bits, booleans, null, times,
lists and objects; a `$regex`, binary or code value is refused). A backup is still trusted input:
whatever it holds becomes the server's data. API keys are credentials, so they are restored only
with --with-api-keys (a key planted in a backup would let its writer in); without it the
`api_keys` collection is left out and said so.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import os
import sys
import zlib
from datetime import datetime
from typing import Any

from texium.core.datastore.base import check_collection_name, is_valid_id
from texium.core.errors import DuplicateKeyError
from texium.jobs.backup import (
    FILE_SUFFIX,
    FORMAT,
    MANIFEST,
    MAX_ARCHIVE_BYTES,
    MAX_LINE_BYTES,
    MAX_MANIFEST_BYTES,
    decode_doc,
    list_backups,
)

# Nesting MongoDB itself refuses beyond; Texium's own documents stay far below it.
MAX_DEPTH = 100
# Collections of credentials: restored only when asked for (--with-api-keys).
CREDENTIALS = ("api_keys", "sessions")
_INT64 = (-(1 << 63), (1 << 63) - 1)


class RestoreError(Exception):
    """The backup cannot be restored; the message says why."""


def _check_value(value: Any, path: str = "", depth: int = 0) -> None:
    """ValueError unless `value` is something every store holds and Texium writes (see above);
    the message names the field (its first levels)."""
    where = f"field {path}: " if path else ""
    if depth > MAX_DEPTH:
        raise ValueError(f"{where}nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str) or key.startswith("$") or "\x00" in key:
                raise ValueError(f"{where}the key {str(key)[:40]!r} may not start with '$' or hold a NUL")
            _check_value(item, f"{path}.{key[:40]}".lstrip(".") if depth < 8 else path, depth + 1)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]" if depth < 8 else path, depth + 1)
    elif isinstance(value, bool) or value is None or isinstance(value, (str, datetime)):
        return
    elif isinstance(value, int):
        if not _INT64[0] <= value <= _INT64[1]:
            raise ValueError(f"{where}the number {str(value)[:30]} does not fit 64 bits")
    elif isinstance(value, float):
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError(f"{where}{value} is not a number a store can hold")
    else:
        raise ValueError(f"{where}a {type(value).__name__} value, which Texium never stores")


def _size(n: int) -> str:
    for unit, factor in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= factor and n % factor == 0:
            return f"{n // factor} {unit}"
    return f"{n} bytes"


class _Budget:
    """Uncompressed bytes a restore may still read, shared by the files of one pass."""

    def __init__(self, limit: int):
        self.limit = limit
        self.used = 0

    def take(self, n: int, where: str) -> None:
        self.used += n
        if self.used > self.limit:
            raise RestoreError(
                f"{where}: the backup is larger than {_size(self.limit)} uncompressed, the most a restore "
                "reads (texium-restore --max-bytes raises it)"
            )


def _plan(path: str) -> list[tuple[str, str, str | None]]:
    """[(collection, file path, expected sha256 or None)] for a backup path."""
    path = os.path.abspath(path)
    if os.path.isdir(path):
        manifest = os.path.join(path, MANIFEST)
        if os.path.isfile(manifest):
            return _plan_from_manifest(manifest)
        files = sorted(f for f in os.listdir(path) if f.endswith(FILE_SUFFIX))
        if files:
            return [(f[: -len(FILE_SUFFIX)], os.path.join(path, f), None) for f in files]
        backups = list_backups(path)
        if backups:
            names = ", ".join(os.path.basename(b) for b in backups[-5:])
            raise RestoreError(f"{path} holds several backups; name one of them (newest: {names})")
        raise RestoreError(f"{path} is not a Texium backup (no {MANIFEST} and no *{FILE_SUFFIX} files)")
    if not os.path.exists(path):
        raise RestoreError(f"{path} does not exist")
    if os.path.basename(path) == MANIFEST:
        return _plan_from_manifest(path)
    if path.endswith(FILE_SUFFIX):
        return [(os.path.basename(path)[: -len(FILE_SUFFIX)], path, None)]
    raise RestoreError(f"{path} is neither a backup directory, a {MANIFEST} nor a *{FILE_SUFFIX} file")


def _plan_from_manifest(manifest_path: str) -> list[tuple[str, str, str | None]]:
    try:
        with open(manifest_path, "rb") as fh:
            raw = fh.read(MAX_MANIFEST_BYTES + 1)
        if len(raw) > MAX_MANIFEST_BYTES:
            raise RestoreError(f"{manifest_path} is larger than {_size(MAX_MANIFEST_BYTES)}: not a Texium manifest")
        manifest = json.loads(raw.decode("utf-8"))
    except (OSError, ValueError) as exc:
        raise RestoreError(f"cannot read {manifest_path}: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise RestoreError(f"{manifest_path} is not a Texium backup manifest")
    base = os.path.dirname(manifest_path)
    plan = []
    for entry in manifest.get("collections") or []:
        name, file_name = entry.get("name"), entry.get("file")
        if not name or not file_name or os.path.basename(file_name) != file_name:
            raise RestoreError(f"{manifest_path}: bad collection entry {entry!r}")
        plan.append((name, os.path.join(base, file_name), entry.get("sha256")))
    return plan


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _lines(path: str, budget: _Budget):
    """(number, bytes) of each line of the gzip file, each read with a bounded readline."""
    name = os.path.basename(path)
    try:
        with gzip.open(path, "rb") as fh:
            number = 0
            while True:
                line = fh.readline(MAX_LINE_BYTES + 1)
                if not line:
                    return
                number += 1
                budget.take(len(line), f"{name} line {number}")
                if len(line) > MAX_LINE_BYTES:
                    raise RestoreError(
                        f"{name} line {number} is longer than {_size(MAX_LINE_BYTES)}, the most one document "
                        "may take: refused"
                    )
                yield number, line
    except (OSError, EOFError, zlib.error) as exc:
        raise RestoreError(f"{name}: not a readable gzip file ({exc})") from None


def _read_docs(path: str, budget: _Budget):
    name = os.path.basename(path)
    for number, raw in _lines(path, budget):
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise RestoreError(f"{name} line {number}: not UTF-8 text") from None
        try:
            doc = decode_doc(line)
        except RecursionError:
            raise RestoreError(f"{name} line {number}: nested deeper than {MAX_DEPTH} levels") from None
        except (ValueError, TypeError, OverflowError) as exc:
            raise RestoreError(f"{name} line {number}: not extended JSON ({str(exc)[:200]})") from None
        del line, raw
        if not isinstance(doc, dict):
            raise RestoreError(f"{name} line {number}: not a document")
        if "_id" in doc and not is_valid_id(doc["_id"]):
            raise RestoreError(f"{name} line {number}: _id {str(doc['_id'])[:40]!r} is not a 24-hex id")
        try:
            _check_value(doc)
        except ValueError as exc:
            raise RestoreError(f"{name} line {number}: {exc}") from None
        yield doc


def restore_backup(
    datastore, path: str, drop: bool = False, max_bytes: int = MAX_ARCHIVE_BYTES, with_api_keys: bool = False
) -> dict:
    """Restore the backup at `path` into `datastore`.

    Returns {collection: {"inserted": n, "skipped": n}}, plus {"left_out": n} for a credentials
    collection left out (`with_api_keys` restores it); `skipped` counts documents whose `_id`
    (or a unique field) already exists. With `drop`, each restored collection is emptied first.
    Raises RestoreError, before anything is written, when the backup is unreadable, a checksum
    does not match, a collection name or a document is not one Texium writes, a line is over
    MAX_LINE_BYTES or the files together are over `max_bytes` uncompressed.
    """
    plan = _plan(path)
    budget = _Budget(max_bytes)
    for name, _, _ in plan:
        try:
            check_collection_name(name)
        except ValueError:
            raise RestoreError(f"{str(name)[:80]!r} is not a collection name Texium writes: nothing restored") from None
    for _, file_path, expected in plan:
        if not os.path.isfile(file_path):
            raise RestoreError(f"missing file {file_path}")
        if expected and _sha256(file_path) != expected:
            raise RestoreError(f"checksum mismatch for {file_path}: the backup is damaged")
        # Read everything once before writing anything: a corrupt file fails the whole restore.
        for _ in _read_docs(file_path, budget):
            pass

    budget = _Budget(max_bytes)  # the files are read again: the limits hold on this pass too
    counts: dict[str, dict[str, int]] = {}
    for name, file_path, _ in plan:
        if name in CREDENTIALS and not with_api_keys:
            counts[name] = {"inserted": 0, "skipped": 0, "left_out": sum(1 for _ in _read_docs(file_path, budget))}
            continue
        collection = datastore.collection(name)
        if drop:
            collection.delete_many({})
        inserted = skipped = 0
        for doc in _read_docs(file_path, budget):
            doc_id = doc.get("_id")
            if doc_id is not None and not drop and collection.get(doc_id) is not None:
                skipped += 1
                continue
            try:
                collection.insert(doc)
            except DuplicateKeyError:
                skipped += 1
                continue
            inserted += 1
        counts[name] = {"inserted": inserted, "skipped": skipped}
    return counts


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="texium-restore",
        description="Restore a Texium backup (a texium-backup-* directory, its manifest.json or one "
        ".jsonl.gz file) into the datastore the server uses, or the one named here.",
    )
    parser.add_argument("path", metavar="FILE_OR_DIR")
    target = parser.add_mutually_exclusive_group()
    target.add_argument("--data-dir", help="restore into the SQLite datastore in this directory")
    target.add_argument("--mongo-uri", help="restore into this MongoDB (mongomock:// for an in-memory one)")
    parser.add_argument("--db-name", help="MongoDB database name (default: the DB_NAME setting)")
    parser.add_argument("--settings", metavar="MODULE", help="settings module, as for the server")
    parser.add_argument(
        "--drop", action="store_true", help="empty each restored collection first (otherwise existing ids are skipped)"
    )
    parser.add_argument(
        "--with-api-keys",
        action="store_true",
        help="also restore API keys (left out otherwise: a key planted in a backup would let its writer in)",
    )
    parser.add_argument(
        "--max-bytes",
        type=_positive_int,
        default=MAX_ARCHIVE_BYTES,
        metavar="N",
        help=f"refuse a backup larger than N bytes uncompressed (default {_size(MAX_ARCHIVE_BYTES)}); "
        f"one line (one document) may be at most {_size(MAX_LINE_BYTES)}",
    )
    ns = parser.parse_args(argv)

    from texium.config import ConfigError, load_settings
    from texium.core.datastore import open_datastore

    flags = {"DB_NAME": ns.db_name}
    if ns.data_dir is not None:
        flags.update(DATA_DIR=ns.data_dir, MONGO_URI="")
    if ns.mongo_uri is not None:
        flags["MONGO_URI"] = ns.mongo_uri
    try:
        settings = load_settings(flags=flags, settings_module=ns.settings)
    except ConfigError as exc:
        print(f"texium-restore: {exc}", file=sys.stderr)
        return 2
    mongo_uri = settings["MONGO_URI"] or None
    where = f"MongoDB database {settings['DB_NAME']}" if mongo_uri else f"SQLite in {settings['DATA_DIR']}"
    try:
        datastore = open_datastore(mongo_uri, settings["DB_NAME"], settings["DATA_DIR"])
    except Exception as exc:  # noqa: BLE001 - report any connection problem in one line
        print(f"texium-restore: cannot open {where}: {exc}", file=sys.stderr)
        return 2
    try:
        counts = restore_backup(
            datastore, ns.path, drop=ns.drop, max_bytes=ns.max_bytes, with_api_keys=ns.with_api_keys
        )
    except RestoreError as exc:
        print(f"texium-restore: {exc}", file=sys.stderr)
        return 1
    finally:
        datastore.close()
    print(f"Restored into {where}{' (collections emptied first)' if ns.drop else ''}:")
    for name, c in counts.items():
        if "left_out" in c:
            print(f"  {name}: {c['left_out']} left out (credentials; --with-api-keys restores them)")
            continue
        print(f"  {name}: {c['inserted']} inserted, {c['skipped']} skipped (already present)")
    print(f"Total: {sum(c['inserted'] for c in counts.values())} documents inserted")
    return 0


if __name__ == "__main__":
    sys.exit(main())
