"""GET /metrics: this node's figures in the Prometheus text format (texium/core/metrics.py).

Like every API route it needs a key when keys are required, and an admin's: the figures tell
job classes, routes and how busy the scheduler is. METRICS_PUBLIC opens it without a key, but
only on a server listening on loopback (the policy decides that once, at start-up).
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST

from texium.server.handlers.base import ApiHandler


class MetricsHandler(ApiHandler):
    admin_only = True

    def initialize(self, context) -> None:
        super().initialize(context)
        if context is not None and context.access.metrics_public:
            self.public, self.admin_only = True, False

    def compute_etag(self) -> None:
        return None  # figures change between scrapes; no 304

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.set_header("Cache-Control", "no-store")
        self.finish(self.context.metrics.exposition())
