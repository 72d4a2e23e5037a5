"""E-mail over SMTP: plain text and HTML, with a Message-ID derived from the message id."""

from __future__ import annotations

import smtplib
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formataddr, formatdate, parseaddr

from workers.messages import Rendered
from workers.settings import SmtpSettings


def build(settings: SmtpSettings, to: str, message_id: str, rendered: Rendered) -> MIMEMultipart:
    # email.header.Header keeps the spaces of a long Vietnamese subject inside its RFC 2047
    # encoded words. EmailMessage's folding on Python < 3.12.5 (CPython gh-92081) puts them
    # between two encoded words, where every decoder drops them ("Đềnghị").
    msg = MIMEMultipart("alternative")
    msg["From"] = formataddr(parseaddr(settings.sender), charset="utf-8")
    msg["To"] = to
    msg["Subject"] = Header(rendered.subject, "utf-8")
    msg["Date"] = formatdate(localtime=False)
    # stable: a redelivered message has the same id, so mail clients can drop the duplicate
    msg["Message-ID"] = f"<{message_id}@rehabflow>"
    msg.attach(MIMEText(rendered.text, "plain", "utf-8"))
    msg.attach(MIMEText(rendered.html, "html", "utf-8"))
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
