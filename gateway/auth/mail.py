"""Outgoing mail (password reset, invitations) through configurable SMTP.

smtplib is blocking, so it runs in a worker thread. Without ``smtp_host`` the message is not
sent: one WARNING line says so, and only with ``unsent_mail = log`` does that line carry the
message's link (a live credential), so a small installation can still reset a password.
Links are built from ``config.base_url``, never from a request's Host header.
"""

from __future__ import annotations

import asyncio
import logging
import re
import smtplib
from email.message import EmailMessage

from gateway.config import Config

log = logging.getLogger("gateway.mail")
LINK = re.compile(r"https?://\S+")


class Mailer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.sent = 0

    @property
    def sender(self) -> str:
        return self.config.mail_from or f"gateway@{self.config.domain}"

    async def send(self, to: str, subject: str, body: str) -> None:
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = to
        msg["Subject"] = subject
        msg.set_content(body)
        if not self.config.smtp_host:
            self._unsent(to, subject, body)
            return
        try:
            await asyncio.to_thread(self._deliver, msg)
            self.sent += 1
        except (OSError, smtplib.SMTPException):
            # The user sees the same answer either way (no enumeration); operators see this.
            log.exception("could not send mail to %s through %s", to, self.config.smtp_host)

    def _unsent(self, to: str, subject: str, body: str) -> None:
        """No SMTP: one log line; the link only when the operator turned that on."""
        if self.config.unsent_mail == "log":
            links = " ".join(LINK.findall(body)) or "(no link)"
            log.warning("mail not sent (no --smtp-host): %r to %s: %s", subject, to, links)
        else:
            log.warning(
                "mail not sent (no --smtp-host): %r to %s; set --smtp-host, or --unsent-mail log "
                "to log its link",
                subject,
                to,
            )

    def _deliver(self, msg: EmailMessage) -> None:
        with smtplib.SMTP(self.config.smtp_host, self.config.smtp_port, timeout=10) as smtp:
            smtp.send_message(msg)
