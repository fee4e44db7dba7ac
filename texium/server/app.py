"""The Tornado application and its one route table."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import tornado.web

from texium.server.context import AppContext
from texium.server.handlers import (
    calendars,
    channels,
    dashboard,
    docs,
    executions,
    forecast,
    jobs,
    metrics,
    monitors,
    records,
    servers,
    session,
    triggers,
    users,
    utility,
)
from texium.server.handlers.base import NotFoundHandler
from texium.server.handlers.static import SafeStaticFileHandler

_PACKAGE = Path(__file__).resolve().parents[1]
# The repository's static/ is installed as texium/static; a checkout serves it in place.
STATIC_DIR = _PACKAGE / "static" if (_PACKAGE / "static").is_dir() else _PACKAGE.parent / "static"
access_log = logging.getLogger("texium.access")

ID = r"([^/]+)"  # validated by the core so a malformed id is a 400, not a 404

# (pattern, handler); every pattern also matches with a trailing slash.
ROUTES = [
    (r"/api/users", users.UsersHandler),
    (rf"/api/users/{ID}", users.UserHandler),
    (rf"/api/users/{ID}/api-keys", users.ApiKeysHandler),
    (rf"/api/users/{ID}/api-keys/{ID}", users.ApiKeyHandler),
    (r"/api/auth/session", session.SessionHandler),
    (r"/api/servers", servers.ServersHandler),
    (r"/api/servers/create", servers.ServerCreateHandler),
    (rf"/api/servers/user/{ID}", servers.UserServersHandler),
    (rf"/api/servers/{ID}", servers.ServerHandler),
    (r"/api/scheduler/jobs", jobs.JobsHandler),
    (rf"/api/scheduler/jobs/{ID}", jobs.JobHandler),
    (rf"/api/scheduler/jobs/{ID}/preview", jobs.JobPreviewHandler),
    (rf"/api/scheduler/jobs/{ID}/pause", jobs.JobPauseHandler),
    (rf"/api/scheduler/jobs/{ID}/resume", jobs.JobResumeHandler),
    (rf"/api/scheduler/jobs/{ID}/run", jobs.JobRunHandler),
    (rf"/api/scheduler/jobs/{ID}/backfill", jobs.JobBackfillHandler),
    (rf"/api/scheduler/jobs/{ID}/backfills/{ID}", jobs.BackfillHandler),
    (rf"/api/scheduler/jobs/{ID}/triggers", triggers.TriggersHandler),
    (rf"/api/scheduler/jobs/{ID}/triggers/{ID}", triggers.TriggerHandler),
    (rf"/api/scheduler/users/{ID}/jobs", jobs.UserJobsHandler),
    (r"/api/scheduler/chains", jobs.ChainsHandler),
    (r"/api/scheduler/pause-all", jobs.PauseAllHandler),
    (r"/api/scheduler/resume-all", jobs.ResumeAllHandler),
    (r"/api/scheduler/calendars", calendars.CalendarsHandler),
    (rf"/api/scheduler/calendars/{ID}", calendars.CalendarHandler),
    (rf"/api/scheduler/calendars/{ID}/ics", calendars.CalendarIcsHandler),
    (r"/api/scheduler/channels", channels.ChannelsHandler),
    (rf"/api/scheduler/channels/{ID}", channels.ChannelHandler),
    (rf"/api/scheduler/channels/{ID}/test", channels.ChannelTestHandler),
    (rf"/api/scheduler/channels/{ID}/deliveries", channels.ChannelDeliveriesHandler),
    (r"/api/scheduler/monitors", monitors.MonitorsHandler),
    (rf"/api/scheduler/monitors/{ID}", monitors.MonitorHandler),
    (rf"/api/scheduler/monitors/{ID}/rotate", monitors.MonitorRotateHandler),
    (r"/ping/([^/]+)", monitors.PingHandler),
    (r"/ping/([^/]+)/([^/]+)", monitors.PingHandler),
    (r"/trigger/([^/]+)", triggers.TriggerUseHandler),
    (r"/api/scheduler/executions", executions.ExecutionsHandler),
    (rf"/api/scheduler/executions/{ID}", executions.ExecutionHandler),
    (rf"/api/scheduler/executions/{ID}/cancel", executions.ExecutionCancelHandler),
    (rf"/api/scheduler/executions/{ID}/output/stream", executions.ExecutionOutputStreamHandler),
    (r"/api/scheduler/audit-logs", executions.AuditLogsHandler),
    (r"/api/scheduler/available-jobs", utility.AvailableJobsHandler),
    (r"/api/scheduler/stats", utility.StatsHandler),
    (r"/api/scheduler/health", utility.HealthHandler),
    (r"/api/scheduler/nodes", utility.NodesHandler),
    (r"/api/scheduler/cron/preview", utility.CronPreviewHandler),
    (r"/api/scheduler/metrics/system", records.SystemMetricsHandler),
    (r"/api/scheduler/reports", records.ReportsHandler),
    (rf"/api/scheduler/reports/{ID}", records.ReportHandler),
    (r"/api/scheduler/forecast", forecast.ForecastHandler),
    (r"/api/scheduler/job-summaries", dashboard.JobSummariesHandler),
    (r"/api/scheduler/activity", dashboard.ActivityHandler),
    (r"/ui/([0-9a-f]{1,64})/(.+)", dashboard.DashboardAssetHandler),  # the dashboard's files, versioned
    (r"/openapi\.json", docs.OpenApiHandler),
    (r"/docs", docs.DocsHandler),
    (r"/metrics", metrics.MetricsHandler),
    (r"", docs.HomeHandler),
]


def route_label(pattern: str) -> str:
    """A route as the metrics see it: /api/users/{id}/api-keys. Never the requested path, so
    ids never become labels and the number of series stays bounded."""
    label = re.sub(r"\([^()]*\)", "{param}", pattern.replace(ID, "{id}"))
    return re.sub(r"\\(.)", r"\1", label) or "/"


ROUTE_LABELS = {handler: route_label(pattern) for pattern, handler in ROUTES}
ROUTE_LABELS.update(
    {
        dashboard.DashboardAssetHandler: "/ui/{version}/{path}",
        NotFoundHandler: "(unmatched)",
        SafeStaticFileHandler: "/static/{path}",
    }
)


def _log_request(handler: tornado.web.RequestHandler) -> None:
    status, seconds = handler.get_status(), handler.request.request_time()
    metrics = handler.settings.get("texium_metrics")
    if metrics is not None:
        method = handler.request.method
        metrics.http_request(
            ROUTE_LABELS.get(type(handler), type(handler).__name__),
            method if method in handler.SUPPORTED_METHODS else "other",  # any word can be sent as a method
            status,
            seconds,
        )
    level = logging.INFO if status < 500 else logging.ERROR
    access_log.log(
        level,
        "%s %s %d %.1fms",
        handler.request.method,
        getattr(handler, "logged_path", None) or handler.request.path,  # a path holding a credential masks it
        status,
        1000.0 * seconds,
    )


def make_app(context: AppContext) -> tornado.web.Application:
    table = [(pattern + "/?", handler, {"context": context}) for pattern, handler in ROUTES]
    return tornado.web.Application(
        table,
        default_handler_class=NotFoundHandler,
        default_handler_args={"context": context},
        static_path=str(STATIC_DIR),
        static_handler_class=SafeStaticFileHandler,
        log_function=_log_request,
        compress_response=True,
        # The route-table test builds the application without a context.
        texium_cors=context.access.cors_origins if context else (),
        texium_access=context.access if context else None,  # the scheme browsers use (HSTS)
        texium_hsts_seconds=context.hsts_seconds if context else 0,
        texium_metrics=context.metrics if context else None,
    )
