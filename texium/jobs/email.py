"""EmailNotificationJob: send one message through the configured SMTP server.

The message goes out as SMTP_FROM, with the server's login: a job whose owner is a `user` (not an
admin) may send only to EMAIL_ALLOWED_DOMAINS (none when empty) and at most EMAIL_MAX_PER_HOUR
messages an hour, counted over all of that owner's e-mail jobs in the store (so on every node).
"""

from __future__ import annotations

from datetime import timedelta

from texium.core.events.mail import MailError, send_message
from texium.core.timeutil import utcnow
from texium.core.validation import email_address
from texium.jobs import _util
from texium.jobs.base import JobBase, JobError

MAX_MESSAGE = 1 << 20
# How the executions of this class are recorded (the registry's name for it): the hourly count.
CLASS_STRING = "jobs.email.EmailNotificationJob"


def valid_address(name: str, value, *, local_domain: bool = False) -> str:
    """The address checked by the same rule as a user's email (texium.core.validation)."""
    value = _util.require_str(name, value).strip()
    try:
        return email_address(value, local_domain=local_domain)
    except ValueError:
        raise JobError(f"{name} is not a valid email address: {value[:100]!r}") from None


class EmailNotificationJob(JobBase):
    """Job to send email notifications"""

    run_inputs_as_kwargs = False  # its **kwargs are its own arguments (run inputs: self.context)
    result_from_return = False  # its return value is text for the output

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
                "SMTP_ALLOW_PLAINTEXT_LOGIN is true. A job owned by a user who is not an admin sends only to "
                "the domains of EMAIL_ALLOWED_DOMAINS (none while it is empty; checked when the job is created "
                "or changed and before each run) and at most EMAIL_MAX_PER_HOUR messages an hour per owner."
            ),
        }

    def check_owner(self, *args, **kwargs) -> None:
        if not args or not isinstance(args[0], str) or self.context.owner_is_admin():
            return
        try:
            recipient = email_address(args[0].strip())
        except ValueError:
            return  # run() refuses it
        allowed = {domain.lower() for domain in self.context.config.get("EMAIL_ALLOWED_DOMAINS") or ()}
        if not allowed:
            raise JobError("recipient: only an admin's jobs may send mail (EMAIL_ALLOWED_DOMAINS is empty)")
        domain = recipient.rpartition("@")[2].lower()
        if domain not in allowed:
            raise JobError(
                f"recipient: {domain[:100]!r} is not a domain this job's owner may send to "
                f"(EMAIL_ALLOWED_DOMAINS: {', '.join(sorted(allowed))})"
            )

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
        self._within_hourly_limit()
        headers = {"X-Texium-Job": str(self.context.job_name), "X-Texium-Execution": str(self.context.execution_id)}
        try:
            sent = send_message(self.context.config, [recipient], subject, message, headers=headers)
        except MailError as exc:
            raise JobError(str(exc)) from None
        return f"{sent}\nSize: {len(message)} characters"

    def _within_hourly_limit(self) -> None:
        """A `user`'s jobs send at most EMAIL_MAX_PER_HOUR messages an hour: the runs of this
        class by the same owner created in the last hour that sent (completed) or may be sending."""
        limit = int(self.context.config.get("EMAIL_MAX_PER_HOUR") or 0)
        if not limit or self.context.owner_is_admin():
            return
        sent = self.context.datastore.executions.count(
            {
                "user_id": self.context.user_id,
                "created_at": {"$gte": utcnow() - timedelta(hours=1)},
                "job_class_string": CLASS_STRING,
                "status": {"$in": ["completed", "running"]},
                "_id": {"$ne": self.context.execution_id},
            }
        )
        if sent >= limit:
            raise JobError(
                f"not sent: this job's owner sent {sent} messages in the last hour, the limit "
                f"(EMAIL_MAX_PER_HOUR) is {limit}"
            )
