"""Request plumbing: the session cookie, CSRF-checked forms, the signed-in user, rendering."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from fastapi import Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData
from starlette.middleware.base import BaseHTTPMiddleware

from services.console.clients import ApiResult, Backends
from services.console.domain import LOCALES, AuditRecord, Role, User
from services.console.i18n import translator
from services.console.sessions import COOKIE, Session, SessionCodec
from services.console.settings import ConsoleSettings
from services.console.store import ConsoleStore

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


@dataclass
class Console:
    """What the routes need; built in the app's lifespan and put on `app.state.console`."""

    settings: ConsoleSettings
    store: ConsoleStore
    backends: Backends
    codec: SessionCodec


class SignInRequired(Exception):
    """No signed-in user: the browser is sent to the sign-in page."""


class Refused(Exception):
    """A 403: a missing/forged CSRF token, or a role that may not act."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def console_of(request: Request) -> Console:
    console: Console = request.app.state.console
    return console


def session_of(request: Request) -> Session:
    session: Session = request.state.session
    return session


class SessionMiddleware(BaseHTTPMiddleware):
    """Loads the signed cookie into `request.state.session`; writes it back when changed."""

    async def dispatch(
        self, request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if request.url.path.startswith("/static") or request.url.path in ("/healthz", "/readyz"):
            return await call_next(request)
        console = console_of(request)
        session = console.codec.loads(request.cookies.get(COOKIE))
        request.state.session = session
        response = await call_next(request)
        if session.changed:
            response.set_cookie(
                COOKIE,
                console.codec.dumps(session),
                max_age=console.codec.max_age_s,
                httponly=True,
                samesite="lax",
                secure=console.settings.secure_cookies,
                path="/",
            )
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        return response


async def checked_form(request: Request) -> FormData:
    """The posted form, once its CSRF token (field `csrf` or header) matches the session's."""
    form = await request.form()
    token = form.get("csrf") or request.headers.get("X-CSRF-Token")
    if not session_of(request).csrf_ok(token if isinstance(token, str) else None):
        raise Refused("csrf")
    return form


async def current_user(request: Request) -> User:
    session = session_of(request)
    if not session.uid:
        raise SignInRequired
    user = await console_of(request).store.user(session.uid)
    if user is None or user.session_epoch != session.epoch or not user.totp_enrolled:
        session.sign_out()
        raise SignInRequired
    request.state.user = user
    return user


async def acting_user(request: Request) -> tuple[User, FormData]:
    """The signed-in user and the CSRF-checked form, refused (403, audited) for viewers."""
    user = await current_user(request)
    form = await checked_form(request)
    if not user.role.can_act:
        await audit(request, user, "refused", request.url.path, "refused", "role viewer")
        raise Refused("forbidden")
    return user, form


async def audit(
    request: Request, user: User | None, action: str, target: str, result: str, detail: str = ""
) -> None:
    await console_of(request).store.audit(
        AuditRecord(
            at=datetime.now(UTC),
            actor=user.email if user else "-",
            role=user.role.value if user else "-",
            action=action,
            target=target,
            result=result,
            detail=detail,
        )
    )


async def act(
    request: Request, user: User, action: str, target: str, call: Awaitable[ApiResult]
) -> ApiResult:
    """Run one backend call for the user, audit it and flash its outcome."""
    result = await call
    await audit(request, user, action, target, "ok" if result.ok else "error", result.message or "")
    t = translator(locale_of(request))
    if result.ok:
        session_of(request).say("ok", f"{t('done')} {t(action)} {target}")
    else:
        session_of(request).say("error", f"{t(action)} {target}: {result.message}", result.details)
    return result


def locale_of(request: Request) -> str:
    user: User | None = getattr(request.state, "user", None)
    if user is not None:
        return user.locale
    session = getattr(request.state, "session", None)
    if session is not None and session.locale in LOCALES:
        return str(session.locale)
    accept = request.headers.get("accept-language", "")
    return "zh" if accept.lower().startswith("zh") else "en"


def render(request: Request, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    user: User | None = getattr(request.state, "user", None)
    session = getattr(request.state, "session", None)
    locale = locale_of(request)
    return templates.TemplateResponse(
        request,
        name,
        {
            "user": user,
            "can_act": bool(user and user.role.can_act),
            "is_admin": bool(user and user.role is Role.ADMIN),
            "csrf": session.csrf if session else "",
            "flash": session.take_flash() if session else [],
            "locale": locale,
            "t": translator(locale),
            "path": request.url.path,
            **context,
        },
        status_code=status_code,
    )


def back(request: Request, fallback: str = "/") -> RedirectResponse:
    """After a form post: back to the page it came from (same site only; after a step-up
    prompt, the page before the prompt)."""
    kept: str | None = getattr(request.state, "back_to", None)
    if kept:
        return RedirectResponse(kept, status_code=303)
    target = fallback
    referer = request.headers.get("referer", "")
    base = str(request.base_url)
    if referer.startswith(base):
        target = "/" + referer[len(base) :]
    return RedirectResponse(target, status_code=303)
