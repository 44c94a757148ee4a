"""Sign-in: password, then a TOTP code (or recovery code); TOTP enrolment; sign-out; language."""

from __future__ import annotations

import io
import secrets
from datetime import UTC, datetime, timedelta

import segno
from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from services.console.domain import (
    LOCALES,
    User,
    hash_password,
    new_totp_secret,
    password_matches,
    totp_step,
    totp_uri,
)
from services.console.web import (
    audit,
    checked_form,
    console_of,
    current_user,
    render,
    session_of,
)

router = APIRouter()
UNKNOWN_USER_HASH = hash_password(secrets.token_urlsafe(16))


def _field(form: object, name: str) -> str:
    value = form.get(name) if hasattr(form, "get") else None
    return value.strip() if isinstance(value, str) else ""


@router.get("/login", response_class=HTMLResponse)
async def login_page(request: Request) -> Response:
    return render(request, "login.html")


async def _failure(request: Request, user: User | None, step: str) -> Response:
    """Count a failure against the user (lock-out) and show the same vague error."""
    console = console_of(request)
    locked_now = False
    if user is not None:
        s = console.settings
        locked_now = user.record_failure(
            datetime.now(UTC), s.max_failed_logins, timedelta(seconds=s.lockout_s)
        )
        await console.store.save_user(user)
    await audit(request, user, f"sign-in {step}", user.email if user else "-", "error", "")
    if locked_now:
        await audit(request, user, "locked out", user.email if user else "-", "locked")
    template = "login.html" if step == "password" else "totp.html"
    key = "locked" if locked_now else ("bad_login" if step == "password" else "bad_code")
    return render(request, template, status_code=401, error=key)


@router.post("/login", response_class=HTMLResponse)
async def login(request: Request) -> Response:
    form = await checked_form(request)
    console = console_of(request)
    user = await console.store.user_by_email(_field(form, "email"))
    now = datetime.now(UTC)
    if user is not None and user.locked(now):
        await audit(request, user, "sign-in password", user.email, "locked")
        return render(request, "login.html", status_code=429, error="locked")
    stored = user.password_hash if user else UNKNOWN_USER_HASH  # same work for unknown e-mails
    if not password_matches(stored, _field(form, "password")) or user is None:
        return await _failure(request, user, "password")
    session = session_of(request)
    session.pending, session.uid, session.changed = user.id, None, True
    return RedirectResponse("/login/totp" if user.totp_enrolled else "/enrol", status_code=303)


async def _pending(request: Request) -> User | None:
    pending = session_of(request).pending
    return await console_of(request).store.user(pending) if pending else None


@router.get("/login/totp", response_class=HTMLResponse)
async def totp_page(request: Request) -> Response:
    if await _pending(request) is None:
        return RedirectResponse("/login", status_code=303)
    return render(request, "totp.html")


@router.post("/login/totp", response_class=HTMLResponse)
async def totp(request: Request) -> Response:
    form = await checked_form(request)
    user = await _pending(request)
    if user is None or not user.totp_enrolled:
        return RedirectResponse("/login", status_code=303)
    now = datetime.now(UTC)
    if user.locked(now):
        await audit(request, user, "sign-in code", user.email, "locked")
        return render(request, "totp.html", status_code=429, error="locked")
    if not user.second_factor_matches(_field(form, "code"), now):
        return await _failure(request, user, "code")
    user.record_success()
    await console_of(request).store.save_user(user)
    session_of(request).sign_in(user.id, user.session_epoch)
    await audit(request, user, "sign-in", user.email, "ok")
    return RedirectResponse("/", status_code=303)


def _qr_svg(uri: str) -> str:
    out = io.BytesIO()
    segno.make(uri, error="m").save(out, kind="svg", scale=5, xmldecl=False, svgns=True)
    return out.getvalue().decode()


@router.get("/enrol", response_class=HTMLResponse)
async def enrol_page(request: Request) -> Response:
    user = await _pending(request)
    if user is None or user.totp_enrolled:
        return RedirectResponse("/login", status_code=303)
    session = session_of(request)
    if not user.totp_secret:  # kept unenrolled until a first code proves the app has it
        user.totp_secret = new_totp_secret()
        await console_of(request).store.save_user(user)
    uri = totp_uri(user.totp_secret, user.email)
    session.changed = True
    return render(request, "enrol.html", secret=user.totp_secret, qr=_qr_svg(uri))


@router.post("/enrol", response_class=HTMLResponse)
async def enrol(request: Request) -> Response:
    form = await checked_form(request)
    user = await _pending(request)
    if user is None or user.totp_enrolled or not user.totp_secret:
        return RedirectResponse("/login", status_code=303)
    step = totp_step(user.totp_secret, _field(form, "code"))
    if step is None:
        uri = totp_uri(user.totp_secret, user.email)
        return render(
            request,
            "enrol.html",
            status_code=401,
            error="bad_code",
            secret=user.totp_secret,
            qr=_qr_svg(uri),
        )
    codes = user.enrol(user.totp_secret)
    user.totp_last_step = step
    user.record_success()
    await console_of(request).store.save_user(user)
    session_of(request).sign_in(user.id, user.session_epoch)
    request.state.user = user
    await audit(request, user, "totp enrolled", user.email, "ok")
    return render(request, "recovery.html", codes=codes)


@router.post("/logout")
async def logout(request: Request) -> Response:
    await checked_form(request)
    user = await current_user(request)
    user.session_epoch += 1  # every cookie issued to this user so far stops working
    await console_of(request).store.save_user(user)
    await audit(request, user, "sign-out", user.email, "ok")
    session_of(request).sign_out()
    return RedirectResponse("/login", status_code=303)


@router.post("/locale")
async def set_locale(request: Request) -> Response:
    """Switch language: remembered on the user (and in the cookie before sign-in)."""
    form = await checked_form(request)
    locale = _field(form, "locale")
    if locale in LOCALES:
        session = session_of(request)
        session.locale, session.changed = locale, True
        if session.uid:
            user = await current_user(request)
            user.locale = locale
            await console_of(request).store.save_user(user)
    target = _field(form, "next")
    return RedirectResponse(
        target if target.startswith("/") and not target.startswith("//") else "/", status_code=303
    )
