"""E-mail over SMTP: plain text and HTML, with a Message-ID derived from the message id."""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from email.utils import formatdate

from workers.messages import Rendered
from workers.settings import SmtpSettings


def build(settings: SmtpSettings, to: str, message_id: str, rendered: Rendered) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.sender
    msg["To"] = to
    msg["Subject"] = rendered.subject
    msg["Date"] = formatdate(localtime=False)
    # stable: a redelivered message has the same id, so mail clients can drop the duplicate
    msg["Message-ID"] = f"<{message_id}@rehabflow>"
    msg.set_content(rendered.text)
    msg.add_alternative(rendered.html, subtype="html")
    return msg


def send(settings: SmtpSettings, to: str, message_id: str, rendered: Rendered) -> None:
    """Send one message; any SMTP error propagates (the delivery is then retried)."""
    msg = build(settings, to, message_id, rendered)
    with smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout) as smtp:
        if settings.starttls:
            smtp.starttls()
        if settings.user:
            smtp.login(settings.user, settings.password or "")
        smtp.send_message(msg)
