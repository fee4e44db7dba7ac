"""Nodes sharing one store: each keeps a heartbeat, and any live node buries the silent ones.

A node is one server process. Its document in `scheduler_nodes` carries `last_seen`, renewed
every `heartbeat_seconds`. A node whose heartbeat is older than `timeout_seconds`, or one on
this host whose process is gone, is declared dead by whichever live node sees it first (a
conditional write, so only one does), and its `scheduled` and `running` executions become
`abandoned` with the reason. A node that shuts down cleanly says so (`stopped`).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from texium.core.datastore.base import Datastore, new_id
from texium.core.figures import ACTIVE
from texium.core.timeutil import to_iso, utcnow

log = logging.getLogger("texium.nodes")


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class NodeIdentity:
    """Who this process is, as recorded on every execution it runs."""

    node_id: str = field(default_factory=new_id)
    hostname: str = field(default_factory=socket.gethostname)
    pid: int = field(default_factory=os.getpid)


class NodeRegistry:
    def __init__(
        self,
        datastore: Datastore,
        identity: NodeIdentity,
        version: str,
        heartbeat_seconds: float = 1.0,
        timeout_seconds: float = 30.0,
    ):
        self._ds = datastore
        self.identity = identity
        self._version = version
        self._interval = heartbeat_seconds
        self._timeout = timedelta(seconds=timeout_seconds)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peers_alive = 0  # other live nodes at the last sweep
        self.last_beat = None
        self.last_error = ""

    # -- life cycle --------------------------------------------------------------------
    def start(self) -> list[dict]:
        """Register this node, bury the dead, start the heartbeat; returns the other live nodes."""
        self._register(utcnow())
        self.sweep()
        others = [n for n in self.list() if n["state"] == "alive" and not n["is_self"]]
        self._thread = threading.Thread(target=self._loop, name="texium-heartbeat", daemon=True)
        self._thread.start()
        return others

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
        try:
            self._ds.nodes.update(self.identity.node_id, fields={"state": "stopped", "last_seen": utcnow()})
        except Exception as exc:
            log.warning("Could not record this node as stopped: %s", exc)

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.beat()
                self.sweep()
                self.last_error = ""
            except Exception as exc:  # the store is down: keep beating, never stop for good
                if not self.last_error:
                    log.warning("Node heartbeat failed: %s", getattr(exc, "detail", exc))
                self.last_error = str(getattr(exc, "detail", exc))

    # -- heartbeat and judgement -------------------------------------------------------
    def _register(self, now) -> None:
        me = self.identity
        self._ds.nodes.insert(
            {
                "_id": me.node_id,
                "hostname": me.hostname,
                "pid": me.pid,
                "version": self._version,
                "started_at": now,
                "last_seen": now,
                "state": "alive",
            }
        )
        self.last_beat = now

    def beat(self) -> None:
        now = utcnow()
        if self._ds.nodes.update(self.identity.node_id, fields={"last_seen": now, "state": "alive"}) is None:
            self._register(now)  # removed by hand or by a restore: come back
        self.last_beat = now

    def _is_dead(self, node: dict, now) -> str | None:
        """Why this node is dead, or None while it may still be alive."""
        if node["_id"] == self.identity.node_id:
            return None
        last_seen = node.get("last_seen")
        if last_seen is None or now - last_seen > self._timeout:
            return f"no heartbeat since {to_iso(last_seen)}"
        pid = node.get("pid")
        if node.get("hostname") == self.identity.hostname and isinstance(pid, int) and not pid_alive(pid):
            return f"its process {pid} on {node['hostname']} is gone"
        return None

    def sweep(self) -> int:
        """Declare silent nodes dead and abandon their runs; returns how many runs that abandoned."""
        now = utcnow()
        abandoned, alive = 0, 0
        for node in self._ds.nodes.find({"state": "alive"}):
            reason = self._is_dead(node, now)
            if reason is None:
                alive += node["_id"] != self.identity.node_id
                continue
            # Conditional: if two survivors sweep at once, only one declares the death.
            claimed = self._ds.nodes.update_many(
                {"_id": node["_id"], "state": "alive", "last_seen": node.get("last_seen")},
                {"state": "dead", "dead_at": now, "dead_reason": reason},
            )
            if claimed:
                abandoned += self._abandon_runs(node, reason)
        self.peers_alive = alive
        return abandoned

    def _abandon_runs(self, node: dict, reason: str) -> int:
        # Retries it had claimed but not started go back to the pool: any node's next pass runs them.
        self._ds.executions.update_many(
            {"node_id": node["_id"], "status": "scheduled", "retry_of": {"$ne": None}}, {"node_id": None}
        )
        count = self._ds.executions.update_many(
            {"node_id": node["_id"], "status": {"$in": list(ACTIVE)}},
            {
                "status": "abandoned",
                "completed_at": utcnow(),
                "error": f"The server running this execution ({node.get('hostname')}, pid {node.get('pid')}) "
                f"stopped before it finished: {reason}.",
            },
        )
        log.warning(
            "Node %s (%s, pid %s) is dead (%s); %d of its executions marked abandoned",
            node["_id"],
            node.get("hostname"),
            node.get("pid"),
            reason,
            count,
        )
        return count

    def list(self) -> list[dict]:
        now = utcnow()
        nodes = self._ds.nodes.find({}, sort=[("started_at", -1)], limit=1000)
        for node in nodes:
            node["is_self"] = node["_id"] == self.identity.node_id
            if node.get("state") == "alive" and self._is_dead(node, now):
                node["state"] = "silent"  # past its timeout, not yet buried by a sweep
        return nodes
