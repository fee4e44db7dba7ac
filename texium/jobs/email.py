"""EmailNotificationJob: send one message through the configured SMTP server."""

from __future__ import annotations

from texium.core.events.mail import MailError, send_message
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

        if self.context.cancelled.is_set():
            raise JobError("cancelled before sending")
        headers = {"X-Texium-Job": str(self.context.job_name), "X-Texium-Execution": str(self.context.execution_id)}
        try:
            sent = send_message(self.context.config, [recipient], subject, message, headers=headers)
        except MailError as exc:
            raise JobError(str(exc)) from None
        return f"{sent}\nSize: {len(message)} characters"
