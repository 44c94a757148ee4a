"""SMTP sessions kept open between sends: one connect, TLS handshake and EHLO for many e-mails."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import Callable

import aiosmtplib

from services.notify.mime import OutgoingEmail


class SmtpSessions:
    """Idle SMTP sessions to one server, handed to one send at a time.

    A send takes an idle session (or opens one), sends one message, and gives the session
    back only if everything went well: any error closes it, so one message's failure never
    carries into the next (the next send opens a fresh session). Sessions idle longer than
    `idle_s`, or that the server closed, are dropped instead of reused; at most `keep` wait.
    """

    def __init__(
        self,
        connect: Callable[[str], aiosmtplib.SMTP],
        *,
        idle_s: float = 30.0,
        keep: int = 4,
    ) -> None:
        self._new = connect
        self.idle_s = idle_s
        self.keep = keep
        self._idle: list[tuple[aiosmtplib.SMTP, float]] = []
        self._local_hostname: str | None = None
        self.opened = 0
        """Sessions opened so far (what reuse saves)."""

    async def send(self, message: OutgoingEmail) -> None:
        client = await self._take()
        try:
            # 8-bit parts only to a server that takes them; UTF-8 addresses need SMTPUTF8
            # (the server's refusal is aiosmtplib's `SMTPNotSupported`)
            eight_bit = client.supports_extension("8bitmime")
            options = ["BODY=8BITMIME"] if eight_bit else []
            if message.utf8:
                options.append("SMTPUTF8")
            await client.sendmail(
                message.sender,
                list(message.recipients),
                message.as_bytes(eight_bit=eight_bit),
                mail_options=options,
            )
        except BaseException:
            client.close()
            raise
        self._give_back(client)

    async def _take(self) -> aiosmtplib.SMTP:
        now = time.monotonic()
        while self._idle:
            client, since = self._idle.pop()
            if client.is_connected and now - since < self.idle_s:
                return client
            client.close()
        if self._local_hostname is None:  # aiosmtplib would look it up (a thread) per session
            self._local_hostname = await asyncio.to_thread(socket.getfqdn)
        client = self._new(self._local_hostname)
        try:
            await client.connect()
            if client.is_ehlo_or_helo_needed:  # the extensions decide how a message is sent
                try:
                    await client.ehlo()
                except aiosmtplib.SMTPHeloError:
                    await client.helo()
        except BaseException:
            client.close()
            raise
        self.opened += 1
        return client

    def _give_back(self, client: aiosmtplib.SMTP) -> None:
        if client.is_connected and len(self._idle) < self.keep:
            self._idle.append((client, time.monotonic()))
        else:
            client.close()

    async def close(self) -> None:
        """QUIT every idle session (politely; a server gone meanwhile is no error)."""
        idle, self._idle = self._idle, []
        for client, _ in idle:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(2):
                    await client.quit()
            client.close()
