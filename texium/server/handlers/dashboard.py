"""The dashboard's assets and the two read endpoints that spare it one request per job or hour.

`GET /` (texium/server/handlers/docs.py) serves the page; its ES modules and vendored libraries
are served here under `/ui/<version>/...`, where <version> is a digest of the files: every URL
changes when any file does, so they are cached for a year, and a page always loads one
consistent set of modules. Every response carries the dashboard's security headers.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import tornado.web

from texium.core.caches import cached
from texium.core.timeutil import utcnow
from texium.core.views import dashboard
from texium.server.handlers.base import ApiHandler
from texium.server.handlers.static import SafeStaticFileHandler

# Scripts, styles, images and API calls from this origin only; no inline script or style
# attribute in markup, no plugins, no framing, no <base> tricks.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
}
# What the dashboard and /docs load, relative to the static directory.
ASSET_DIRS = ("app", "docs", "vendor/htm", "vendor/dagre")


def set_security_headers(handler: tornado.web.RequestHandler) -> None:
    for name, value in SECURITY_HEADERS.items():
        handler.set_header(name, value)


@cached
def asset_version(static_dir: str) -> str:
    """A digest of every dashboard file (names and contents), computed once per process."""
    digest = hashlib.sha256()
    root = Path(static_dir)
    for folder in ASSET_DIRS:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                digest.update(str(path.relative_to(root)).encode())
                digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


class DashboardAssetHandler(SafeStaticFileHandler):
    """GET /ui/<version>/<path>: a file of static/app, static/docs, static/vendor/htm or static/vendor/dagre."""

    def get(self, version: str, path: str, include_body: bool = True):
        self._versioned = version == asset_version(self.settings["static_path"])
        if not any(path.startswith(folder + "/") for folder in ASSET_DIRS):
            raise tornado.web.HTTPError(404)
        return super().get(path, include_body)

    def head(self, version: str, path: str):
        return self.get(version, path, include_body=False)

    def get_cache_time(self, path, modified, mime_type) -> int:
        return self.CACHE_MAX_AGE if getattr(self, "_versioned", False) else 0

    def set_extra_headers(self, path: str) -> None:
        set_security_headers(self)
        if not getattr(self, "_versioned", False):
            self.set_header("Cache-Control", "no-cache")  # an old page's URL: revalidate (ETag)


class JobSummariesHandler(ApiHandler):
    """GET /api/scheduler/job-summaries: every job's schedule text, latest runs, last success
    and last failure."""

    async def get(self) -> None:
        runs = self.query_int("runs", 20, 1, dashboard.MAX_RUNS)
        user_id = self.query("user_id") if self.scope is None else self.scope
        summaries = await self.blocking(dashboard.job_summaries, self.context.datastore, user_id, runs)
        self.success("Job summaries retrieved successfully", total=len(summaries), data=summaries)


class ActivityHandler(ApiHandler):
    """GET /api/scheduler/activity: execution records per hour or per day, by status."""

    admin_only = True  # counts over every user's executions

    async def get(self) -> None:
        bucket = self.query("bucket") or "hour"
        result = await self.blocking(
            dashboard.activity, self.context.datastore, bucket, self.query("timezone"), utcnow()
        )
        self.success("Activity retrieved successfully", **result)
