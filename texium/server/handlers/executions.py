"""/api/scheduler/executions and /audit-logs — the run history and the change history."""

import asyncio
import json
import logging
import time

from tornado.iostream import StreamClosedError

from texium.core import figures
from texium.server.handlers.base import ApiHandler

log = logging.getLogger("texium.server")
STREAM_POLL_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0


class ExecutionsHandler(ApiHandler):
    async def get(self) -> None:
        limit, offset = self.paging()
        run = self.read if offset <= 1000 else self.blocking  # a deep offset walks the index: a thread
        page = await run(
            lambda: self.context.history.list(
                job_id=self.query("job_id"),
                user_id=self.query("user_id"),
                owner=self.scope,
                status=self.query("status"),
                monitor_id=self.query("monitor_id"),
                source=self.query("source"),
                parent_execution_id=self.query("parent_execution_id"),
                since=self.query_time("since"),
                until=self.query_time("until"),
                limit=limit,
                offset=offset,
            )
        )
        self.listing("Executions retrieved successfully", page)


class ExecutionHandler(ApiHandler):
    async def get(self, execution_id: str) -> None:
        execution = await self.read(self.context.history.get, execution_id, self.scope)
        self.success("Execution retrieved successfully", data=execution)


class ExecutionCancelHandler(ApiHandler):
    async def post(self, execution_id: str) -> None:
        downstream = self.query_bool("cancel_downstream")
        state, cancelled = await self.blocking(
            self.context.scheduler.cancel, execution_id, self.actor, self.scope, downstream
        )
        extra = {"cancelled_downstream": cancelled} if downstream else {}
        if state == "cancelled":
            self.success("Execution cancelled", execution_id=execution_id, **extra)
        elif state == "downstream":
            self.success("Downstream runs cancelled", execution_id=execution_id, **extra)
        else:
            self.success("Cancellation requested", status=202, execution_id=execution_id, **extra)


class ExecutionOutputStreamHandler(ApiHandler):
    """Server-Sent Events: one event per output line (its id the offset after it, so a client
    reconnecting with Last-Event-ID resumes), then `end` with the status. Reads the store, so it
    follows a run on any node."""

    async def get(self, execution_id: str) -> None:
        history = self.context.history
        status, output, error = await self.read(history.progress, execution_id, self.scope)
        resume = self.request.headers.get("Last-Event-ID", "")
        offset = int(resume) if resume.isdigit() else 0
        self.set_header("Content-Type", "text/event-stream; charset=UTF-8")
        self.set_header("Cache-Control", "no-cache")
        self.set_header("X-Accel-Buffering", "no")  # nginx: pass each event on at once
        quiet_since = time.monotonic()
        try:
            while True:
                ended = status not in figures.ACTIVE
                offset, events = _line_events(output, offset, ended)
                if ended:
                    events.append(f"event: end\ndata: {json.dumps({'status': status, 'error': error})}\n\n")
                if events:
                    quiet_since = time.monotonic()
                    self.write("".join(events))
                elif time.monotonic() - quiet_since >= KEEPALIVE_SECONDS:
                    quiet_since = time.monotonic()
                    self.write(": keep-alive\n\n")
                await self.flush()
                if ended:
                    break
                await asyncio.sleep(STREAM_POLL_SECONDS)
                status, output, error = await self.read(history.progress, execution_id, self.scope)
        except StreamClosedError:
            return  # the client went away
        except Exception as exc:  # the store failed or the server stops: end it, the client reconnects
            log.warning("Output stream of execution %s ended early: %s", execution_id, getattr(exc, "detail", exc))
        self.finish()


def _line_events(output: str, offset: int, ended: bool) -> tuple[int, list[str]]:
    """SSE events for the whole lines of `output` after `offset` (and a last partial line once
    the run has ended); returns the new offset and the events."""
    offset = min(offset, len(output))
    events = []
    while True:
        newline = output.find("\n", offset)
        if newline < 0:
            if not ended or offset >= len(output):
                return offset, events
            newline = len(output)
        line = output[offset:newline].replace("\r", "")
        offset = min(newline + 1, len(output))
        events.append(f"id: {offset}\ndata: {line}\n\n")


class AuditLogsHandler(ApiHandler):
    async def get(self) -> None:
        since, until = self.query_time("since"), self.query_time("until")
        query = self.query("job_id"), since, until, *self.paging()
        page = await self.blocking(self.context.audit.list, *query, self.scope)
        self.listing("Audit logs retrieved successfully", page)
