"""Looks after the runs of this node while they run: output so far, time limits, cancel requests.

One thread per node. Every tick it publishes each run's new output (at most every
PUBLISH_SECONDS, through the recorder, conditional on the run still being this holder's),
tells a run past its `timeout_seconds` to stop, and records ended a run that did not stop
within the dispatcher's stop grace. Cancel requests written to the store by any node's API are
read every CANCEL_POLL_SECONDS for the runs of this node only. It also lets the process
registry record the scripts' descendants and reap the orphans the server adopted as a
subreaper (processes.py). A run past its job's duration limits (the alerts hook says which) is
announced `long_running` to the alerts once: the holder is the one node that looks.
"""

from __future__ import annotations

import logging
import threading
import time

from texium.core.datastore.base import Datastore
from texium.core.scheduling.claims import held
from texium.core.scheduling.dispatch import Dispatcher
from texium.core.scheduling.recorder import Recorder
from texium.core.scheduling.runner import Run

log = logging.getLogger("texium.runner")
WATCH_TICK = 0.1  # seconds between the watchdog's looks at the runs
PUBLISH_SECONDS = 0.5  # output so far is written at most this often per run
CANCEL_POLL_SECONDS = 1.0  # how often the store is asked for cancel requests (from any node)


class Watchdog:
    def __init__(self, datastore: Datastore, dispatcher: Dispatcher, recorder: Recorder, processes=None):
        self._ds = datastore
        self._processes = processes  # ProcessRegistry: polled for scripts' descendants and adopted orphans
        self._dispatcher = dispatcher
        self._recorder = recorder
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="texium-watchdog", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stopping.set()

    def _watch(self) -> None:
        next_poll = 0.0
        while not self._stopping.wait(WATCH_TICK):
            try:
                now = time.monotonic()
                started = self._dispatcher.started()
                for run in started:
                    self._look_at(run, now)
                if self._processes is not None:
                    self._processes.poll()  # scripts' descendants; reaps the orphans adopted (at most every 0.5 s)
                if started and now >= next_poll:
                    next_poll = now + CANCEL_POLL_SECONDS
                    self._apply_cancel_requests(started)
            except Exception:  # a bad moment must not stop the watching for good
                log.exception("The run watchdog hit an error; it goes on")

    def _look_at(self, run: Run, now: float) -> None:
        if run.output is None:
            return
        if not run.duration_told and not run.reason:
            self._check_duration(run, now)
        if not run.reason and run.deadline is not None and now >= run.deadline:
            self._dispatcher.stop(run.id, "timeout")
        elif run.reason and now - run.stop_asked >= self._dispatcher.stop_grace:
            self._dispatcher.finish(run, "failed", "", gave_up=True)
        elif run.output.size != run.published and now - run.published_at >= PUBLISH_SECONDS:
            run.published, run.published_at = run.output.size, now
            self._recorder.output(held(run.record), run.output.text(run.hidden))

    def _check_duration(self, run: Run, now: float) -> None:
        """A run past the job's max_duration_seconds or its anomaly limit: `long_running`, once
        (the alerts thread claims it on the execution, so one alert per run on any number of nodes)."""
        alerts = self._dispatcher.alerts
        limit = alerts.long_running_limit(run.job) if alerts is not None else None
        if limit is None:
            run.duration_told = True  # the job as this run read it has no limit: nothing to watch
            return
        if now - run.clock >= limit[0]:
            run.duration_told = True
            alerts.running_long(run.job, run.record, now - run.clock, limit)

    def _apply_cancel_requests(self, started: list[Run]) -> None:
        """Cancel requests written to the store (by any node's API) for runs of this node."""
        try:
            asked = self._ds.executions.find(
                {"_id": {"$in": [run.id for run in started]}, "cancel_requested_at": {"$ne": None}}
            )
        except Exception as exc:
            log.warning("Could not read cancel requests: %s", getattr(exc, "detail", exc))
            return
        for doc in asked:
            self._dispatcher.stop(doc["_id"], "cancelled", doc.get("cancelled_by") or "unknown")
