"""The firing core: everything an occurrence passes through, from its cron schedule to its record.

An occurrence has one truth, its execution record, and every arrow below is ONE conditional
write on that record's (status, holder `node_id`, `generation`). A write whose condition no
longer holds did not happen, and its writer knows it (the store says 0 matched).

```
          planner + claims: CAS the job's next_run_time (writing the claim on the job), then
          insert by occurrence key (holder = this node); the CAS loser inserts nothing
 (due) ──────────────────> scheduled ──dispatch: re-read job, under limit, CAS──> running
   │                        │  │  │                                               ├─> completed | failed | timeout
   │   pause/delete, schedule  │  │                                               ├─> retried (+ next attempt,
   │   edit, late or coalesced │  │ cancel (API, any node): cancelled              │   scheduled, no holder)
   │   at start: skipped /     │  │                                               ├─> cancelled
   │   missed, never starts ───┘  └─ shutdown, holder dead: handed back           └─> abandoned (holder stopped
   │                                (holder None, generation + 1) -> claimed              or dead)
   └─> missed (own key space: "missed:<job>@<first>"; never collides with a run)    again by any pass
```

Who moves a record, and how:
- **scheduler** (the pass, `scheduler.py`): plans outside any write transaction
  (`planner.py`), then claims (`claims.py`): advances the job's `next_run_time` by compare-
  and-set, writing the claim on the job (`last_claim`, `claimed_by`), and only then inserts
  the records, holder = itself. A plan holds one occurrence, or with the job's
  `catchup_policy: all` every late one inside its catch-up window (catchup.py). A pass that
  loses the compare-and-set inserts nothing, so nothing is ever taken back; a store error
  between the two writes is finished by this node's next pass, a death between them by the
  sweep (any node makes the claim's records, by the same keys). It also claims the records
  nobody holds (pending retries, handed-back runs), and advances the running backfills
  (`backfill.py`): the next occurrences of each by compare-and-set on its cursor, then their
  records by run key, the same way.
- **dispatch** (`dispatch.py`, one queue per node, APScheduler's executor): holds every record
  this node claimed until it is due and a worker is free; coalesces stale occurrences (not
  those of a job that catches up `all`) and misses those past the job's catch-up window; at start
  re-reads the jobs and moves `scheduled -> running` only while the job is under its limit
  (counted by SQLite in the start's statement; a slot document on MongoDB), and while the
  maintenance switch is off (else `skipped`). An occurrence refused for the limit follows the
  job's `overlap_policy`: `skipped`, or it stays `scheduled` with `waiting` set (conditional on
  holder and generation) and tries again when a slot frees. `queue_one` moves the job's older
  waiting records `scheduled -> skipped` whoever holds them (conditional on `scheduled`: if
  their holder started one first, the write misses it; if the write wins, that start fails);
  `replace` asks the running ones to stop, as a cancel does. A user's runs hold at most
  `max_runs_per_user` workers; the rest wait in memory, still `scheduled` and held.
- **runner** (`runner.py`): runs the job body; **watchdog** (`watchdog.py`): timeouts, cancel
  requests from other nodes, output so far.
- **recorder** (`recorder.py`): writes ends in batches, each conditional on the holder and
  generation; applies a write's consequences (retry record, slot release, counters) only when
  the write itself was applied; re-queues only what a failed batch did not apply.
- **nodes** (`nodes.py`): a record's lease is its holder's node lease, renewed by one heartbeat
  write for everything the node holds. The sweep declares silent nodes dead and reclaims what
  dead or stopped nodes hold (hand back / abandon, generation + 1), idempotently on every
  sweep, so an error half-way is finished by the next one. A node that finds itself declared
  dead hands back what it queued and rejoins under a new id; its late writes are refused.
- **chains** (`texium.core.events.chains`, a consumer of the end): the start of a run whose job
  starts others writes `chain_pending` with it; after the end, its holder (or any node's check,
  for what a dead node left) makes each chained start a held record keyed "chain:<execution>:<job>"
  (a fan-in's "fanin:<job>:<n>", decided by compare-and-set on the fan-in's state) and queues it
  here like a run-now, then clears the mark; a second settler's insert is a duplicate key.
- **API** (`texium.core.scheduler_manager`): run-now inserts a held record; cancel moves a
  `scheduled` record to `cancelled` (so it never starts) or asks the holder to stop a running
  one; pause and delete move the job's `scheduled` records to `skipped` after the job write.
"""
