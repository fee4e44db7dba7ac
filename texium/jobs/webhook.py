"""WebhookJob: POST a JSON notification to an http(s) URL, with retries and an optional HMAC."""

from __future__ import annotations

import http.client
import json
import re
import time

from texium.core.job import RESULT_LIMIT
from texium.core.security.outbound import SIGNATURE_HEADER, HTTPAnswer, OutboundRefused, http_request, is_public, sign
from texium.core.timeutil import to_iso, utcnow
from texium.jobs import _util
from texium.jobs.base import JobBase, JobError

CONTROL_KEYS = ("headers", "secret", "retries", "timeout", "backoff", "total_timeout", "keep_response_json")
DEFAULT_RETRIES = 3
DEFAULT_TIMEOUT = 10.0
DEFAULT_BACKOFF = 1.0
MAX_BACKOFF = 60.0
# All attempts and waits of one call end by then: a host that accepts and never answers holds a
# worker for this long at most, not retries x timeout (21 x 600 s).
DEFAULT_TOTAL_TIMEOUT = 300.0
MAX_TOTAL_TIMEOUT = 3600.0
PRIVATE_REPLY = "(not shown: the reply came from a private address; such replies are shown on admins' jobs only)"
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_RESERVED_HEADERS = {"content-length", "host", "transfer-encoding", SIGNATURE_HEADER.lower()}


class WebhookJob(JobBase):
    """Job to send webhook notifications"""

    run_inputs_as_kwargs = False  # its **kwargs are its own arguments (run inputs: self.context)
    result_from_return = False  # its return value is text for the output

    secret_arguments = ("secret", "headers.*")  # stored encrypted, shown as "***"
    secret_destination = "args.0"  # "***" keeps them only while the URL's scheme, host and port stay

    @classmethod
    def meta_info(cls) -> dict:
        return {
            "description": "Job to send webhook notifications",
            "arguments": [
                {
                    "name": "url",
                    "type": "string",
                    "required": True,
                    "description": "pub_args[0]: the http:// or https:// URL to POST to",
                },
                {
                    "name": "<any other key>",
                    "type": "any",
                    "required": False,
                    "description": "pub_kwargs: custom data, sent as the payload's 'data' object",
                },
                {
                    "name": "headers",
                    "type": "object",
                    "required": False,
                    "description": "pub_kwargs: extra request headers {name: value}",
                },
                {
                    "name": "secret",
                    "type": "string",
                    "required": False,
                    "description": "pub_kwargs: sign the body; adds "
                    f"{SIGNATURE_HEADER}: sha256=<hex HMAC-SHA256 of the body>",
                },
                {
                    "name": "retries",
                    "type": "integer",
                    "required": False,
                    "description": "pub_kwargs: retries after a 5xx answer or a "
                    f"connection error (default {DEFAULT_RETRIES})",
                },
                {
                    "name": "timeout",
                    "type": "number",
                    "required": False,
                    "description": f"pub_kwargs: seconds per attempt (default {DEFAULT_TIMEOUT:g})",
                },
                {
                    "name": "total_timeout",
                    "type": "number",
                    "required": False,
                    "description": "pub_kwargs: seconds for the whole call, every attempt and wait included "
                    f"(default {DEFAULT_TOTAL_TIMEOUT:g}, at most {MAX_TOTAL_TIMEOUT:g})",
                },
                {
                    "name": "backoff",
                    "type": "number",
                    "required": False,
                    "description": "pub_kwargs: first wait between attempts in "
                    f"seconds, doubled each time (default {DEFAULT_BACKOFF:g})",
                },
                {
                    "name": "keep_response_json",
                    "type": "boolean",
                    "required": False,
                    "description": "pub_kwargs: publish the 2xx answer's JSON body as the run's `result` "
                    f"(at most {RESULT_LIMIT // 1024} KB; a chained job receives it). Default false",
                },
            ],
            "example_arguments": {
                "pub_args": ["https://hooks.example.com/texium"],
                "pub_kwargs": {"event": "nightly-done", "count": 3, "secret": "change-me", "retries": 3},
            },
            "notes": (
                'Body: {"data": <pub_kwargs without headers/secret/retries/timeout/backoff>, "job_id", '
                '"execution_id", "timestamp"}. A 2xx answer succeeds; 4xx fails at once; 5xx and connection '
                "errors are retried with exponential backoff, then fail. Redirects are not followed. "
                "Loopback, link-local (169.254.169.254), multicast, unspecified and reserved addresses are "
                "refused, and so are cloud metadata services and this machine's own addresses, checked on the "
                "resolved address (settings OUTBOUND_ALLOW, OUTBOUND_DENY_PRIVATE). The reply of a private "
                "address is shown on admins' jobs only."
            ),
        }

    def run(self, *args, **kwargs):
        if not args:
            raise JobError("url is required as pub_args[0]")
        _util.no_extra_args(args, 1, "[url]")
        url = _util.http_url("url", args[0])
        headers = kwargs.get("headers") or {}
        if not isinstance(headers, dict):
            raise JobError(f"headers must be an object of name: value, got {type(headers).__name__}")
        clean_headers = {}
        for name, value in headers.items():
            if not isinstance(name, str) or not _HEADER_NAME.match(name):
                raise JobError(f"headers: invalid header name {name!r}")
            if name.lower() in _RESERVED_HEADERS:
                raise JobError(f"headers: {name} is set by the job and cannot be overridden")
            if isinstance(value, bool) or not isinstance(value, (str, int, float)):
                raise JobError(f"headers: value of {name} must be a string")
            clean_headers[name] = _util.no_line_breaks(f"headers[{name}]", str(value))
        secret = kwargs.get("secret")
        if secret is not None:
            secret = _util.require_str("secret", secret)
        retries = _util.number("retries", kwargs.get("retries", DEFAULT_RETRIES), minimum=0, maximum=20, integer=True)
        timeout = _util.number(
            "timeout", kwargs.get("timeout", DEFAULT_TIMEOUT), minimum=0, exclusive_minimum=True, maximum=600
        )
        backoff = _util.number("backoff", kwargs.get("backoff", DEFAULT_BACKOFF), minimum=0, maximum=MAX_BACKOFF)
        total = _util.number(
            "total_timeout",
            kwargs.get("total_timeout", DEFAULT_TOTAL_TIMEOUT),
            minimum=0,
            exclusive_minimum=True,
            maximum=MAX_TOTAL_TIMEOUT,
        )

        keep_json = _util.boolean("keep_response_json", kwargs.get("keep_response_json", False))

        data = {k: v for k, v in kwargs.items() if k not in CONTROL_KEYS}
        payload = {
            "data": data,
            "job_id": self.context.job_id,
            "execution_id": self.context.execution_id,
            "timestamp": to_iso(utcnow()),
        }
        try:
            body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise JobError(f"pub_kwargs cannot be sent as JSON: {exc}") from None

        request_headers = {"User-Agent": "Texium-Webhook/1", "Content-Type": "application/json"}
        request_headers.update(clean_headers)
        request_headers["X-Texium-Execution"] = str(self.context.execution_id)
        if secret is not None:
            request_headers[SIGNATURE_HEADER] = sign(secret, body)

        shown = _util.redact_url(url)
        # A redirect would turn the POST into a GET without the payload (and could point anywhere):
        # http_request never follows one, the 3xx is reported below.
        policy = _util.outbound_policy(self.context.config)
        attempts = retries + 1
        deadline = time.monotonic() + total
        log: list[str] = []
        for attempt in range(1, attempts + 1):
            if self.context.cancelled.is_set():  # the run was cancelled or passed its time limit
                done = (": " + "; ".join(log)) if log else ""
                raise JobError(f"POST {shown} cancelled before attempt {attempt}{done}")
            started = time.monotonic()
            allowed = round(max(0.001, min(timeout, deadline - started)), 3)
            status, reason, excerpt, error = None, "", "", None
            try:
                answer = http_request(
                    policy,
                    "POST",
                    url,
                    body=body,
                    headers=request_headers,
                    timeout=allowed,
                    read_limit=RESULT_LIMIT + 1 if keep_json else 4096,
                )
                status, reason, excerpt = answer.status, answer.reason, self._reply(answer)
            except OutboundRefused as exc:
                raise JobError(f"POST {shown} {exc}") from None
            except TimeoutError:
                error = f"timed out after {allowed:g} s"
            except http.client.HTTPException as exc:
                error = f"bad HTTP answer: {type(exc).__name__} {exc}".strip()
            except OSError as exc:
                error = str(getattr(exc, "strerror", None) or exc)
            except ValueError as exc:  # e.g. characters http.client refuses in the URL
                raise JobError(f"POST {shown} cannot be sent: {exc}") from None
            elapsed = round((time.monotonic() - started) * 1000)

            if status is not None:
                log.append(f"attempt {attempt}: HTTP {status} {reason} ({elapsed} ms)")
                if 200 <= status < 300:
                    lines = [f"POST {shown} -> HTTP {status} {reason} after {attempt} attempt(s)"]
                    if attempt > 1:
                        lines += log
                    if excerpt:
                        lines.append(f"Response: {excerpt}")
                    if keep_json:
                        lines += self._keep_json(answer, excerpt)
                    return "\n".join(lines)
                if 300 <= status < 400:
                    raise JobError(
                        f"POST {shown} was redirected (HTTP {status}); redirects are not followed, use the final URL"
                    )
                if status < 500:
                    detail = f": {excerpt}" if excerpt else ""
                    raise JobError(
                        f"POST {shown} failed with HTTP {status} {reason} on attempt {attempt}"
                        f" (client errors are not retried){detail}"
                    )
            else:
                log.append(f"attempt {attempt}: {error} ({elapsed} ms)")
            if attempt < attempts:
                delay = min(backoff * (2 ** (attempt - 1)), MAX_BACKOFF)
                if time.monotonic() + delay >= deadline:
                    raise JobError(
                        f"POST {shown} gave up after {attempt} attempt(s): total_timeout {total:g} s reached; "
                        + "; ".join(log)
                    )
                if self.context.cancelled.wait(delay):  # a sleep that ends when the run must stop
                    raise JobError(f"POST {shown} cancelled before attempt {attempt + 1}: " + "; ".join(log))
        raise JobError(f"POST {shown} failed after {attempts} attempt(s): " + "; ".join(log))

    def _reply(self, answer: HTTPAnswer) -> str:
        """The start of the reply for the output. A private address's reply is shown on admins'
        jobs only: it may be an internal service's page that the job's owner could not see."""
        if not answer.body:
            return ""
        if answer.peer is None or is_public(answer.peer) or self.context.owner_is_admin():
            return _excerpt(answer.body)
        return PRIVATE_REPLY

    def _keep_json(self, answer: HTTPAnswer, excerpt: str) -> list[str]:
        """Publish the answer's JSON as the run's result; the lines saying why not, if not."""
        if excerpt == PRIVATE_REPLY:
            return ["No result: the reply came from a private address (kept on admins' jobs only)"]
        if len(answer.body) > RESULT_LIMIT:
            return [f"No result: the reply is over {RESULT_LIMIT} bytes"]
        try:
            value = json.loads(answer.body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return ["No result: the reply is not JSON"]
        self.context.publish(value)
        return []


def _excerpt(raw: bytes, limit: int = 300) -> str:
    text = raw.decode("utf-8", "replace").strip().replace("\r", " ").replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 1] + "…"
