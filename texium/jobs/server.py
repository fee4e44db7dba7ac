"""ServerHealthCheckJob: is a registered server reachable, and does its web instance answer?"""

from __future__ import annotations

import http.client
import socket
import time
from urllib.parse import urlsplit

from texium.core.datastore.base import is_valid_id
from texium.core.security.outbound import OutboundPolicy, OutboundRefused, http_request
from texium.core.timeutil import to_iso, utcnow
from texium.jobs import _util
from texium.jobs.base import JobBase, JobError

DEFAULT_TIMEOUT = 5.0


class ServerHealthCheckJob(JobBase):
    """Job to check server health status"""

    run_inputs_as_kwargs = False  # its **kwargs are its own arguments (run inputs: self.context)
    result_from_return = False  # its return value is text for the output

    @classmethod
    def meta_info(cls) -> dict:
        return {
            "description": "Job to check server health status",
            "arguments": [
                {
                    "name": "server_id",
                    "type": "string",
                    "required": True,
                    "description": "pub_args[0]: id of a registered server (servers collection)",
                },
                {
                    "name": "timeout",
                    "type": "number",
                    "required": False,
                    "description": "pub_kwargs: seconds to wait for the TCP connection "
                    f"and for the HTTP answer (default {DEFAULT_TIMEOUT:g})",
                },
            ],
            "example_arguments": {"pub_args": ["<server_id>"], "pub_kwargs": {"timeout": 5}},
            "notes": (
                "Opens a TCP connection to the server's hostname:port and, when the server has an "
                "instance_url, sends an HTTP(S) GET to it (redirects are not followed). The server is "
                "'running' when the port accepts connections and the instance URL (if any) answers "
                "with a status below 500; otherwise 'stopped'. Updates the server's status, "
                "last_checked_at and last_check {reachable, latency_ms, http_status, error, checked_at}. "
                "An unreachable server is a completed check with status 'stopped'. The job's owner must own "
                "the server or be an admin: another user's server is refused as an unknown id is, when the "
                "job is created or changed (400) and when it runs (failed). Loopback, link-local "
                "(169.254.169.254), multicast, unspecified and reserved addresses are refused (checked on the "
                "resolved address; settings OUTBOUND_ALLOW, OUTBOUND_DENY_PRIVATE): such a target fails the "
                "execution and the server is left unchanged."
            ),
        }

    def run(self, *args, **kwargs):
        if not args:
            raise JobError("server_id is required as pub_args[0]")
        _util.check_arguments(args, kwargs, 1, "[server_id]", ("timeout",))
        server_id = _util.require_str("server_id", args[0]).strip()
        timeout = _util.number(
            "timeout", kwargs.get("timeout", DEFAULT_TIMEOUT), minimum=0, exclusive_minimum=True, maximum=300
        )

        server = self._server(server_id)
        servers = self.context.datastore.servers
        name = server.get("name") or server_id

        host, port, url = self._target(server, self.context.hooks.get("server_instance_url"))
        policy = _util.outbound_policy(self.context.config)
        error = None
        reachable = False
        latency_ms = None
        http_status = None
        lines = []

        if host is None:
            error = "server has no hostname or instance_url to check"
        else:
            reachable, latency_ms, error = self._tcp_check(policy, host, port, timeout)
            where = f"{host}:{port}"
            if reachable:
                lines.append(f"TCP {where}: open ({latency_ms} ms)")
            else:
                lines.append(f"TCP {where}: unreachable ({error})")

        if reachable and url:
            shown = _util.redact_url(url)
            if self.context.cancelled.is_set():  # the HTTP check could take `timeout` more seconds
                raise JobError(
                    f"check of {name!r} stopped before HTTP GET {shown}: the run was cancelled or passed its "
                    "time limit; the server is left unchanged"
                )
            http_status, http_ms, http_error = self._http_check(policy, url, shown, timeout)
            if http_status is not None:
                lines.append(f"HTTP GET {shown}: {http_status} ({http_ms} ms)")
                if http_status >= 500:
                    error = f"instance URL answered HTTP {http_status}"
            else:
                lines.append(f"HTTP GET {shown}: no answer ({http_error})")
                error = f"instance URL: {http_error}"

        status = "running" if reachable and error is None else "stopped"
        now = utcnow()
        last_check = {
            "reachable": reachable,
            "latency_ms": latency_ms,
            "http_status": http_status,
            "error": error,
            "checked_at": to_iso(now),
        }
        if (
            servers.update(server_id, fields={"status": status, "last_checked_at": now, "last_check": last_check})
            is None
        ):
            raise JobError(f"server {server_id!r} was deleted during the check")
        previous = server.get("status") or "unknown"
        change = f" (was {previous})" if previous != status else ""
        head = f"Server {name!r} is {status}{change}"
        if error and status == "stopped":
            head += f": {error}"
        return "\n".join([head, *lines])

    def check_owner(self, *args, **kwargs) -> None:
        if args and isinstance(args[0], str):
            self._server(args[0].strip())

    # ------------------------------------------------------------------ helpers

    def _server(self, server_id: str) -> dict:
        """The server, if the job's owner may check it. Another user's server gets the answer an
        unknown id gets: ids are guessable, and a different one would confirm a guess."""
        server = self.context.datastore.servers.get(server_id) if is_valid_id(server_id) else None
        if not self.context.owner_may_use(server):
            raise JobError(f"server_id: no server {server_id[:40]!r} that the job's owner may check")
        return server

    @staticmethod
    def _target(server: dict, reveal=None) -> tuple[str | None, int | None, str | None]:
        """(host, port, instance_url) to check; host/port fall back to the URL's. The stored URL
        shows its password as ***: `reveal` (the server's hook) gives the real one."""
        url = (reveal(server) if reveal is not None else server.get("instance_url")) or None
        if url is not None:
            try:
                url = _util.http_url("instance_url", url)
            except JobError as exc:
                raise JobError(f"server {server.get('_id')}: {exc}") from None
        host = (server.get("hostname") or "").strip() or None
        port = server.get("port")
        parts = urlsplit(url) if url else None
        if host is None and parts is not None:
            host = parts.hostname
        if port in (None, ""):
            if parts is not None and (host == parts.hostname):
                port = parts.port or (443 if parts.scheme.lower() == "https" else 80)
            elif host is not None:
                raise JobError(f"server {server.get('_id')} has no port")
        if host is not None:
            try:
                port = _util.number("port", port, minimum=1, maximum=65535, integer=True)
            except JobError as exc:
                raise JobError(f"server {server.get('_id')}: {exc}") from None
        return host, port, url

    @staticmethod
    def _tcp_check(
        policy: OutboundPolicy, host: str, port: int, timeout: float
    ) -> tuple[bool, float | None, str | None]:
        """Connect to an address of host:port the outbound policy allows; a refused one fails the job."""
        started = time.monotonic()
        try:
            sock, _ = policy.connect(host, port, timeout)
            sock.close()
        except OutboundRefused as exc:
            raise JobError(f"TCP {host}:{port} {exc}") from None
        except TimeoutError:
            return False, None, f"connection timed out after {timeout:g} s"
        except socket.gaierror as exc:
            return False, None, f"cannot resolve {host!r}: {exc.strerror or exc}"
        except OSError as exc:
            return False, None, (exc.strerror or str(exc)).lower()
        return True, round((time.monotonic() - started) * 1000, 1), None

    @staticmethod
    def _http_check(
        policy: OutboundPolicy, url: str, shown: str, timeout: float
    ) -> tuple[int | None, float | None, str | None]:
        """GET the instance URL (redirects not followed: the status it answers itself)."""
        started = time.monotonic()
        try:
            answer = http_request(policy, "GET", url, headers={"User-Agent": "Texium-HealthCheck/1"}, timeout=timeout)
        except OutboundRefused as exc:
            raise JobError(f"HTTP GET {shown} {exc}") from None
        except TimeoutError:
            return None, None, f"timed out after {timeout:g} s"
        except socket.gaierror as exc:
            return None, None, f"cannot resolve: {exc.strerror or exc}"
        except http.client.HTTPException as exc:
            return None, None, f"bad HTTP answer: {type(exc).__name__} {exc}".strip()
        except OSError as exc:
            return None, None, str(getattr(exc, "strerror", None) or exc).lower()
        except ValueError as exc:
            return None, None, str(exc)
        return answer.status, round((time.monotonic() - started) * 1000, 1), None
