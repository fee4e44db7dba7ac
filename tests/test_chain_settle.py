"""Settling chained starts concurrently (issue 23), in-process on both stores: several settlers
(nodes) settle the same ended runs in a random order, repeatedly, from several threads. Every
downstream start must be made exactly once: one per (upstream run, target) for chains, one per
complete set for a fan-in, no upstream run used twice. The seed is printed on failure."""

from __future__ import annotations

import os
import random
import threading

from texium.core.datastore.base import new_id
from texium.core.errors import DuplicateKeyError
from texium.core.events.chains import Chains
from texium.core.records.chains import ChainLinks
from texium.core.scheduling.occurrences import new_record
from texium.core.timeutil import utcnow

SEED = int(os.environ.get("TEXIUM_CHAIN_SEED") or random.randrange(1 << 30))


class RecordingDispatcher:
    """Makes the record as Dispatcher.run_now does (the store's unique key decides), runs nothing."""

    def __init__(self, datastore):
        self._ds = datastore

    def run_now(self, job, trigger, **fields):
        record = new_record(job, "scheduled", utcnow(), trigger, None, **fields)
        self._ds.executions.insert(record)  # DuplicateKeyError when another settler made it
        return record["_id"]


def make_job(datastore, links, name, **fields) -> str:
    doc = {"_id": new_id(), "name": name, "user_id": "u", "job_class_string": "jobs.echo.EchoJob", **fields}
    links.before_write(doc)
    datastore.jobs.insert(doc)
    return doc["_id"]


def ended_run(datastore, job_id, status="completed") -> str:
    now = utcnow()
    record = new_record({"_id": job_id, "name": "x"}, status, now, "run_now", None)
    record.update(started_at=now, completed_at=now, chain_pending=True)
    datastore.executions.insert(record)
    return record["_id"]


def test_settlers_racing_make_every_chained_start_once(datastore):
    rng = random.Random(SEED)
    links = ChainLinks(datastore)
    b = make_job(datastore, links, "B")
    x = make_job(datastore, links, "X", on_success=[b])
    y = make_job(datastore, links, "Y")
    z = make_job(datastore, links, "Z")
    d = make_job(datastore, links, "D", depends_on={"jobs": [x, y, z], "within_seconds": 3600})
    datastore.jobs.update_many({"_id": {"$in": [x, y, z]}}, {"feeds_fan_in": True})
    runs = {job_id: [ended_run(datastore, job_id) for _ in range(rng.randint(2, 6))] for job_id in (x, y, z)}
    settlers = [Chains(datastore, links, RecordingDispatcher(datastore)) for _ in range(3)]
    order = [run for listed in runs.values() for run in listed] * 3
    rng.shuffle(order)
    errors = []

    def settle(part):
        for execution_id in part:
            try:
                rng.choice(settlers).settle(execution_id)
            except DuplicateKeyError as exc:  # never: a settler handles it
                errors.append(exc)

    threads = [threading.Thread(target=settle, args=(order[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for settler in settlers:  # what a crash left in an outbox, as every node's check does
        settler.check_due(utcnow().replace(year=2100))
        settler.stop()
    context = f"(TEXIUM_CHAIN_SEED={SEED})"
    assert errors == [], context
    chained = datastore.executions.find({"job_id": b}, limit=1000)
    assert sorted(r["parent_execution_id"] for r in chained) == sorted(runs[x]), context
    fan_ins = datastore.executions.find({"job_id": d}, limit=1000)
    assert len(fan_ins) == min(len(listed) for listed in runs.values()), context
    used = [entry["execution_id"] for record in fan_ins for entry in record["triggered_by"]["fan_in"]]
    assert len(used) == len(set(used)), context
    assert datastore.executions.count({"chain_pending": True}) == 0, context
    assert datastore.fanins.get(d)["outbox"] == [], context


def test_a_batch_of_starts_writes_each_record_its_own_fields(datastore):
    """The mark that a run's end starts others goes on that run only, whatever else starts in
    the same batch (SQLite once wrote the first start's fields on every record of a batch)."""
    from texium.core.scheduling.claims import Claims
    from texium.core.scheduling.nodes import NodeIdentity

    identity = NodeIdentity()
    records = [
        new_record({"_id": new_id(), "name": f"j{n}"}, "scheduled", utcnow(), "schedule", identity) for n in range(4)
    ]
    datastore.executions.insert_many(records)
    marks = [{}, {"chain_pending": True}, {}, {"chain_pending": True}]
    outcomes = Claims(datastore, identity).start_many(
        [(record, 1, mark) for record, mark in zip(records, marks)], utcnow()
    )
    assert outcomes == ["started"] * 4
    stored = [datastore.executions.get(record["_id"]) for record in records]
    assert [bool(doc.get("chain_pending")) for doc in stored] == [False, True, False, True]
    assert {doc["status"] for doc in stored} == {"running"}
