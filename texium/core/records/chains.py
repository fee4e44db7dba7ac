"""Which jobs start which: the edges of chains and fan-ins, checked on every job write.

A job's own document is the truth: its `on_success`, `on_failure` and `on_finish` name the
jobs its runs start, its `depends_on` the jobs it waits for. The `scheduler_links` collection
is an index over them for the questions a document cannot answer by itself (which jobs wait
for this one? which jobs name this one?): one document per edge, its unique `key`
"<upstream>><downstream>><kind>". It is written as a superset of the truth, never a subset: a job write inserts its new
edges before the job and deletes its old ones after, and every edge read is checked against
the document that owns it. A crash between the two writes leaves a stale edge, which readers
ignore (and clear), never a missing one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from texium.core.datastore.base import Datastore
from texium.core.errors import DuplicateKeyError, ValidationError
from texium.core.scheduling.occurrences import CHAIN_FIELDS
from texium.core.timeutil import utcnow

ON_FIELDS = CHAIN_FIELDS
FAN_IN = "depends_on"
KINDS = (*ON_FIELDS, FAN_IN)
MAX_DEPTH = 1000  # chained starts in a row: a cycle written by two racing edits stops here


def with_defaults(fan_in: Mapping[str, Any] | None) -> dict | None:
    """A `depends_on` as stored: its window and required outcome spelled out."""
    return {"within_seconds": 86400, "require": "success", **fan_in} if fan_in else None


def declared_edges(job: Mapping[str, Any]) -> set[tuple[str, str, str]]:
    """(upstream, downstream, kind) of every edge `job`'s document declares."""
    job_id = job["_id"]
    edges = {(job_id, target, kind) for kind in ON_FIELDS for target in job.get(kind) or ()}
    fan_in = job.get(FAN_IN) or {}
    edges |= {(upstream, job_id, FAN_IN) for upstream in fan_in.get("jobs") or ()}
    return edges


def _owner(upstream: str, downstream: str, kind: str) -> str:
    """The job whose document declares the edge."""
    return downstream if kind == FAN_IN else upstream


def _key(edge: tuple[str, str, str]) -> str:
    return ">".join(edge)


class ChainLinks:
    def __init__(self, datastore: Datastore):
        self._ds = datastore

    @property
    def _links(self):
        return self._ds.links

    # -- on job writes -------------------------------------------------------------------
    def check(self, job: Mapping[str, Any], admin_owner: Callable[[], bool]) -> None:
        """A 400 when `job` (as it will be stored) names a job that does not exist, one its
        owner may not see (`admin_owner()`: whether its owner is an admin), itself, or closes a
        cycle. A job that names none costs nothing: it cannot close a cycle."""
        if not declared_edges(job):
            return
        admin = admin_owner()
        job_id = job["_id"]
        for kind in KINDS:
            targets = job.get(kind) or ()
            if kind == FAN_IN:
                targets = (job.get(FAN_IN) or {}).get("jobs") or ()
            for target in targets:
                if target == job_id:
                    raise ValidationError(f"Invalid field {kind}: a job cannot start or wait for itself")
                other = self._ds.jobs.get(target)
                if other is None or not (admin or other.get("user_id") == job.get("user_id")):
                    raise ValidationError(f"Invalid field {kind}: job {target} not found")
        cycle = self.cycle_through(job)
        if cycle:
            names = " -> ".join(self._name(step, job) for step in cycle)
            raise ValidationError(f"Invalid field {cycle_field(job, cycle)}: a cycle {names}")

    def before_write(self, job: Mapping[str, Any]) -> None:
        """Index the edges `job` will declare, before it is written (see the module doc)."""
        for edge in declared_edges(job):
            upstream, downstream, kind = edge
            try:
                self._links.insert(
                    {
                        "key": _key(edge),
                        "upstream": upstream,
                        "downstream": downstream,
                        "kind": kind,
                        "created_at": utcnow(),
                    }
                )
            except DuplicateKeyError:
                pass
            if kind == FAN_IN:  # the upstream's runs look for the jobs waiting on them from now on
                self._ds.jobs.update_many({"_id": upstream, "feeds_fan_in": {"$ne": True}}, {"feeds_fan_in": True})

    def after_write(self, job: Mapping[str, Any] | None, job_id: str) -> None:
        """Drop the edges `job_id` owned and no longer declares (all of them once it is deleted)."""
        keep = {_key(edge) for edge in declared_edges(job)} if job is not None else set()
        for link in self._owned_by(job_id):
            if link["key"] not in keep:
                self._links.delete(link["_id"])

    def _owned_by(self, job_id: str) -> list[dict]:
        out = self._links.find({"upstream": job_id}, limit=10_000)
        into = self._links.find({"downstream": job_id, "kind": FAN_IN}, limit=10_000)
        return [link for link in [*out, *into] if _owner(link["upstream"], link["downstream"], link["kind"]) == job_id]

    # -- reading the graph ---------------------------------------------------------------
    def _verified(self, links: Iterable[dict], overrides: Mapping[str, Mapping] | None = None) -> list[dict]:
        """The links their owner's document still declares (stale ones are skipped)."""
        found, docs = [], dict(overrides or {})
        for link in links:
            edge = (link["upstream"], link["downstream"], link["kind"])
            owner = _owner(*edge)
            if owner not in docs:
                docs[owner] = self._ds.jobs.get(owner)
            if docs[owner] is not None and edge in declared_edges(docs[owner]):
                found.append(link)
        return found

    def naming(self, job_id: str) -> list[dict]:
        """The jobs whose documents name `job_id` (in any of the four fields), without itself."""
        links = self._verified(self._links.find({"downstream": job_id}, limit=10_000))
        links += self._verified(self._links.find({"upstream": job_id, "kind": FAN_IN}, limit=10_000))
        ids = sorted({_owner(link["upstream"], link["downstream"], link["kind"]) for link in links} - {job_id})
        return self._ds.jobs.find({"_id": {"$in": ids}}, limit=len(ids)) if ids else []

    def waiting_for(self, upstream: str) -> list[dict]:
        """The jobs whose `depends_on` lists `upstream` (their documents, as stored now)."""
        links = self._verified(self._links.find({"upstream": upstream, "kind": FAN_IN}, limit=10_000))
        ids = sorted({link["downstream"] for link in links})
        return self._ds.jobs.find({"_id": {"$in": ids}}, limit=len(ids)) if ids else []

    def successors(self, job_id: str, overrides: Mapping[str, Mapping]) -> set[str]:
        """The jobs a run of `job_id` may start: its own targets and the fan-ins waiting on it."""
        doc = overrides.get(job_id) or self._ds.jobs.get(job_id) or {}
        found = {target for kind in ON_FIELDS for target in doc.get(kind) or ()}
        links = self._links.find({"upstream": job_id, "kind": FAN_IN}, limit=10_000)
        found |= {link["downstream"] for link in self._verified(links, overrides)}
        for other_id, other in overrides.items():  # edges into the job being written, not indexed yet
            if job_id in ((other.get(FAN_IN) or {}).get("jobs") or ()):
                found.add(other_id)
        return found

    def cycle_through(self, job: Mapping[str, Any]) -> list[str] | None:
        """A path job -> ... -> job through the graph as it would be with `job` written, or None."""
        overrides = {job["_id"]: job}
        start = job["_id"]
        parents: dict[str, str] = {}
        stack, seen = [start], {start}
        while stack:
            node = stack.pop()
            for following in sorted(self.successors(node, overrides)):
                if following == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parents[path[-1]])
                    return [start, *reversed(path[:-1]), start] if len(path) > 1 else [start, start]
                if following not in seen:
                    seen.add(following)
                    parents[following] = node
                    stack.append(following)
        return None

    def _name(self, job_id: str, job: Mapping[str, Any]) -> str:
        doc = job if job_id == job["_id"] else self._ds.jobs.get(job_id) or {}
        return f"{doc.get('name') or job_id!r} ({job_id})"

    def graph(self, user_id: str | None) -> dict:
        """The jobs that take part in any chain or fan-in (a user's own), and their edges."""
        links = self._verified(self._links.find({}, limit=100_000))
        ids = sorted({link[end] for link in links for end in ("upstream", "downstream")})
        jobs = {job["_id"]: job for job in self._ds.jobs.find({"_id": {"$in": ids}}, limit=len(ids))} if ids else {}
        if user_id is not None:
            jobs = {job_id: job for job_id, job in jobs.items() if job.get("user_id") == user_id}
        edges = [
            {"from": link["upstream"], "to": link["downstream"], "kind": link["kind"]}
            for link in links
            if link["upstream"] in jobs and link["downstream"] in jobs
        ]
        nodes = []
        for job in jobs.values():
            last = self._ds.executions.find_one(
                {"job_id": job["_id"], "status": {"$nin": ["scheduled", "running"]}}, sort=[("created_at", -1)]
            )
            nodes.append(
                {
                    "_id": job["_id"],
                    "name": job.get("name"),
                    "is_paused": bool(job.get("is_paused")),
                    "next_run_time": job.get("next_run_time"),
                    "last_status": last["status"] if last else None,
                    "last_execution_id": last["_id"] if last else None,
                }
            )
        nodes.sort(key=lambda node: (str(node["name"]), node["_id"]))
        edges.sort(key=lambda edge: (edge["from"], edge["to"], edge["kind"]))
        return {"nodes": nodes, "edges": edges}


def cycle_field(job: Mapping[str, Any], cycle: list[str]) -> str:
    """The field of `job` that the cycle leaves it by (or enters it by, for depends_on)."""
    following = cycle[1]
    for kind in ON_FIELDS:
        if following in (job.get(kind) or ()):
            return kind
    return FAN_IN
