"""Sending one plain-text e-mail through the configured SMTP server.

Shared by EmailNotificationJob and the failure alerts (texium.core.events.alerts), so both read the
SMTP_* settings the same way and never send a login in the clear unless told to. The settings
come in as a mapping (the core reads no settings module): SMTP_HOST, SMTP_PORT (465 = implicit
TLS), SMTP_USERNAME, SMTP_PASSWORD, SMTP_STARTTLS, SMTP_FROM, SMTP_TIMEOUT,
SMTP_ALLOW_PLAINTEXT_LOGIN.
"""

from __future__ import annotations

import math
import smtplib
import ssl
from collections.abc import Mapping
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any

from texium.core.validation import email_address

_TRUE = ("true", "yes", "1", "on")
_FALSE = ("false", "no", "0", "off")


class MailError(Exception):
    """The message was not sent; the text is one line and never holds the password.

    `transient` is True when the server could not be reached or timed out (worth another try),
    False for a refusal or a configuration mistake.
    """

    def __init__(self, message: str, transient: bool = False):
        super().__init__(message)
        self.transient = transient


def send_message(
    config: Mapping[str, Any],
    recipients: list[str],
    subject: str,
    body: str,
    *,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> str:
    """Send `body` to every recipient in one message; returns what was sent, for an output.

    `headers` are extra header fields (X-Texium-...); `timeout` overrides SMTP_TIMEOUT.
    Raises MailError with a one-line reason.
    """
    host = _setting(config, "SMTP_HOST")
    if host is None:
        raise MailError("SMTP is not configured: set SMTP_HOST (and SMTP_PORT, SMTP_FROM) in the settings")
    port = _number(config, "SMTP_PORT", 25, integer=True)
    if port < 1:
        raise MailError(f"SMTP_PORT must be at least 1, got {port!r}")
    if port > 65535:
        raise MailError(f"SMTP_PORT must be at most 65535, got {port!r}")
    if timeout is None:
        timeout = _number(config, "SMTP_TIMEOUT", 30)
        if timeout <= 0:
            raise MailError(f"SMTP_TIMEOUT must be greater than 0, got {timeout!r}")
    username = _setting(config, "SMTP_USERNAME")
    password = _setting(config, "SMTP_PASSWORD", "")
    starttls = _boolean(config, "SMTP_STARTTLS")
    implicit_tls = port == 465
    if username and not (implicit_tls or starttls or _boolean(config, "SMTP_ALLOW_PLAINTEXT_LOGIN")):
        # Checked before connecting: the password must not cross the network in the clear.
        raise MailError(
            f"SMTP login refused: SMTP_USERNAME is set but the connection to {host}:{port} is not encrypted; "
            "set SMTP_STARTTLS=true (or use port 465), or SMTP_ALLOW_PLAINTEXT_LOGIN=true to send the "
            "password in the clear"
        )
    from_setting = _setting(config, "SMTP_FROM", "texium@localhost")
    if not isinstance(from_setting, str):
        raise MailError(f"SMTP_FROM must be a string, got {type(from_setting).__name__}")
    _one_line("SMTP_FROM", from_setting)
    sender = _address("SMTP_FROM", parseaddr(from_setting)[1] or from_setting, local_domain=True)
    if not recipients:
        raise MailError("no recipient")
    to = [_address("recipient", r) for r in recipients]
    _one_line("subject", subject)

    msg = EmailMessage()
    msg["From"] = from_setting
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False, usegmt=True)
    msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[1])
    for name, value in (headers or {}).items():
        msg[name] = " ".join(str(value).split())[:200]  # one line: no header injection
    msg.set_content(body)

    where = f"{host}:{port}"
    try:
        if implicit_tls:
            smtp = smtplib.SMTP_SSL(host, port, timeout=timeout, context=ssl.create_default_context())
        else:
            smtp = smtplib.SMTP(host, port, timeout=timeout)
        with smtp:
            smtp.ehlo_or_helo_if_needed()
            if starttls:
                smtp.starttls(context=ssl.create_default_context())
                smtp.ehlo()
            if username:
                smtp.login(str(username), str(password))
            refused = smtp.send_message(msg, from_addr=sender, to_addrs=to)
    except smtplib.SMTPAuthenticationError as exc:
        raise MailError(f"SMTP server {where} refused the login for {username!r}: {_reply(exc)}") from None
    except smtplib.SMTPRecipientsRefused as exc:
        reasons = "; ".join(f"{rcpt}: {_reply_tuple(r)}" for rcpt, r in exc.recipients.items())
        raise MailError(f"SMTP server {where} refused the recipient: {reasons}") from None
    except smtplib.SMTPSenderRefused as exc:
        raise MailError(f"SMTP server {where} refused the sender {sender!r}: {_reply(exc)}") from None
    except smtplib.SMTPNotSupportedError as exc:
        raise MailError(f"SMTP server {where}: {exc}") from None
    except smtplib.SMTPResponseException as exc:
        raise MailError(f"SMTP server {where} refused the message: {_reply(exc)}") from None
    except smtplib.SMTPServerDisconnected as exc:
        raise MailError(f"SMTP error with {where}: {exc}", transient=True) from None
    except smtplib.SMTPException as exc:
        raise MailError(f"SMTP error with {where}: {exc}") from None
    except TimeoutError:
        raise MailError(f"SMTP server {where} timed out after {timeout:g} s", transient=True) from None
    except ssl.SSLError as exc:
        raise MailError(f"TLS with SMTP server {where} failed: {exc.reason or exc}") from None
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise MailError(f"cannot reach SMTP server {where}: {reason}", transient=True) from None
    if refused:  # only when some of several recipients were refused
        raise MailError(f"SMTP server {where} refused: {', '.join(refused)}")
    return f"Email sent to {', '.join(to)} via {where}\nSubject: {subject}\nMessage-ID: {msg['Message-ID']}"


# --------------------------------------------------------------------------- settings


def _setting(config: Mapping[str, Any], key: str, default: Any = None) -> Any:
    """None and "" count as unset, as for every other setting."""
    value = config.get(key) if config else None
    return default if value is None or value == "" else value


def _number(config: Mapping[str, Any], key: str, default: float, integer: bool = False) -> Any:
    value = _setting(config, key, default)
    kind = "an integer" if integer else "a number"
    if isinstance(value, bool):
        raise MailError(f"{key} must be a number, got a boolean")
    if isinstance(value, str):
        try:
            value = int(value.strip()) if integer else float(value.strip())
        except ValueError:
            raise MailError(f"{key} must be {kind}, got {value!r}") from None
    if integer and isinstance(value, float) and value.is_integer():
        value = int(value)
    ok = isinstance(value, int) if integer else isinstance(value, (int, float)) and math.isfinite(value)
    if not ok:
        raise MailError(f"{key} must be {kind}, got {value!r}")
    return value


def _boolean(config: Mapping[str, Any], key: str) -> bool:
    value = _setting(config, key, False)
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
        return bool(value)
    raise MailError(f"{key} must be true or false, got {value!r}")


def _one_line(name: str, value: str) -> None:
    if "\r" in value or "\n" in value or "\x00" in value:
        raise MailError(f"{name} must not contain line breaks")


def _address(name: str, value: Any, local_domain: bool = False) -> str:
    """Checked by the same rule as a user's email (texium.core.validation)."""
    if not isinstance(value, str) or not value.strip():
        raise MailError(f"{name} is not a valid email address: {value!r}")
    value = value.strip()
    try:
        return email_address(value, local_domain=local_domain)
    except ValueError:
        raise MailError(f"{name} is not a valid email address: {value[:100]!r}") from None


def _reply(exc: smtplib.SMTPResponseException) -> str:
    return _reply_tuple((exc.smtp_code, exc.smtp_error))


def _reply_tuple(reply) -> str:
    code, text = reply
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()
