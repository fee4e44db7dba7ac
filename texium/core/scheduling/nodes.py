"""Nodes sharing one store: heartbeats (the lease of everything a node holds) and the sweep.

A node is one server process with a document in `scheduler_nodes`. Its heartbeat renews
`last_seen` every `heartbeat_seconds` with a write conditional on `state: alive`, so one write
renews the lease of every record the node holds. A node silent for `timeout_seconds` (or, on
the same host and pid namespace, whose process is gone) is declared dead by whichever live
node sees it first (a compare-and-set on its `last_seen`).

The sweep then makes the records of the last claims a dead or stopped node wrote on jobs, in
case it died between a claim and its records (claims.py), and reclaims what it still holds: records not started are
handed back (any pass takes them), running ones are `abandoned`, slots are freed; each of those
writes adds one to the records' generation, so the old holder's late writes are refused. The
reclaim is driven by the records (which nodes still hold active records), not by the moment a
death was declared, so a store error half-way is finished by the next sweep of any node.

A node whose heartbeat finds itself declared dead (it was stopped for longer than the timeout)
hands back what it queued, and rejoins under a new id; runs it had started go on, and their
ends are written only if nobody reclaimed them meanwhile.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable
from datetime import timedelta

from texium.core.datastore.base import Datastore, new_id
from texium.core.figures import ACTIVE
from texium.core.scheduling.claims import Claims
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


def _host_key() -> str:
    """This host and pid namespace: two containers that share a hostname have different keys,
    so neither judges the other's pids (which mean nothing outside their namespace)."""
    parts = [socket.gethostname()]
    for path in ("/proc/sys/kernel/random/boot_id",):
        try:
            with open(path) as handle:
                parts.append(handle.read().strip())
        except OSError:
            pass
    try:
        parts.append(str(os.stat("/proc/self/ns/pid").st_ino))
    except OSError:
        pass
    return "/".join(parts)


class NodeIdentity:
    """Who this process is, as recorded on every record it holds. The id changes only when
    the node was declared dead and rejoins."""

    def __init__(self, node_id: str | None = None, hostname: str | None = None, pid: int | None = None):
        self.node_id = node_id or new_id()
        self.hostname = hostname or socket.gethostname()
        self.pid = pid if pid is not None else os.getpid()
        self.host_key = _host_key()

    def rejoin(self) -> str:
        self.node_id = new_id()
        return self.node_id


class NodeRegistry:
    def __init__(
        self,
        datastore: Datastore,
        identity: NodeIdentity,
        version: str,
        heartbeat_seconds: float = 1.0,
        timeout_seconds: float = 30.0,
        on_buried: Callable[[], None] | None = None,
    ):
        self._ds = datastore
        self.identity = identity
        self._claims = Claims(datastore, identity)
        self._version = version
        self._interval = heartbeat_seconds
        self._timeout = timedelta(seconds=timeout_seconds)
        self.on_buried = on_buried
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.peers_alive = 0  # other live nodes at the last sweep
        self.last_beat = None
        self.last_error = ""
        self.rejoined = 0

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
            self._ds.nodes.update_many(
                {"_id": self.identity.node_id, "state": "alive"}, {"state": "stopped", "last_seen": utcnow()}
            )
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
                "host_key": me.host_key,
                "version": self._version,
                "started_at": now,
                "last_seen": now,
                "state": "alive",
            }
        )
        self.last_beat = now

    def beat(self) -> None:
        now = utcnow()
        if not self._ds.nodes.update_many({"_id": self.identity.node_id, "state": "alive"}, {"last_seen": now}):
            self._buried(now)
            return
        self.last_beat = now

    def _buried(self, now) -> None:
        """Declared dead (or removed by hand): what it held is being reclaimed; start anew."""
        old = self.identity.node_id
        if self.on_buried is not None:
            self.on_buried()
        self.identity.rejoin()
        self.rejoined += 1
        self._register(now)
        log.warning(
            "This node (%s) was declared dead by another node (it did not beat for over %g s); "
            "handed back what it had queued and rejoined as %s",
            old,
            self._timeout.total_seconds(),
            self.identity.node_id,
        )

    def _is_dead(self, node: dict, now) -> str | None:
        """Why this node is dead, or None while it may still be alive."""
        if node["_id"] == self.identity.node_id:
            return None
        last_seen = node.get("last_seen")
        if not hasattr(last_seen, "tzinfo") or now - last_seen > self._timeout:
            return f"no heartbeat since {to_iso(last_seen) if hasattr(last_seen, 'tzinfo') else last_seen}"
        pid = node.get("pid")
        if node.get("host_key") == self.identity.host_key and isinstance(pid, int) and not pid_alive(pid):
            return f"its process {pid} on {node.get('hostname')} is gone"
        return None

    def sweep(self) -> int:
        """Declare silent nodes dead, then reclaim what gone nodes hold; returns runs abandoned."""
        now = utcnow()
        alive = 0
        for node in self._ds.nodes.find({"state": "alive"}):
            reason = self._is_dead(node, now)
            if reason is None:
                alive += node["_id"] != self.identity.node_id
                continue
            # Conditional: if two survivors sweep at once, only one declares the death.
            if self._ds.nodes.update_many(
                {"_id": node["_id"], "state": "alive", "last_seen": node.get("last_seen")},
                {"state": "dead", "dead_at": now, "dead_reason": reason},
            ):
                log.warning(
                    "Node %s (%s, pid %s) is dead: %s", node["_id"], node.get("hostname"), node.get("pid"), reason
                )
        self.peers_alive = alive
        self._complete_claims()
        abandoned = self._reclaim()
        self._claims.free_stale_slots()
        return abandoned

    def _complete_claims(self) -> None:
        """Once per gone node: the claims it advanced jobs for but may not have made records of."""
        for node in self._ds.nodes.find({"state": {"$in": ["dead", "stopped"]}, "claims_completed_at": None}):
            made = self._claims.complete_claims_of(node["_id"])
            self._ds.nodes.update_many(
                {"_id": node["_id"], "claims_completed_at": None}, {"claims_completed_at": utcnow()}
            )
            if made:
                log.warning("Made %d records node %s had claimed but not written before it stopped", made, node["_id"])

    def _reclaim(self) -> int:
        holders = set(self._ds.executions.distinct("node_id", {"status": {"$in": list(ACTIVE)}}))
        holders |= set(self._ds.slots.distinct("node_id", {}))
        holders.discard(None)
        holders.discard(self.identity.node_id)
        if not holders:
            return 0
        known = {node["_id"]: node for node in self._ds.nodes.find({"_id": {"$in": sorted(holders)}})}
        abandoned = 0
        for node_id in sorted(holders):
            node = known.get(node_id, {"_id": node_id})
            state = node.get("state")
            if state == "alive":
                continue  # silent perhaps, but not declared dead yet
            reason = {"dead": node.get("dead_reason") or "it was declared dead", "stopped": "it shut down"}.get(
                state, "its node record is gone"
            )
            released, lost = self._claims.reclaim(node, reason)
            abandoned += lost
            if released or lost:
                log.warning(
                    "Reclaimed what node %s (%s, pid %s) held: %d runs handed back, %d abandoned (%s)",
                    node_id,
                    node.get("hostname"),
                    node.get("pid"),
                    released,
                    lost,
                    reason,
                )
        return abandoned

    def list(self) -> list[dict]:
        now = utcnow()
        nodes = self._ds.nodes.find({}, sort=[("started_at", -1)], limit=1000)
        for node in nodes:
            node["is_self"] = node["_id"] == self.identity.node_id
            node.pop("host_key", None)
            if node.get("state") == "alive" and self._is_dead(node, now):
                node["state"] = "silent"  # past its timeout, not yet buried by a sweep
        return nodes
