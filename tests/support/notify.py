"""Real counterparts for the notify service: an SMTP server and a chat-webhook sink."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
from aiosmtpd.controller import Controller
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from shared.infra import free_port
from shared.testing import eventually
from tests.support.services import served


@dataclass
class Mailbox:
    """What an aiosmtpd server received: parsed messages and their raw bytes."""

    raw: list[bytes] = field(default_factory=list)
    recipients: list[list[str]] = field(default_factory=list)
    delay_s: float = 0.0
    """How long the server takes to answer each message (a slow relay)."""

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        self.raw.append(bytes(envelope.original_content or envelope.content))
        self.recipients.append(list(envelope.rcpt_tos))
        return "250 OK"

    @property
    def messages(self) -> list[EmailMessage]:
        return [message_from_bytes(raw, policy=policy.default) for raw in self.raw]  # type: ignore[misc]


@contextlib.contextmanager
def smtp_server(port: int | None = None, **kwargs: Any):
    """A real SMTP server (aiosmtpd, its own thread) on 127.0.0.1; yields (mailbox, port)."""
    mailbox = Mailbox()
    port = port or free_port()
    controller = Controller(mailbox, hostname="127.0.0.1", port=port, **kwargs)
    controller.start()
    try:
        yield mailbox, port
    finally:
        controller.stop()


def dingtalk_expected_sign(secret: str, timestamp: str) -> str:
    """DingTalk's documented algorithm, written out independently of the service's code."""
    string_to_sign = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(
        hmac.new(secret.encode(), string_to_sign, hashlib.sha256).digest()
    ).decode()


def feishu_expected_sign(secret: str, timestamp: str) -> str:
    """Feishu's documented algorithm: the key is "timestamp\\nsecret", the message is empty."""
    key = f"{timestamp}\n{secret}".encode()
    return base64.b64encode(hmac.new(key, digestmod=hashlib.sha256).digest()).decode()


@dataclass
class Hook:
    kind: str
    body: dict[str, Any]
    query: dict[str, list[str]]
    headers: dict[str, str]
    at: float
    signature_ok: bool | None


@dataclass
class Sink:
    """Chat platforms as a real HTTP server: it checks each platform's signature the way the
    platform does and answers like it (DingTalk/WeCom `errcode`, Feishu `code`)."""

    secrets: dict[str, str]
    url: str = ""
    received: list[Hook] = field(default_factory=list)
    script: dict[str, list[tuple[int, dict[str, str]]]] = field(default_factory=dict)
    """Per kind, canned (status, headers) answers to give before answering normally."""

    def of(self, kind: str) -> list[Hook]:
        return [hook for hook in self.received if hook.kind == kind]

    def endpoint(self, kind: str) -> str:
        return f"{self.url}/{kind}"

    def app(self) -> FastAPI:
        app = FastAPI()
        app.state.runtime = None

        @app.post("/{kind}")
        async def receive(kind: str, request: Request) -> Any:
            raw = await request.body()
            body = json.loads(raw)
            query = parse_qs(urlsplit(str(request.url)).query)
            secret = self.secrets.get(kind)
            ok: bool | None = None
            if kind == "dingtalk" and secret:
                ts = query.get("timestamp", [""])[0]
                fresh = abs(time.time() * 1000 - int(ts or 0)) < 3600_000
                ok = fresh and query.get("sign", [""])[0] == dingtalk_expected_sign(secret, ts)
            elif kind == "feishu" and secret:
                ts = str(body.get("timestamp", ""))
                ok = body.get("sign") == feishu_expected_sign(secret, ts)
            elif kind == "generic" and secret:
                given = dict(
                    p.split("=", 1) for p in request.headers["x-dropship-signature"].split(",")
                )
                mac = hmac.new(secret.encode(), f"{given['t']}.".encode() + raw, hashlib.sha256)
                ok = hmac.compare_digest(mac.hexdigest(), given["v1"])
            self.received.append(
                Hook(kind, body, query, dict(request.headers), time.monotonic(), ok)
            )
            canned = self.script.get(kind)
            if canned:
                status, headers = canned.pop(0)
                return JSONResponse({"error": "scripted"}, status_code=status, headers=headers)
            if ok is False:
                if kind == "dingtalk":
                    return {"errcode": 310000, "errmsg": "sign not match"}
                if kind == "feishu":
                    return {
                        "code": 19021,
                        "msg": "sign match fail or timestamp is not within one hour",
                    }
                return JSONResponse({"error": "bad signature"}, status_code=401)
            if kind in ("dingtalk", "wecom"):
                return {"errcode": 0, "errmsg": "ok"}
            if kind == "feishu":
                return {"code": 0, "msg": "success", "data": {}}
            if kind == "sms":
                return {"id": body.get("reference"), "status": "queued"}
            return JSONResponse("ok" if kind == "slack" else {"ok": True})

        return app


@contextlib.asynccontextmanager
async def webhook_sink(secrets: dict[str, str] | None = None) -> AsyncIterator[Sink]:
    sink = Sink(secrets or {})
    port = free_port()
    async with served(lambda _settings: sink.app(), None, port) as server:
        sink.url = server.url
        yield sink


async def log_of(
    client: httpx.AsyncClient, order_id: str | None = None, **params: Any
) -> list[dict[str, Any]]:
    query = {k: v for k, v in {"order_id": order_id, **params}.items() if v is not None}
    response = await client.get(
        "/v1/notifications", params=query, headers={"X-API-Key": "dev-api-key"}
    )
    response.raise_for_status()
    return list(response.json()["items"])


async def settled(
    client: httpx.AsyncClient, order_id: str | None, count: int
) -> list[dict[str, Any]]:
    """The order's log once it holds `count` rows and none is waiting to be sent."""
    rows = await log_of(client, order_id)
    if len(rows) >= count and all(r["status"] not in ("pending", "sending") for r in rows):
        return rows
    return []


async def until(predicate: Callable[[], bool], what: str = "condition") -> None:
    """Poll a plain (not awaitable) condition with a deadline."""

    async def probe() -> bool:
        return predicate()

    await eventually(probe, what=what)
