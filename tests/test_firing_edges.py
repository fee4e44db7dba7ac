"""The firing core at its edges, one forced interleaving per case, on both stores.

Each test names the case of issue 19 it guards ("case N"): where two actors (passes, nodes,
the API, the sweep, the recorder) used to lose, double or strand an occurrence. The nodes are
in-process (tests/firing_nodes.py) so that the test, not the scheduler, picks the moment each
actor moves; multi-process versions live in test_firing_nodes.py and the model test.
"""

import threading
import time
from datetime import timedelta

import pytest

from tests.firing_nodes import Node, make_job, wait_status
from tests.server_process import wait_for
from texium.core.datastore.base import slot_of
from texium.core.errors import DatastoreUnavailable
from texium.core.scheduling.claims import held
from texium.core.scheduling.occurrences import RETRY, RUN_NOW, SCHEDULE, new_record, retry_key, run_key
from texium.core.scheduling.planner import MISSED_COUNT_LIMIT, Planner
from texium.core.scheduling.recorder import Recorder, Write
from texium.core.timeutil import utcnow

EVERY_SECOND = {"second": "*", "minute": "*", "hour": "*", "day_of_month": "*", "month": "*"}


@pytest.fixture
def nodes(datastore):
    made = []

    def node(**options) -> Node:
        made.append(Node(datastore, **options).start())
        return made[-1]

    yield node
    for each in made:
        each.close()


def hold(node: Node, job_id: str, at, trigger=RETRY, queue=True) -> dict:
    """A record of `job_id` due `at`, held by `node` and (unless queue=False) in its queue: a
    retry by default; a scheduled occurrence must be one of the job's fire times."""
    job = node.ds.jobs.get(job_id)
    key = run_key(job_id, at) if trigger == SCHEDULE else retry_key(f"{time.time_ns():024x}"[-24:], 2)
    record = new_record(job, "scheduled", at, trigger, node.identity, key)
    node.ds.executions.insert(record)
    node.ds.jobs.update_many({"_id": job_id}, {}, inc={"total_executions": 1})
    if queue:
        node.dispatcher.put(record, job)
    return record


def whole_second(ahead: float = 0.3):
    """The first whole second at least `ahead` seconds from now (a fire time of EVERY_SECOND)."""
    return (utcnow() + timedelta(seconds=ahead + 1)).replace(microsecond=0)


def body_runs(path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def flaky(tmp_path, failures=0) -> dict:
    """FlakyJob: each body start writes its execution id to a file (fails its first `failures`)."""
    counter = tmp_path / "starts"
    return {
        "job_class_string": "tests.sample_jobs.operations.FlakyJob",
        "pub_kwargs": {"counter_path": str(counter), "failures": failures},
    }, counter


# -- claims: one pass at a time, nothing taken back ------------------------------------------
def test_case_2_two_passes_at_one_instant_leave_one_record_that_runs_once(datastore, nodes, tmp_path):
    a, b = nodes(), nodes()
    job, starts = flaky(tmp_path)
    job_id = make_job(a, **EVERY_SECOND, **job)
    due = datastore.jobs.get(job_id)["next_run_time"]
    stale = a.scheduler._store.due(due)
    for node in (a, b):  # both read the document before either claimed
        node.scheduler._store.due = lambda now, stale=stale: [dict(doc) for doc in stale]
    a_put = a.dispatcher.put

    def a_holds_then_b_passes(record, job):
        a_put(record, job)
        b.claim(due)  # between A's records and the end of A's pass, B's whole pass

    a.dispatcher.put = a_holds_then_b_passes
    a.claim(due)
    [record] = datastore.executions.find({"job_id": job_id})
    assert record["node_id"] == a.identity.node_id and record["scheduled_at"] == due
    assert wait_status(datastore, record["_id"])["status"] == "completed"
    assert body_runs(starts) == [record["_id"]]


def test_case_2_the_loser_of_the_compare_and_set_makes_no_record(datastore, nodes):
    a, b = nodes(), nodes()
    job_id = make_job(a, **EVERY_SECOND)
    due = datastore.jobs.get(job_id)["next_run_time"]
    stale = [dict(doc) for doc in a.scheduler._store.due(due)]
    a.claim(due)
    b.scheduler._store.due = lambda now: [dict(doc) for doc in stale]
    assert b.claim(due + timedelta(milliseconds=1)) == []  # a second later still: nothing of B's
    assert len(datastore.executions.find({"job_id": job_id})) == 1


def test_a_claim_interrupted_after_its_compare_and_set_is_made_by_the_next_pass(datastore, nodes, monkeypatch):
    """Case 7: a store error between the job's compare-and-set and its records."""
    node = nodes()
    job_id = make_job(node, **EVERY_SECOND)
    due = datastore.jobs.get(job_id)["next_run_time"]
    insert_many = datastore.executions.insert_many
    calls = []

    def failing_once(records):
        if not calls:
            calls.append(1)
            raise DatastoreUnavailable("the store went away")
        return insert_many(records)

    monkeypatch.setattr(datastore.executions, "insert_many", failing_once)
    with pytest.raises(DatastoreUnavailable):
        node.claim(due)
    node.claim(due + timedelta(milliseconds=5))  # the next pass: claims again (SQLite) or finishes it
    [record] = datastore.executions.find({"job_id": job_id})
    assert record["scheduled_at"] == due
    assert wait_status(datastore, record["_id"])["status"] == "completed"
    assert datastore.jobs.get(job_id)["total_executions"] == 1


def test_claims_a_dead_node_advanced_but_never_made_are_made_by_the_sweep(datastore, nodes):
    """A node that died between its compare-and-set and its records (MongoDB: two writes)."""
    dead, survivor = nodes(), nodes()
    job_id = make_job(dead, **EVERY_SECOND)
    due = datastore.jobs.get(job_id)["next_run_time"]
    dead.claims.make_records = lambda job, claim, on_held: []  # dies right after the compare-and-set
    dead.claim(due)
    assert datastore.executions.find({"job_id": job_id}) == []
    datastore.nodes.update_many({"_id": dead.identity.node_id}, {"last_seen": utcnow() - timedelta(minutes=5)})
    survivor.nodes.sweep()
    [record] = datastore.executions.find({"job_id": job_id})
    assert record["scheduled_at"] == due and record["node_id"] is None  # any pass takes it
    survivor.scheduler._claims.claim_unheld(utcnow() + timedelta(seconds=2), survivor.scheduler._queue_unheld)
    assert wait_status(datastore, record["_id"])["status"] == "completed"
    assert datastore.jobs.get(job_id)["total_executions"] == 1


def test_case_8_a_missed_record_never_collides_with_a_run_of_the_same_instant():
    from texium.core.scheduling.planner import records_of

    base = utcnow().replace(microsecond=0) - timedelta(seconds=30)
    job = {"_id": "0123456789abcdef01234567", "second": "*", "timezone": "UTC", "next_run_time": base}
    plan = Planner(misfire_grace_time=3600).plan(job, base + timedelta(seconds=10, milliseconds=100))
    keys = {record["occurrence_key"] for record in records_of(job, plan.claim(), None)}
    assert run_key(job["_id"], base) not in keys and f"missed:{job['_id']}@" in "".join(keys)


@pytest.mark.parametrize("missed", [MISSED_COUNT_LIMIT - 1, MISSED_COUNT_LIMIT, MISSED_COUNT_LIMIT + 5])
def test_case_18_missed_counts_are_exact_up_to_the_limit_and_end_before_the_run(missed):
    base = utcnow().replace(microsecond=0) - timedelta(days=1)
    job = {"_id": "0123456789abcdef01234567", "second": "*", "timezone": "UTC", "next_run_time": base}
    plan = Planner(misfire_grace_time=3600).plan(job, base + timedelta(seconds=missed, milliseconds=100))
    [run] = plan.runs
    assert run == base + timedelta(seconds=missed)
    assert plan.missed["last"] == run - timedelta(seconds=1)  # never the run's own time
    if missed <= MISSED_COUNT_LIMIT:  # exactly 10,000 was once labelled "more than 10000"
        assert (plan.missed["count"], plan.missed["exact"]) == (missed, True)
    else:
        assert (plan.missed["count"], plan.missed["exact"]) == (MISSED_COUNT_LIMIT, False)


def test_case_11_a_hand_edited_next_run_time_is_repaired_and_the_others_fire(datastore, nodes):
    node = nodes()
    bad = make_job(node, **EVERY_SECOND)
    good = make_job(node, **EVERY_SECOND)
    datastore.jobs.update_many({"_id": bad}, {"next_run_time": "2020-01-01"})  # sorts before any time
    assert node.scheduler._process_jobs() is not None  # the pass returns; it never raises
    assert node.scheduler.state_of_pass.store_error == ""
    repaired = datastore.jobs.get(bad)["next_run_time"]
    assert hasattr(repaired, "tzinfo") and repaired > utcnow() - timedelta(seconds=2)
    node.claim(utcnow() + timedelta(seconds=1.5))
    assert good in {r["job_id"] for r in datastore.executions.find({})}


def test_a_pass_plans_outside_the_write_transaction(tmp_path, monkeypatch):
    from texium.core.datastore import open_datastore

    datastore = open_datastore(None, "texium", str(tmp_path))  # the store with a write transaction
    node = Node(datastore).start()
    try:
        make_job(node, **EVERY_SECOND)
        planned_in_transaction = []
        plan = node.scheduler._planner.plan

        def watching(doc, now, *blackouts):
            planned_in_transaction.append(getattr(datastore._local, "batch", False))
            return plan(doc, now, *blackouts)

        monkeypatch.setattr(node.scheduler._planner, "plan", watching)
        node.claim(utcnow() + timedelta(seconds=2))
        assert planned_in_transaction == [False]
    finally:
        node.close()


# -- job writes ------------------------------------------------------------------------------
def test_case_3_a_pause_racing_an_edit_leaves_no_next_run(datastore, nodes):
    node = nodes()
    job_id = make_job(node, **EVERY_SECOND)
    get, raced = node.manager.get, []

    def read_then_pause(job_id):
        doc = get(job_id)
        if not raced:  # the pause lands between the edit's read and its write
            raced.append(1)
            node.manager.pause(job_id, "other")
        return doc

    node.manager.get = read_then_pause
    node.manager.update(job_id, {"name": "edited"}, "tester")
    doc = datastore.jobs.get(job_id)
    assert (doc["is_paused"], doc["next_run_time"], doc["name"]) == (True, None, "edited")


@pytest.mark.parametrize("action", ["pause", "delete"])
def test_case_12_a_pause_or_delete_just_before_a_held_occurrence_stops_it(datastore, nodes, tmp_path, action):
    node = nodes()
    job, starts = flaky(tmp_path)
    job_id = make_job(node, **EVERY_SECOND, **job)
    record = hold(node, job_id, whole_second(0.3), SCHEDULE)
    getattr(node.manager, action)(job_id, "tester")  # answered before the occurrence is due
    assert datastore.executions.get(record["_id"])["status"] == "skipped"  # ended before the answer
    time.sleep(1.5)
    assert body_runs(starts) == []
    if action == "pause":
        assert datastore.jobs.get(job_id)["total_executions"] == 0


def test_an_occurrence_whose_schedule_was_edited_away_does_not_run(datastore, nodes, tmp_path):
    node = nodes()
    job, starts = flaky(tmp_path)
    job_id = make_job(node, **EVERY_SECOND, **job)
    at = whole_second(0.5)
    record = hold(node, job_id, at, SCHEDULE)
    node.manager.update(job_id, {"second": str((at.second + 30) % 60)}, "tester")
    assert wait_status(datastore, record["_id"])["status"] == "skipped"
    assert "schedule was changed" in datastore.executions.get(record["_id"])["error"] and body_runs(starts) == []


# -- the concurrency limit lives in the store ---------------------------------------------------
def test_case_4_two_nodes_run_nows_of_a_one_at_a_time_job_never_overlap(datastore, nodes):
    a, b = nodes(), nodes()
    job_id = make_job(a, pub_kwargs={"seconds": 0.4})
    ids = [a.manager.run_now(job_id, "t"), b.manager.run_now(job_id, "t")]
    runs = [wait_status(datastore, i, timeout=15) for i in ids]
    assert [r["status"] for r in runs] == ["completed", "completed"]
    first, second = sorted(runs, key=lambda r: r["started_at"])
    assert first["completed_at"] <= second["started_at"]
    assert datastore.slots.count({}) == 0


def test_case_5_cancelling_a_waiting_run_now_lets_the_next_one_start(datastore, nodes):
    node = nodes()
    job_id = make_job(node, pub_kwargs={"seconds": 0.4})
    ids = [node.manager.run_now(job_id, "t") for _ in range(3)]
    time.sleep(0.1)
    assert node.manager.cancel(ids[1], "tester") == ("cancelled", [])
    statuses = [wait_status(datastore, i, timeout=15)["status"] for i in ids]
    assert statuses == ["completed", "cancelled", "completed"]


def test_a_scheduled_occurrence_over_the_limit_is_skipped_and_a_slot_is_never_leaked(datastore, nodes):
    node = nodes()
    job_id = make_job(node, **EVERY_SECOND, pub_kwargs={"seconds": 0.5})
    running = node.manager.run_now(job_id, "t")
    wait_status(datastore, running, statuses=("running",))
    record = hold(node, job_id, utcnow().replace(microsecond=0), SCHEDULE)
    assert wait_status(datastore, record["_id"])["status"] == "skipped"
    assert "still in progress" in datastore.executions.get(record["_id"])["error"]
    assert wait_status(datastore, running)["status"] == "completed"
    time.sleep(0.2)
    assert datastore.slots.count({}) == 0 and datastore.jobs.get(job_id)["total_executions"] == 1


def test_a_run_that_ended_holds_no_slot_even_if_its_node_died_before_giving_it_back(datastore, nodes):
    node = nodes()
    job_id = make_job(node)
    ended = hold(node, job_id, utcnow(), queue=False)
    datastore.executions.update_many({"_id": ended["_id"]}, {"status": "completed"})
    if datastore.slot_documents:  # MongoDB: the slot document a crash left behind
        datastore.slots.insert({"job_id": job_id, "key": f"{job_id}#0", **slot_of(ended)})
        node.nodes.sweep()
    following = hold(node, job_id, utcnow(), queue=False)
    assert node.claims.start(following, 1, utcnow()) == "started"


# -- cancel ----------------------------------------------------------------------------------------
def test_case_13_cancel_of_a_held_run_that_has_not_started_means_it_never_starts(datastore, nodes, tmp_path):
    node = nodes()
    job, starts = flaky(tmp_path)
    job_id = make_job(node, **job)
    record = hold(node, job_id, utcnow() + timedelta(milliseconds=300))
    assert node.manager.cancel(record["_id"], "tester") == ("cancelled", [])  # 200: cancelled already
    time.sleep(0.6)
    assert datastore.executions.get(record["_id"])["status"] == "cancelled" and body_runs(starts) == []


# -- the dispatch queue ------------------------------------------------------------------------------
def test_case_14_a_busy_pool_coalesces_stale_occurrences_instead_of_running_them_late(datastore, nodes):
    node = nodes(pool=1)
    blocker = make_job(node, pub_kwargs={"seconds": 1.2})
    job_id = make_job(node, **EVERY_SECOND)
    busy = node.manager.run_now(blocker, "t")
    wait_status(datastore, busy, statuses=("running",))
    start = utcnow().replace(microsecond=0)
    held = [hold(node, job_id, start - timedelta(seconds=n), SCHEDULE) for n in range(6)]  # all due, queued
    statuses = [wait_status(datastore, r["_id"])["status"] for r in held]
    assert statuses == ["completed", "missed", "missed", "missed", "missed", "missed"]  # only the newest ran
    missed = datastore.executions.get(held[-1]["_id"])
    assert "newer occurrence" in missed["error"] and missed["missed_count"] == 1
    assert datastore.jobs.get(job_id)["total_executions"] == 1


def test_an_occurrence_past_the_misfire_grace_is_missed_not_run_stale(datastore, nodes):
    node = nodes(grace=1)
    job_id = make_job(node, **EVERY_SECOND)
    record = hold(node, job_id, utcnow().replace(microsecond=0) - timedelta(seconds=5), SCHEDULE)
    done = wait_status(datastore, record["_id"])
    assert done["status"] == "missed" and "past the misfire grace time" in done["error"]


def test_case_15_a_record_held_ahead_starts_at_its_time_never_before(datastore, nodes):
    node = nodes()
    job_id = make_job(node, retries=1)
    job = datastore.jobs.get(job_id)
    due = utcnow() + timedelta(seconds=1.2)
    retry = new_record(job, "scheduled", due, RETRY, None, retry_key(job_id, 2), attempt=2, retry_of=job_id)
    datastore.executions.insert(retry)
    node.scheduler._claims.claim_unheld(utcnow() + timedelta(seconds=2), node.scheduler._queue_unheld)
    done = wait_status(datastore, retry["_id"])
    assert done["status"] == "completed" and done["started_at"] >= done["scheduled_at"]


# -- nodes: leases, fencing, burial --------------------------------------------------------------------
def expire(datastore, node: Node) -> None:
    datastore.nodes.update_many({"_id": node.identity.node_id}, {"last_seen": utcnow() - timedelta(minutes=5)})


def test_case_6_a_node_that_wakes_after_being_buried_neither_runs_nor_records_again(datastore, tmp_path):
    sleeper, survivor = Node(datastore), Node(datastore).start()
    sleeper.nodes._register(utcnow())  # registered, but its dispatcher is "stopped" (not started)
    try:
        job, starts = flaky(tmp_path)
        job_id = make_job(survivor, **job)
        record = hold(sleeper, job_id, utcnow())
        expire(datastore, sleeper)
        survivor.nodes.sweep()  # declared dead: its record is handed back (generation + 1)
        taken = datastore.executions.get(record["_id"])
        assert taken["node_id"] is None and taken["generation"] == record["generation"] + 1
        survivor.scheduler._claims.claim_unheld(utcnow() + timedelta(seconds=1), survivor.scheduler._queue_unheld)
        assert wait_status(datastore, record["_id"])["status"] == "completed"
        old_id = sleeper.identity.node_id
        sleeper.dispatcher.start()  # it wakes: its queue still has the record, at the old generation
        sleeper.nodes.beat()  # finds itself dead: hands back, rejoins under a new id
        stale = Write("executions", {**held(record), "status": "running"}, {"status": "failed"})
        sleeper.recorder.write(stale)
        sleeper.recorder.flush(5)
        time.sleep(0.3)
        assert body_runs(starts) == [record["_id"]]
        assert datastore.executions.get(record["_id"])["status"] == "completed"
        assert sleeper.identity.node_id != old_id and datastore.nodes.get(old_id)["state"] == "dead"
        assert datastore.nodes.get(sleeper.identity.node_id)["state"] == "alive"
    finally:
        sleeper.close()
        survivor.close()


def test_case_10_a_store_error_in_the_sweep_is_finished_by_the_next_sweep(datastore, nodes, monkeypatch):
    dead, survivor = nodes(), nodes()
    job_id = make_job(dead)
    running = hold(dead, job_id, utcnow(), queue=False)
    datastore.executions.update_many({"_id": running["_id"]}, {"status": "running"})
    expire(datastore, dead)
    update_many, failed = datastore.executions.update_many, []

    def failing_once(query, fields, inc=None):
        if not failed and fields.get("status") == "abandoned":
            failed.append(1)
            raise DatastoreUnavailable("the store went away")
        return update_many(query, fields, inc)

    monkeypatch.setattr(datastore.executions, "update_many", failing_once)
    with pytest.raises(DatastoreUnavailable):
        survivor.nodes.sweep()
    assert datastore.nodes.get(dead.identity.node_id)["state"] == "dead"
    survivor.nodes.sweep()
    assert datastore.executions.get(running["_id"])["status"] == "abandoned"


def test_nodes_that_share_a_hostname_in_other_pid_namespaces_do_not_bury_each_other(datastore, nodes):
    me = nodes()
    other = datastore.nodes.insert(
        {"hostname": me.identity.hostname, "host_key": "another container", "pid": 999_999_999, "state": "alive"}
    )
    datastore.nodes.update_many({"_id": other}, {"last_seen": utcnow()})
    me.nodes.sweep()
    assert datastore.nodes.get(other)["state"] == "alive"


# -- shutdown ----------------------------------------------------------------------------------------
def test_case_1_a_clean_shutdown_hands_back_what_it_held_ahead_and_any_node_runs_it(datastore, tmp_path):
    leaving, staying = Node(datastore).start(), Node(datastore).start()
    try:
        job, starts = flaky(tmp_path)
        job_id = make_job(staying, **job)
        record = hold(leaving, job_id, utcnow() + timedelta(seconds=1))
        leaving.close()
        leaving.nodes.stop()
        back = datastore.executions.get(record["_id"])
        assert (back["status"], back["node_id"]) == ("scheduled", None)
        staying.scheduler._claims.claim_unheld(utcnow() + timedelta(seconds=2), staying.scheduler._queue_unheld)
        assert wait_status(datastore, record["_id"])["status"] == "completed"
        assert body_runs(starts) == [record["_id"]]
    finally:
        staying.close()


def test_case_19_a_run_that_starts_while_its_node_shuts_down_ends_recorded(datastore, nodes, tmp_path, monkeypatch):
    node = nodes()
    job, starts = flaky(tmp_path)
    job_id = make_job(node, **job)
    start_many, closing = node.claims.start_many, []

    def shutdown_then_start(starts, started_at):
        closing.append(threading.Thread(target=node.dispatcher.close, args=(5.0,)))
        closing[0].start()  # the shutdown begins while this batch of starts is being decided
        time.sleep(0.2)
        return start_many(starts, started_at)

    monkeypatch.setattr(node.claims, "start_many", shutdown_then_start)
    record = hold(node, job_id, utcnow())
    wait_for(lambda: closing, timeout=5)
    closing[0].join(10)
    node.recorder.flush(5)
    assert datastore.executions.get(record["_id"])["status"] == "completed"  # never left running
    assert body_runs(starts) == [record["_id"]]


# -- records: one transition, one writer ---------------------------------------------------------------
def test_case_20_a_record_handed_back_and_held_again_runs_once(datastore, nodes, tmp_path):
    node = nodes()
    job, starts = flaky(tmp_path)
    job_id = make_job(node, **job)
    record = hold(node, job_id, utcnow() + timedelta(milliseconds=400))  # queued at generation 1
    assert node.claims.hand_back(dict(record))  # as a sweep does while this node is paused
    node.scheduler._claims.claim_unheld(utcnow() + timedelta(seconds=1), node.scheduler._queue_unheld)
    assert wait_status(datastore, record["_id"])["status"] == "completed"
    time.sleep(0.3)
    assert body_runs(starts) == [record["_id"]]


def test_a_handed_back_run_now_starts_before_an_occurrence_due_after_it(datastore, nodes, tmp_path):
    """A node that stopped handed back a run-now; the next node finds it with the job's next
    occurrence already due (it was down at the time): the run-now was asked for first and
    runs first, the occurrence behind it is skipped for the limit (the CI run where the
    occurrence took the only slot and the handed-back run-now waited 30 s)."""
    a, b = nodes(), nodes()
    job_id = make_job(a, **EVERY_SECOND, pub_kwargs={"seconds": 1})
    due = (utcnow() - timedelta(seconds=1)).replace(microsecond=0)
    datastore.jobs.update_many({"_id": job_id}, {"next_run_time": due})
    asked = hold(a, job_id, due - timedelta(seconds=1), trigger=RUN_NOW, queue=False)
    assert a.claims.hand_back(dict(asked))
    b.scheduler._process_jobs()
    assert wait_status(datastore, asked["_id"], ("running", "completed"))["status"] in ("running", "completed")
    occurrence = wait_status(datastore, datastore.executions.find({"job_id": job_id, "trigger": SCHEDULE})[0]["_id"])
    assert occurrence["status"] == "skipped" and "still in progress" in occurrence["error"]


def test_case_20_a_queue_entry_of_an_older_generation_is_refused_at_its_start(datastore, nodes, tmp_path):
    node = nodes()
    job, starts = flaky(tmp_path)
    job_id = make_job(node, **job)
    record = hold(node, job_id, utcnow() + timedelta(milliseconds=300))
    datastore.executions.update_many({"_id": record["_id"]}, {}, inc={"generation": 1})  # taken over
    time.sleep(0.7)
    assert body_runs(starts) == [] and datastore.executions.get(record["_id"])["status"] == "scheduled"
    assert datastore.slots.count({}) == 0


def test_case_21_a_record_ended_twice_counts_once(datastore, nodes):
    a, b = nodes(), nodes()
    job_id = make_job(a)
    record = hold(a, job_id, utcnow() + timedelta(hours=1), queue=False)
    assert a.claims.end_unstarted(record, "skipped", "first") is True
    assert b.claims.end_unstarted(dict(record), "skipped", "again") is False
    assert datastore.jobs.get(job_id)["total_executions"] == 0


def test_case_17_a_partly_applied_batch_is_not_applied_again(datastore, monkeypatch):
    job_id = datastore.jobs.insert({"total_executions": 0})
    first = datastore.executions.insert({"status": "running", "node_id": None, "generation": 1})
    second = datastore.executions.insert({"status": "running", "node_id": None, "generation": 1})
    recorder = Recorder(datastore)
    update_many, failed = datastore.executions.update_many, []

    def failing_once(query, fields, inc=None):
        if query.get("_id") == second and not failed:
            failed.append(1)
            raise DatastoreUnavailable("the store went away")
        return update_many(query, fields, inc)

    monkeypatch.setattr(datastore.executions, "update_many", failing_once)
    try:
        for execution_id in (first, second):
            then = [Write("jobs", {"_id": job_id}, inc={"total_executions": 1})]
            recorder.write(
                Write("executions", {"_id": execution_id, "status": "running"}, {"status": "completed"}, then=then)
            )
        assert recorder.flush(10)
    finally:
        recorder.stop(2)
    assert datastore.jobs.get(job_id)["total_executions"] == 2
    assert {datastore.executions.get(i)["status"] for i in (first, second)} == {"completed"}


def test_a_run_now_of_a_paused_job_still_runs_and_a_delete_cancels_a_waiting_one(datastore, nodes):
    node = nodes()
    job_id = make_job(node, pub_kwargs={"seconds": 0.4})
    node.manager.pause(job_id, "tester")
    first = node.manager.run_now(job_id, "t")
    waiting = node.manager.run_now(job_id, "t")
    assert wait_status(datastore, first, statuses=("running",))["status"] == "running"
    node.manager.delete(job_id, "tester")
    assert wait_status(datastore, waiting)["status"] == "cancelled"
    assert wait_status(datastore, first)["status"] == "completed"
    assert datastore.executions.get(waiting)["trigger"] == RUN_NOW


def test_an_occurrence_claimed_again_after_an_edit_is_counted_once(datastore, nodes):
    """Found by the model test (seed 667207): an edit inside the lead time sets next_run_time
    back to an occurrence already claimed; the second claim makes nothing and counts nothing."""
    node = nodes()
    job_id = make_job(node, **EVERY_SECOND)
    due = datastore.jobs.get(job_id)["next_run_time"]
    node.claim(due - timedelta(milliseconds=200), lead=0.25)  # held ahead
    node.manager.update(job_id, {"name": "edited"}, "tester")  # next_run_time is `due` again
    assert datastore.jobs.get(job_id)["next_run_time"] == due
    node.claim(due - timedelta(milliseconds=100), lead=0.25)
    assert len(datastore.executions.find({"job_id": job_id})) == 1
    assert datastore.jobs.get(job_id)["total_executions"] == 1


def test_a_start_is_timed_once_the_store_is_held(tmp_path, monkeypatch):
    """Found by the model test (seed 111): the start time was read before the start's
    transaction waited for the write lock, behind another node writing the end of the job's
    previous run, so the record showed two runs of a one-at-a-time job overlapping."""
    from texium.core.datastore import open_datastore
    from texium.core.scheduling import dispatch

    datastore = open_datastore(None, "texium", str(tmp_path))
    node = Node(datastore).start()
    try:
        job_id = make_job(node)
        held_when_timed = []

        def clock():
            held_when_timed.append(getattr(datastore._local, "batch", False))
            return utcnow()

        monkeypatch.setattr(dispatch, "utcnow", clock)
        record = hold(node, job_id, utcnow())
        assert wait_status(datastore, record["_id"])["status"] == "completed"
        assert True in held_when_timed  # the start time: read inside the transaction that decides it
    finally:
        node.close()


def test_a_batch_of_starts_keeps_each_job_under_its_limit_and_refuses_what_is_not_ours(datastore, nodes):
    node = nodes()
    one, two = make_job(node), make_job(node)
    first, second = (hold(node, one, utcnow(), queue=False) for _ in range(2))
    other = hold(node, two, utcnow(), queue=False)
    taken = hold(node, two, utcnow(), queue=False)
    datastore.executions.update_many({"_id": taken["_id"]}, {}, inc={"generation": 1})  # reclaimed meanwhile
    outcomes = node.claims.start_many([(first, 1), (second, 1), (other, 2), (taken, 2)], utcnow())
    assert outcomes == ["started", "busy", "started", "lost"]
    assert [datastore.executions.get(r["_id"])["status"] for r in (first, second, other, taken)] == [
        "running",
        "scheduled",
        "running",
        "scheduled",
    ]


def test_records_from_before_triggers_tell_theirs_by_key():
    from texium.core.scheduling.occurrences import trigger_of

    assert [
        trigger_of({"occurrence_key": "manual:0123456789abcdef01234567"}),
        trigger_of({"occurrence_key": "retry:0123456789abcdef01234567:2"}),
        trigger_of({"occurrence_key": "0123456789abcdef01234567@2026-01-01T00:00:00.000000+00:00"}),
        trigger_of({"trigger": RUN_NOW, "occurrence_key": "x"}),
    ] == [RUN_NOW, RETRY, SCHEDULE, RUN_NOW]


def test_started_at_is_when_the_start_was_decided_so_a_pause_after_it_is_later(datastore, nodes, monkeypatch):
    """Found by the model test (seed 849474): started_at was once the moment the job body began,
    which can come just after a pause answered right after the start was decided."""
    node = nodes()
    job_id = make_job(node, **EVERY_SECOND)
    execute, answered = node.runner.execute, []

    def pause_then_run(run):
        node.manager.pause(job_id, "tester")  # answered after the start, before the body begins
        answered.append(utcnow())
        time.sleep(0.05)
        return execute(run)

    monkeypatch.setattr(node.runner, "execute", pause_then_run)
    record = hold(node, job_id, utcnow().replace(microsecond=0), SCHEDULE)
    done = wait_status(datastore, record["_id"])
    assert done["status"] == "completed" and done["started_at"] <= answered[0]
