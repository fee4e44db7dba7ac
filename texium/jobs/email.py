"""EmailNotificationJob: send one message through the configured SMTP server."""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr

from texium.core.validation import email_address
from texium.jobs import _util
from texium.jobs.base import JobBase, JobError

MAX_MESSAGE = 1 << 20


def valid_address(name: str, value, *, local_domain: bool = False) -> str:
    """The address checked by the same rule as a user's email (texium.core.validation)."""
    value = _util.require_str(name, value).strip()
    try:
        return email_address(value, local_domain=local_domain)
    except ValueError:
        raise JobError(f"{name} is not a valid email address: {value[:100]!r}") from None


class EmailNotificationJob(JobBase):
    """Job to send email notifications"""

    @classmethod
    def meta_info(cls) -> dict:
        return {
            "description": "Job to send email notifications",
            "arguments": [
                {
                    "name": "recipient",
                    "type": "string",
                    "required": True,
                    "description": "pub_args[0]: the address to send to",
                },
                {
                    "name": "subject",
                    "type": "string",
                    "required": False,
                    "description": "pub_kwargs: subject line (default 'Texium notification: <job name>')",
                },
                {"name": "message", "type": "string", "required": True, "description": "pub_kwargs: plain-text body"},
            ],
            "example_arguments": {
                "pub_args": ["ops@example.com"],
                "pub_kwargs": {"subject": "Nightly run", "message": "The nightly run finished."},
            },
            "notes": (
                "Sends through the SMTP server of the settings SMTP_HOST, SMTP_PORT (465 = implicit TLS), "
                "SMTP_USERNAME / SMTP_PASSWORD (login when a username is set), SMTP_STARTTLS and SMTP_FROM. "
                "Fails when SMTP_HOST is not set or the server refuses the sender, recipient or login. "
                "A login is only sent over TLS (port 465 or SMTP_STARTTLS) unless "
                "SMTP_ALLOW_PLAINTEXT_LOGIN is true."
            ),
        }

    def run(self, *args, **kwargs):
        if not args:
            raise JobError("recipient is required as pub_args[0]")
        _util.check_arguments(args, kwargs, 1, "[recipient]", ("subject", "message"))
        recipient = valid_address("recipient", args[0])
        subject = kwargs.get("subject")
        if subject is None:
            subject = f"Texium notification: {self.context.job_name}"
        subject = _util.no_line_breaks("subject", _util.require_str("subject", subject, max_len=998))
        if "message" not in kwargs:
            raise JobError("message is required in pub_kwargs")
        message = _util.require_str("message", kwargs["message"], max_len=MAX_MESSAGE)

        config = self.context.config
        host = _util.setting(config, "SMTP_HOST")
        if host is None:
            raise JobError("SMTP is not configured: set SMTP_HOST (and SMTP_PORT, SMTP_FROM) in the settings")
        port = _util.number("SMTP_PORT", _util.setting(config, "SMTP_PORT", 25), minimum=1, maximum=65535, integer=True)
        timeout = _util.number(
            "SMTP_TIMEOUT", _util.setting(config, "SMTP_TIMEOUT", 30), minimum=0, exclusive_minimum=True
        )
        username = _util.setting(config, "SMTP_USERNAME")
        password = _util.setting(config, "SMTP_PASSWORD", "")
        starttls = _util.boolean("SMTP_STARTTLS", _util.setting(config, "SMTP_STARTTLS", False))
        allow_plaintext_login = _util.boolean(
            "SMTP_ALLOW_PLAINTEXT_LOGIN", _util.setting(config, "SMTP_ALLOW_PLAINTEXT_LOGIN", False)
        )
        implicit_tls = port == 465
        if username and not (implicit_tls or starttls or allow_plaintext_login):
            # Checked before connecting: the password must not cross the network in the clear.
            raise JobError(
                f"SMTP login refused: SMTP_USERNAME is set but the connection to {host}:{port} is not encrypted; "
                "set SMTP_STARTTLS=true (or use port 465), or SMTP_ALLOW_PLAINTEXT_LOGIN=true to send the "
                "password in the clear"
            )
        from_setting = _util.no_line_breaks(
            "SMTP_FROM", _util.require_str("SMTP_FROM", _util.setting(config, "SMTP_FROM", "texium@localhost"))
        )
        sender = valid_address("SMTP_FROM", parseaddr(from_setting)[1] or from_setting, local_domain=True)

        msg = EmailMessage()
        msg["From"] = from_setting
        msg["To"] = recipient
        msg["Subject"] = subject
        msg["Date"] = formatdate(localtime=False, usegmt=True)
        msg["Message-ID"] = make_msgid(domain=sender.rsplit("@", 1)[1])
        msg["X-Texium-Job"] = " ".join(str(self.context.job_name).split())[:200]
        msg["X-Texium-Execution"] = str(self.context.execution_id)
        msg.set_content(message)

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
                refused = smtp.send_message(msg, from_addr=sender, to_addrs=[recipient])
        except smtplib.SMTPAuthenticationError as exc:
            raise JobError(f"SMTP server {where} refused the login for {username!r}: {_reply(exc)}") from None
        except smtplib.SMTPRecipientsRefused as exc:
            reasons = "; ".join(f"{rcpt}: {_reply_tuple(r)}" for rcpt, r in exc.recipients.items())
            raise JobError(f"SMTP server {where} refused the recipient: {reasons}") from None
        except smtplib.SMTPSenderRefused as exc:
            raise JobError(f"SMTP server {where} refused the sender {sender!r}: {_reply(exc)}") from None
        except smtplib.SMTPNotSupportedError as exc:
            raise JobError(f"SMTP server {where}: {exc}") from None
        except smtplib.SMTPResponseException as exc:
            raise JobError(f"SMTP server {where} refused the message: {_reply(exc)}") from None
        except smtplib.SMTPException as exc:
            raise JobError(f"SMTP error with {where}: {exc}") from None
        except TimeoutError:
            raise JobError(f"SMTP server {where} timed out after {timeout:g} s") from None
        except ssl.SSLError as exc:
            raise JobError(f"TLS with SMTP server {where} failed: {exc.reason or exc}") from None
        except OSError as exc:
            raise JobError(f"cannot reach SMTP server {where}: {(exc.strerror or str(exc)).lower()}") from None
        if refused:  # only when some of several recipients were refused; kept for completeness
            raise JobError(f"SMTP server {where} refused: {', '.join(refused)}")
        return (
            f"Email sent to {recipient} via {where}\n"
            f"Subject: {subject}\n"
            f"Message-ID: {msg['Message-ID']}\n"
            f"Size: {len(message)} characters"
        )


def _reply(exc: smtplib.SMTPResponseException) -> str:
    return _reply_tuple((exc.smtp_code, exc.smtp_error))


def _reply_tuple(reply) -> str:
    code, text = reply
    if isinstance(text, bytes):
        text = text.decode("utf-8", "replace")
    return f"{code} {text}".strip()
