"""What the built-in jobs leave behind for clients: system metric samples and reports."""

from __future__ import annotations

from texium.core.datastore.base import Datastore
from texium.core.errors import NotFound
from texium.core.records.listing import NEWEST_FIRST, Page, list_page
from texium.core.validation import require_id


class JobRecords:
    def __init__(self, datastore: Datastore):
        self._ds = datastore

    def metrics(self, limit: int, offset: int) -> Page:
        return list_page(self._ds.collection("system_metrics"), {}, limit, offset, sort=NEWEST_FIRST)

    def reports(self, limit: int, offset: int) -> Page:
        return list_page(self._ds.collection("reports"), {}, limit, offset, sort=NEWEST_FIRST)

    def report(self, report_id: str) -> dict:
        doc = self._ds.collection("reports").get(require_id(report_id, "report_id"))
        if doc is None:
            raise NotFound("Report not found")
        return doc
