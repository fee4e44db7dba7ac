"""DataBackupJob: a complete, compressed dump of the datastore, restorable with texium.restore.

Layout: `<BACKUP_DIR>/texium-backup-YYYYmmddTHHMMSSZ/` holding one `<collection>.jsonl.gz` per
collection (one MongoDB extended-JSON document per line, so datetimes and ids round-trip on
either provider) and a `manifest.json` naming each file with its document count, size and
SHA-256. The directory is written under a temporary name and renamed when complete, so a
backup directory either is whole or does not exist. Documents are dumped as stored: server
passwords stay Fernet-encrypted.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import time
import uuid
from datetime import UTC

from bson import json_util
from bson.json_util import JSONOptions

from texium.core.security import files
from texium.core.timeutil import to_iso, utcnow
from texium.jobs import _util
from texium.jobs.base import JobBase, JobError

FORMAT = "texium-backup"
FORMAT_VERSION = 1
BACKUP_PREFIX = "texium-backup-"
BACKUP_DIR_RE = re.compile(r"^texium-backup-(\d{8}T\d{6}Z)(?:-(\d+))?$")
FILE_SUFFIX = ".jsonl.gz"
MANIFEST = "manifest.json"
# Restore limits (texium.restore), also enforced here so that every backup written can be restored.
MAX_LINE_BYTES = 16 * 1024 * 1024  # one document's line (MongoDB's own document limit is 16 MiB)
MAX_ARCHIVE_BYTES = 16 * 1024 * 1024 * 1024  # all files of one backup, uncompressed
MAX_MANIFEST_BYTES = 1024 * 1024
PAGE_SIZE = 1000
DEFAULT_KEEP = 7

# Relaxed extended JSON on the way out ({"$date": "...Z"}), aware UTC datetimes on the way in.
DUMP_OPTIONS = json_util.RELAXED_JSON_OPTIONS
LOAD_OPTIONS = JSONOptions(json_mode=json_util.JSONMode.RELAXED, tz_aware=True, tzinfo=UTC)

# Friendly names accepted in `collections` (the API document says users/servers/jobs).
ALIASES = {
    "jobs": "scheduler_jobs",
    "executions": "scheduler_executions",
    "audit_logs": "scheduler_audit_logs",
    "metrics": "system_metrics",
}

_COLLECTION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def encode_doc(doc: dict) -> str:
    return json_util.dumps(doc, json_options=DUMP_OPTIONS, ensure_ascii=False)


def decode_doc(line: str) -> dict:
    return json_util.loads(line, json_options=LOAD_OPTIONS)


def list_backups(backup_dir: str) -> list[str]:
    """Complete backup directories in `backup_dir`, oldest first."""
    try:
        names = os.listdir(backup_dir)
    except FileNotFoundError:
        return []
    found = []
    for name in names:
        match = BACKUP_DIR_RE.match(name)
        path = os.path.join(backup_dir, name)
        if match and os.path.isdir(path) and not os.path.islink(path):
            found.append(((match.group(1), int(match.group(2) or 0)), path))
    return [path for _, path in sorted(found)]


def iter_collection(collection):
    """Every document, in _id order, a page at a time (stable while others insert)."""
    last_id = None
    while True:
        flt = {"_id": {"$gt": last_id}} if last_id is not None else None
        page = collection.find(flt, sort=[("_id", 1)], limit=PAGE_SIZE)
        if not page:
            return
        yield from page
        if len(page) < PAGE_SIZE:
            return
        last_id = page[-1]["_id"]


class DataBackupJob(JobBase):
    """Job to backup database"""

    run_inputs_as_kwargs = False  # its **kwargs are its own arguments (run inputs: self.context)
    result_from_return = False  # its return value is text for the output

    admin_only = True  # reads every user's data

    @classmethod
    def meta_info(cls) -> dict:
        return {
            "description": "Job to backup database",
            "arguments": [
                {
                    "name": "collections",
                    "type": "list[string]",
                    "required": False,
                    "description": "pub_kwargs: collections to dump (default: all). 'jobs', 'executions', "
                    "'audit_logs' and 'metrics' are accepted for the scheduler_* / system_metrics collections",
                },
                {
                    "name": "keep",
                    "type": "integer",
                    "required": False,
                    "description": "pub_kwargs: how many backups to keep in "
                    f"BACKUP_DIR, newest first (default {DEFAULT_KEEP})",
                },
            ],
            "example_arguments": {
                "pub_args": [],
                "pub_kwargs": {"collections": ["users", "servers", "jobs"], "keep": 7},
            },
            "notes": (
                "Writes BACKUP_DIR/texium-backup-<UTC time>/ with one gzip file of extended-JSON lines per "
                "collection and a manifest.json (counts, bytes, SHA-256). Server passwords stay encrypted. "
                "Restore with `python -m texium.restore <backup dir> [--drop]`."
            ),
        }

    def run(self, *args, **kwargs):
        _util.check_arguments(args, kwargs, 0, "no pub_args", ("collections", "keep"))
        keep = _util.number("keep", kwargs.get("keep", DEFAULT_KEEP), minimum=1, integer=True)
        datastore = self.context.datastore
        existing = datastore.collection_names()
        if kwargs.get("collections") is None:
            names = sorted(existing)
        else:
            names = []
            for name in _util.str_list("collections", kwargs["collections"]):
                real = ALIASES.get(name, name)
                if real not in existing:
                    raise JobError(
                        f"collections: unknown collection {name!r}; existing: {', '.join(sorted(existing)) or '(none)'}"
                    )
                if real not in names:
                    names.append(real)
        for name in names:
            if not _COLLECTION_NAME.match(name):  # collection names become file names
                raise JobError(f"collections: collection name {name!r} is not usable as a file name")

        backup_root = _util.dir_setting(self.context.config, "BACKUP_DIR", "backups")
        try:
            files.private_dir(backup_root)
        except OSError as exc:
            raise JobError(f"cannot create BACKUP_DIR {backup_root}: {exc.strerror or exc}") from None

        started = utcnow()
        base_name = BACKUP_PREFIX + _util.compact_stamp(started)
        tmp_dir = os.path.join(backup_root, f".tmp-{base_name}-{uuid.uuid4().hex[:12]}")
        entries = []
        try:
            files.private_dir(tmp_dir)
            for name in names:
                entries.append(self._dump(datastore.collection(name), name, tmp_dir, self.context.cancelled))
            finished = utcnow()
            manifest = {
                "format": FORMAT,
                "version": FORMAT_VERSION,
                "created_at": to_iso(started),
                "completed_at": to_iso(finished),
                "provider": getattr(datastore, "provider", None),
                "job_id": self.context.job_id,
                "execution_id": self.context.execution_id,
                "collections": entries,
                "total_documents": sum(e["count"] for e in entries),
                "total_bytes": sum(e["bytes"] for e in entries),
            }
            manifest_path = os.path.join(tmp_dir, MANIFEST)
            with open(manifest_path, "w", encoding="utf-8", opener=files.private_opener) as fh:
                json.dump(manifest, fh, indent=2)
                fh.write("\n")
            final_dir = self._publish(tmp_dir, backup_root, base_name)
        except OSError as exc:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise JobError(f"backup failed writing to {backup_root}: {exc.strerror or exc}") from None
        except BaseException:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise

        removed = []
        for old in [path for path in list_backups(backup_root)[:-keep] if path != final_dir]:
            shutil.rmtree(old, ignore_errors=True)
            removed.append(os.path.basename(old))
        _remove_stale_partials(backup_root)

        lines = [f"Backup written to {final_dir}"]
        width = max((len(e["file"]) for e in entries), default=0)
        for e in entries:
            lines.append(f"  {e['file']:<{width}}  {e['count']:>8} documents  {e['bytes']:>10} bytes")
        lines.append(
            f"Total: {len(entries)} collections, {manifest['total_documents']} documents, "
            f"{manifest['total_bytes']} bytes ({_util.human_bytes(manifest['total_bytes'])})"
        )
        if removed:
            lines.append(f"Removed {len(removed)} old backup(s) (keep={keep}): {', '.join(removed)}")
        return "\n".join(lines)

    @staticmethod
    def _publish(tmp_dir: str, root: str, base: str) -> str:
        """Rename the finished dump to its final name: `base`, or `base-N` past every N in use.

        A suffix is never reused, even after rotation freed it, so name order stays write order.
        """
        taken = [
            int(m.group(2) or 1)
            for m in map(BACKUP_DIR_RE.match, os.listdir(root))
            if m and m.group(1) == base[len(BACKUP_PREFIX) :]
        ]
        for n in range(max(taken, default=0) + 1, 1000):
            path = os.path.join(root, base if n == 1 else f"{base}-{n}")
            if os.path.exists(path):
                continue
            try:
                os.rename(tmp_dir, path)
            except OSError:
                if os.path.exists(path):  # another backup took the name meanwhile
                    continue
                raise
            return path
        raise JobError(f"too many backups named {base}* in {root}")

    @staticmethod
    def _dump(collection, name: str, directory: str, cancelled=None) -> dict:
        """Write one collection's file; stop (JobError, the partial backup is removed) when `cancelled` is set."""
        file_name = name + FILE_SUFFIX
        path = os.path.join(directory, file_name)
        digest = hashlib.sha256()
        count = 0
        with open(path, "wb", opener=files.private_opener) as raw:
            with gzip.GzipFile(filename=file_name, mode="wb", fileobj=raw, mtime=0) as gz:
                for doc in iter_collection(collection):
                    if count % PAGE_SIZE == 0 and cancelled is not None and cancelled.is_set():
                        raise JobError(
                            f"backup stopped while dumping {name}: the run was cancelled or passed its time limit"
                            "; nothing was written"
                        )
                    line = (encode_doc(doc) + "\n").encode("utf-8")
                    if len(line) > MAX_LINE_BYTES:
                        raise JobError(
                            f"document {doc.get('_id')} of {name} is {_util.human_bytes(len(line))} as JSON, over the "
                            f"{_util.human_bytes(MAX_LINE_BYTES)} a restore accepts for one document"
                        )
                    gz.write(line)
                    count += 1
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
        return {
            "name": name,
            "file": file_name,
            "count": count,
            "bytes": os.path.getsize(path),
            "sha256": digest.hexdigest(),
        }


def _remove_stale_partials(root: str, max_age: float = 86400.0) -> None:
    """Drop the temporary directories of backups that crashed more than a day ago."""
    try:
        names = os.listdir(root)
    except OSError:
        return
    now = time.time()
    for name in names:
        path = os.path.join(root, name)
        try:
            if name.startswith(".tmp-" + BACKUP_PREFIX) and now - os.path.getmtime(path) > max_age:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass
