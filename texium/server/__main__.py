"""`python -m texium.server`: read settings, open the datastore, start the scheduler, serve HTTP."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys

from texium import __version__
from texium.config import ConfigError, load_settings
from texium.core.scheduling.processes import set_subreaper
from texium.core.security.outbound import parse_networks
from texium.core.timeutil import to_iso
from texium.server.access import auth_required, is_loopback
from texium.server.app import make_app
from texium.server.connections import ConnectionLimits, GuardedHTTPServer, raise_file_limit
from texium.server.context import build_context
from texium.server.transport import tls_context

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
    parser.add_argument("--auth-mode", choices=("auto", "on", "off"), help="API keys: auto (default), on, off")
    parser.add_argument(
        "--insecure", action="store_true", help="allow AUTH_MODE=off on an address that is not loopback"
    )
    parser.add_argument("--version", action="version", version=f"texium {__version__}")
    args = parser.parse_args(argv)
    flags = {
        "HTTP_PORT": args.port,
        "HTTP_ADDRESS": args.address,
        "DATA_DIR": args.data_dir,
        "MONGO_URI": args.mongo_uri,
        "DB_NAME": args.db_name,
        "LOG_LEVEL": args.log_level,
        "AUTH_MODE": args.auth_mode,
        "INSECURE": args.insecure or None,
    }
    return flags, args.settings


def check_exposure(settings: dict) -> None:
    """Refuse to serve everyone without keys unless the operator says so (--insecure)."""
    address, mode = settings["HTTP_ADDRESS"], str(settings["AUTH_MODE"]).lower()
    if auth_required(mode, address) or is_loopback(address):
        return
    if not settings.get("INSECURE"):
        raise ConfigError(
            f"AUTH_MODE=off on {address} would let anyone who reaches the port run jobs; "
            "use AUTH_MODE=auto or on, or pass --insecure"
        )
    log.warning(
        "INSECURE: listening on %s with authentication off: anyone who reaches this port "
        "can read and change everything, and run scripts",
        address,
    )


def announce_admin_key(context, data_dir: str) -> None:
    """First start that requires keys with none for an admin: create one and keep it in a 0600
    file for the operator. Only the file's path is printed: standard output is the service's
    log under systemd or docker, readable by more people than the file."""
    if not context.access.required or context.keys.has_admin_key():
        return
    admin, key = context.keys.bootstrap_admin()
    path = os.path.abspath(os.path.join(data_dir, "admin-api-key"))
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")
    os.chmod(path, 0o600)
    print(f"Admin API key for {admin['name']} written to {path} (mode 0600; read it from there)", flush=True)
    log.warning("Created the first admin API key (user %s) in %s", admin["_id"], path)


class SafeFormatter(logging.Formatter):
    """Log lines whose user-given parts (a job's name, a URL) cannot forge another line:
    control characters in the message are escaped; tracebacks stay as they are."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        message = super().formatMessage(record)
        if any(c < " " or c == "\x7f" for c in message):
            message = "".join(c if c >= " " and c != "\x7f" else repr(c)[1:-1] for c in message)
        return message


async def serve(settings: dict) -> int:
    """Serve until SIGINT or SIGTERM; returns how many executions were cut short."""
    check_exposure(settings)
    tls = tls_context(settings["TLS_CERT_FILE"], settings["TLS_KEY_FILE"])  # a bad file stops start-up here
    # Once, for the server process only (build_context also runs inside the tests' process):
    # the scripts' detached descendants become our children, so they can be found and killed.
    if set_subreaper(True):
        log.debug("Child subreaper: orphaned script processes are re-parented to this server")
    context = build_context(settings)
    announce_admin_key(context, settings["DATA_DIR"])
    app = make_app(context)
    # Bodies are streamed and capped by the handlers (413); this only bounds the connection.
    # Proxy headers are read by the access policy, only from TRUSTED_PROXIES (not xheaders).
    # A client that dribbles its headers or body is dropped after the timeouts.
    limits = ConnectionLimits.for_file_limit(
        settings["MAX_CONNECTIONS"],
        settings["MAX_CONNECTIONS_PER_ADDRESS"],
        raise_file_limit(),
        unlimited=parse_networks(settings["TRUSTED_PROXIES"], "TRUSTED_PROXIES"),
    )
    server = GuardedHTTPServer(
        app,
        limits=limits,
        ssl_options=tls,
        max_body_size=max(settings["MAX_BODY_BYTES"] * 4, 64 << 20),
        xheaders=False,
        idle_connection_timeout=settings["HEADER_TIMEOUT_SECONDS"],
        body_timeout=settings["BODY_TIMEOUT_SECONDS"],
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
        "Texium %s listening on %s://%s:%d/ with %s (node %s); API keys %s",
        __version__,
        "https" if tls else "http",
        settings["HTTP_ADDRESS"],
        settings["HTTP_PORT"],
        context.datastore.describe(),
        context.scheduler.nodes.identity.node_id,
        "required"
        if context.access.required
        else "not required (listening on loopback only)"
        if is_loopback(settings["HTTP_ADDRESS"])
        else "NOT required (--insecure)",
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
    handler = logging.StreamHandler()
    handler.setFormatter(SafeFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=settings["LOG_LEVEL"], handlers=[handler])
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
