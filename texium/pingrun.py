"""`texium ping-run TOKEN_OR_URL -- command args...`: run a command under a heartbeat monitor.

It pings `/start`, runs the command (its output passes through to this one's, stdout and stderr
merged), then pings `/<exit code>` with the last 10 KB of that output as the body, and exits with
the command's own code, so a crontab line changes by one word (what runitor does for
healthchecks). A ping that fails (the server down, a wrong token) is a warning on stderr and
never changes the exit code: the command matters more than its monitoring.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request

OUTPUT_TAIL = 10 * 1024  # bytes of output sent with the last ping
PING_TIMEOUT = 10.0  # seconds per ping
CANNOT_RUN = 127  # the shell's code for a command that could not be started


def ping_base(token_or_url: str, server_url: str) -> str:
    """The monitor's ping URL: given whole, or the server's URL + /ping/<token>."""
    if token_or_url.startswith(("http://", "https://")):
        return token_or_url.rstrip("/")
    return f"{server_url.rstrip('/')}/ping/{token_or_url}"


def _ping(url: str, body: bytes = b"") -> None:
    request = urllib.request.Request(url, data=body, method="POST", headers={"User-Agent": "texium-ping-run/1"})
    try:
        with urllib.request.urlopen(request, timeout=PING_TIMEOUT) as answer:
            answer.read(1024)
    except urllib.error.HTTPError as exc:
        _warn(f"ping {_shown(url)} answered HTTP {exc.code}")
    except (OSError, ValueError) as exc:
        _warn(f"ping {_shown(url)} failed: {getattr(exc, 'reason', exc)}")


def _shown(url: str) -> str:
    """The ping URL without its token (the token is the credential)."""
    head, _, tail = url.partition("/ping/")
    action = tail.partition("/")[2]
    return f"{head}/ping/***" + (f"/{action}" if action else "")


def _warn(text: str) -> None:
    print(f"texium ping-run: warning: {text}", file=sys.stderr, flush=True)


def run(token_or_url: str, command: list[str], server_url: str) -> int:
    """Ping, run, ping; the command's exit code (128 + signal when a signal ended it)."""
    base = ping_base(token_or_url, server_url)
    _ping(f"{base}/start")
    tail = bytearray()
    try:
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    except OSError as exc:
        message = f"texium ping-run: cannot run {command[0]!r}: {exc.strerror or exc}\n"
        sys.stderr.write(message)
        _ping(f"{base}/{CANNOT_RUN}", message.encode())
        return CANNOT_RUN
    out = getattr(sys.stdout, "buffer", None)
    while True:
        chunk = os.read(process.stdout.fileno(), 65536)
        if not chunk:
            break
        if out is not None:
            out.write(chunk)
            out.flush()
        tail += chunk
        del tail[:-OUTPUT_TAIL]
    code = process.wait()
    if code < 0:
        code = 128 - code
    _ping(f"{base}/{code}", bytes(tail))
    return code
