"""Step-up: key operations (refund, cancel, user admin) need a second factor checked within
the last `DROPSHIP_CONSOLE_STEPUP_S` seconds; else the form is shown again asking for a code."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

from fastapi import Request
from fastapi.responses import HTMLResponse
from starlette.datastructures import FormData

from services.console.domain import User
from services.console.web import audit, console_of, render, session_of

CODE_FIELD = "stepup_code"
BACK_FIELD = "stepup_back"
_OWN_FIELDS = ("csrf", CODE_FIELD, BACK_FIELD)


class StepUpRequired(Exception):
    """The action was not performed: the user owes a (new) second-factor code."""

    def __init__(self, action: str, form: FormData, back: str, error: str = "", status: int = 200):
        super().__init__(action)
        self.action, self.form, self.back = action, form, back
        self.error, self.status = error, status


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _local(path: str) -> str:
    return path if path.startswith("/") and not path.startswith("//") else ""


def _back(request: Request, form: FormData) -> str:
    """Where the user came from (kept across the prompt), a same-site path only."""
    if kept := _local(_text(form, BACK_FIELD)):
        return kept
    referer, base = request.headers.get("referer", ""), str(request.base_url)
    return "/" + referer[len(base) :] if referer.startswith(base) else ""


async def require_fresh_factor(request: Request, user: User, form: FormData, action: str) -> None:
    """Return when the session's second factor is fresh, or when the form carries a correct
    code (checked like sign-in: no replay, failures count toward the lock-out); else raise
    `StepUpRequired`, with nothing done. Every code presented is audited."""
    session, console = session_of(request), console_of(request)
    back = _back(request, form)
    if back:
        request.state.back_to = back
    code = _text(form, CODE_FIELD)
    if not code:
        if time.time() - session.verified_at <= console.settings.stepup_s:
            return
        raise StepUpRequired(action, form, back)
    now, s = datetime.now(UTC), console.settings
    if user.locked(now):
        await audit(request, user, "step-up", action, "locked")
        raise StepUpRequired(action, form, back, "locked", 429)
    if not user.second_factor_matches(code, now):
        locked_now = user.record_failure(now, s.max_failed_logins, timedelta(seconds=s.lockout_s))
        await console.store.save_user(user)
        await audit(request, user, "step-up", action, "error", "wrong code")
        if locked_now:
            await audit(request, user, "locked out", user.email, "locked")
        raise StepUpRequired(action, form, back, "locked" if locked_now else "stepup_bad_code", 401)
    user.record_success()
    await console.store.save_user(user)
    session.verified_at, session.changed = time.time(), True
    await audit(request, user, "step-up", action, "ok")


def stepup_page(request: Request, exc: StepUpRequired) -> HTMLResponse:
    """The code prompt; it re-posts the original form (hidden fields) to the same path."""
    fields = [
        (k, v) for k, v in exc.form.multi_items() if k not in _OWN_FIELDS and isinstance(v, str)
    ]
    return render(
        request,
        "stepup.html",
        status_code=exc.status,
        action=exc.action,
        target=request.url.path,
        fields=fields,
        back=exc.back,
        error=exc.error,
    )
