"""Mail to the maintainer over a real SMTP exchange (STARTTLS, SSL, or plain on loopback)."""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

from rig.daemon.settings import MailSettings
from rig.errors import InfraError

log = logging.getLogger(__name__)
MAX_ATTACHMENT = 5 * 1024 * 1024
ONE_LINE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")


def tls_context(settings: MailSettings) -> ssl.SSLContext:
    """Verified TLS; ``mail.ca_file`` adds a private CA (a relay with its own certificate)."""
    context = ssl.create_default_context()
    if settings.ca_file:
        context.load_verify_locations(settings.ca_file)
    return context


def send(
    settings: MailSettings,
    subject: str,
    text: str,
    html: str | None = None,
    attachments: tuple[Path, ...] = (),
) -> str:
    """Send one message to the configured recipients; returns its Message-ID.

    The subject is made one line (a job title comes from a webhook: a newline in
    it must neither inject a header nor make the email package raise).
    """
    msg = EmailMessage()
    msg["From"] = settings.sender
    msg["To"] = ", ".join(settings.to)
    msg["Subject"] = " ".join(ONE_LINE.sub(" ", subject).split())[:200]
    msg["Message-ID"] = make_msgid(domain=settings.sender.rsplit("@", 1)[-1].strip(">"))
    msg.set_content(text)
    if html:
        msg.add_alternative(html, subtype="html")
    for path in attachments:
        if path.is_file() and path.stat().st_size <= MAX_ATTACHMENT:
            maintype, subtype = (
                ("text", "html") if path.suffix == ".html" else ("application", "octet-stream")
            )
            msg.add_attachment(
                path.read_bytes(), maintype=maintype, subtype=subtype, filename=path.name
            )
    try:
        if settings.security == "ssl":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                settings.host,
                settings.port,
                timeout=settings.timeout,
                context=tls_context(settings),
            )
        else:
            smtp = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout)
        with smtp:
            if settings.security == "starttls":
                smtp.starttls(context=tls_context(settings))
            if settings.username and settings.password is not None:
                smtp.login(settings.username, settings.password.reveal())
            smtp.send_message(msg)
    except (OSError, smtplib.SMTPException, ValueError) as e:
        # never include the password; smtplib's messages do not carry it
        raise InfraError(
            f"sending mail via {settings.host}:{settings.port} ({settings.security}) failed: {e}",
            where="mail",
            hint="check mail.host/port/security and the SMTP credentials",
        ) from e
    log.info("mail sent: %s -> %s", subject, ", ".join(settings.to))
    return msg["Message-ID"]
