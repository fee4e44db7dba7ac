"""`python -m texium.server`: read settings, open the datastore, start the scheduler, serve HTTP."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

import tornado.httpserver

from texium import __version__
from texium.config import ConfigError, load_settings
from texium.core.timeutil import to_iso
from texium.server.app import make_app
from texium.server.context import build_context

log = logging.getLogger("texium.server")


def parse_flags(argv: list[str] | None) -> tuple[dict, str | None]:
    parser = argparse.ArgumentParser(prog="texium-server", description="Texium job-scheduler server")
    parser.add_argument("--port", type=int, help="HTTP port (default 8000)")
    parser.add_argument("--address", help="address to listen on (default 127.0.0.1)")
    parser.add_argument("--settings", help="settings module (else TEXIUM_SETTINGS_MODULE)")
    parser.add_argument("--data-dir", help="directory of the embedded store, backups, reports and scripts")
    parser.add_argument("--mongo-uri", help="use MongoDB at this URI instead of the embedded store")
    parser.add_argument("--db-name", help="MongoDB database name (default texium_db)")
    parser.add_argument("--log-level", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--version", action="version", version=f"texium {__version__}")
    args = parser.parse_args(argv)
    flags = {
        "HTTP_PORT": args.port,
        "HTTP_ADDRESS": args.address,
        "DATA_DIR": args.data_dir,
        "MONGO_URI": args.mongo_uri,
        "DB_NAME": args.db_name,
        "LOG_LEVEL": args.log_level,
    }
    return flags, args.settings


async def serve(settings: dict) -> int:
    """Serve until SIGINT or SIGTERM; returns how many executions were cut short."""
    context = build_context(settings)
    app = make_app(context)
    # Bodies are streamed and capped by the handlers (413); this only bounds the connection.
    server = tornado.httpserver.HTTPServer(
        app, max_body_size=max(settings["MAX_BODY_BYTES"] * 4, 64 << 20), xheaders=True
    )
    try:
        server.listen(settings["HTTP_PORT"], settings["HTTP_ADDRESS"])
    except OSError as exc:
        context.datastore.close()
        raise ConfigError(
            f"Cannot listen on {settings['HTTP_ADDRESS']}:{settings['HTTP_PORT']}: {exc.strerror}"
        ) from None
    others = context.scheduler.start()
    log.info(
        "Texium %s listening on http://%s:%d/ with %s (node %s)",
        __version__,
        settings["HTTP_ADDRESS"],
        settings["HTTP_PORT"],
        context.datastore.describe(),
        context.scheduler.nodes.identity.node_id,
    )
    if others:
        log.info(
            "Sharing the store with %d other live node%s: %s",
            len(others),
            "s" if len(others) > 1 else "",
            ", ".join(
                f"{n['_id']} ({n.get('hostname')}, pid {n.get('pid')}, since {to_iso(n.get('started_at'))})"
                for n in others
            ),
        )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info(
        "Shutting down: no new firings; waiting up to %ss for running executions", settings["SHUTDOWN_GRACE_SECONDS"]
    )
    server.stop()
    unfinished = await loop.run_in_executor(None, context.close, settings["SHUTDOWN_GRACE_SECONDS"])
    await server.close_all_connections()
    log.info("Texium stopped")
    return unfinished


def main(argv: list[str] | None = None) -> int:
    flags, settings_module = parse_flags(argv)
    try:
        settings = load_settings(flags, settings_module=settings_module)
    except ConfigError as exc:
        print(f"texium: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings["LOG_LEVEL"], format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("apscheduler").setLevel(max(logging.WARNING, logging.getLogger().level))
    try:
        unfinished = asyncio.run(serve(settings))
    except (ConfigError, ValueError) as exc:
        print(f"texium: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # the datastore could not be opened, for instance
        print(f"texium: cannot start: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if unfinished:
        # Job threads still running past the grace period would keep the interpreter alive;
        # they are already recorded as abandoned, so leave without joining them.
        logging.shutdown()
        os._exit(0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
