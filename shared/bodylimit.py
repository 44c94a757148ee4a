"""Request body size limits per route, enforced while the body streams in (413 past it)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from fastapi import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from shared.http import error_body


class BodyTooLarge(HTTPException):
    """The request body passed its route's limit (mapped to 413 with the error shape)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body larger than {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class BodyLimit:
    """`limit` bytes for paths starting with `prefix` (or ending with `suffix`)."""

    limit: int
    prefix: str = ""
    suffix: str = ""

    def matches(self, path: str) -> bool:
        return path.startswith(self.prefix) and path.endswith(self.suffix)


class BodyLimitMiddleware:
    """Refuse a body over its route's limit without ever holding more than the limit.

    A declared `Content-Length` over the limit is answered at once, before reading a byte;
    a chunked (or lying) body is counted as its chunks arrive and refused at the first
    byte past the limit, so a webhook cannot be made to buffer megabytes before its
    signature is checked. The first matching rule wins; `default` covers the rest.
    """

    def __init__(self, app: ASGIApp, default: int, rules: Sequence[BodyLimit] = ()) -> None:
        self.app = app
        self.default = default
        self.rules = tuple(rules)

    def limit_for(self, path: str) -> int:
        return next((rule.limit for rule in self.rules if rule.matches(path)), self.default)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await _too_large(send, limit)
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if started:
                raise
            await _too_large(send, limit)


async def _too_large(send: Send, limit: int) -> None:
    body = json.dumps(
        error_body("payload_too_large", f"request body larger than {limit} bytes")
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
