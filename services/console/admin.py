"""Console users, for admins only: add a user (a one-time password shown once), change a
user's role, unlock a locked user. Operators and viewers are refused (403, audited)."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, Response
from starlette.datastructures import FormData

from services.console.domain import Role, User, hash_password, new_password
from services.console.stepup import require_fresh_factor
from services.console.store import new_user
from services.console.web import (
    Refused,
    audit,
    back,
    checked_form,
    console_of,
    current_user,
    render,
    session_of,
)

router = APIRouter()
SignedIn = Annotated[User, Depends(current_user)]
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,190}\.[^@\s]{2,}$")


async def _admin(request: Request, user: User) -> None:
    if not user.role.can_manage_users:
        await audit(request, user, "refused", request.url.path, "refused", f"role {user.role}")
        raise Refused("forbidden")


async def _acting_admin(request: Request, action: str) -> tuple[User, FormData]:
    """An admin's CSRF-checked form, once their second factor is fresh (step-up)."""
    user = await current_user(request)
    form = await checked_form(request)
    await _admin(request, user)
    await require_fresh_factor(request, user, form, action)
    return user, form


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


def _role(raw: str) -> Role | None:
    return next((r for r in Role if r.value == raw), None)


async def _page(request: Request, status_code: int = 200, **context: object) -> Response:
    users = await console_of(request).store.users()
    now = datetime.now(UTC)
    return render(
        request,
        "users.html",
        status_code=status_code,
        users=users,
        locked={u.id for u in users if u.locked(now)},
        roles=[r.value for r in Role],
        **context,
    )


@router.get("/users", response_class=HTMLResponse)
async def users_page(request: Request, user: SignedIn) -> Response:
    await _admin(request, user)
    return await _page(request)


@router.post("/users", response_class=HTMLResponse)
async def add_user(request: Request) -> Response:
    """The new user's password is shown once, on this answer (never in a URL or the log);
    the user enrols an authenticator at first sign-in."""
    admin, form = await _acting_admin(request, "add user")
    email, role = _text(form, "email").lower(), _role(_text(form, "role"))
    bad = []
    if not _EMAIL.match(email):
        bad.append({"field": "email", "reason": "not an e-mail address"})
    if role is None:
        bad.append({"field": "role", "reason": "one of viewer, operator, admin"})
    store = console_of(request).store
    if not bad and await store.user_by_email(email) is not None:
        await audit(request, admin, "add user", email, "error", "409: already a user")
        return await _page(
            request, 409, error="409: already a user", details=[{"field": "email", "reason": email}]
        )
    if bad or role is None:
        await audit(request, admin, "add user", email or "-", "error", "422")
        return await _page(request, 422, error="422: the form has a bad field", details=bad)
    password = new_password()
    await store.add_user(new_user(email, role, hash_password(password)))
    await audit(request, admin, "add user", email, "ok", f"role {role}")
    return await _page(request, 201, created={"email": email, "password": password})


@router.post("/users/{user_id}/role")
async def change_role(request: Request, user_id: str) -> Response:
    admin, form = await _acting_admin(request, "change role")
    store = console_of(request).store
    target, role = await store.user(user_id), _role(_text(form, "role"))
    if target is None or role is None or target.id == admin.id:
        why = (
            "no such user"
            if target is None
            else "role: one of viewer, operator, admin"
            if role is None
            else "an admin does not change their own role"
        )
        await audit(request, admin, "change role", user_id, "error", why)
        session_of(request).say("error", f"change role {user_id}: {why}")
        return back(request, "/users")
    target.role = role
    target.session_epoch += 1  # signed out everywhere: the next sign-in has the new role
    await store.save_user(target)
    await audit(request, admin, "change role", target.email, "ok", f"role {role}")
    session_of(request).say("ok", f"change role {target.email}: {role}")
    return back(request, "/users")


@router.post("/users/{user_id}/unlock")
async def unlock(request: Request, user_id: str) -> Response:
    admin, _ = await _acting_admin(request, "unlock user")
    store = console_of(request).store
    target = await store.user(user_id)
    if target is None:
        await audit(request, admin, "unlock user", user_id, "error", "no such user")
        session_of(request).say("error", f"unlock user {user_id}: no such user")
        return back(request, "/users")
    target.record_success()
    await store.save_user(target)
    await audit(request, admin, "unlock user", target.email, "ok")
    session_of(request).say("ok", f"unlock user {target.email}")
    return back(request, "/users")
