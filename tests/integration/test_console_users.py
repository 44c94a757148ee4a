"""Console users managed by an admin over HTTP, with the console's real database (SQLite,
PostgreSQL): add a user (password shown once), change a role, unlock; operators and viewers
are refused and the refusal audited; bad input names the field and changes nothing."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from services.console.domain import Role
from services.console.store import ConsoleStore
from shared.db import create_engine, session_factory
from tests.integration.test_console_app import CSRF, console  # noqa: F401 - a fixture

pytestmark = pytest.mark.integration


async def store_of(url: str) -> tuple[ConsoleStore, object]:
    engine = create_engine(url)
    return ConsoleStore(session_factory(engine)), engine


async def test_an_admin_adds_a_user_changes_a_role_and_unlocks(console):  # noqa: F811
    admin = await console.user(Role.ADMIN)
    await console.sign_in(admin)
    page = await console.client.get("/users")
    assert page.status_code == 200 and 'href="/users"' in page.text
    token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
    added = await console.client.post(
        "/users", data={"csrf": token, "email": " Nia@Example.com ", "role": "operator"}
    )
    assert added.status_code == 201
    password = re.search(r"<code>([^<]+)</code>", added.text).group(1)  # type: ignore[union-attr]
    assert 'data-user="nia@example.com"' in added.text
    # the password works (the new user then enrols an authenticator)
    console.client.cookies.clear()
    first = await console.client.post(
        "/login",
        data={"csrf": await console.csrf(), "email": "nia@example.com", "password": password},
    )
    assert first.status_code == 303 and first.headers["location"] == "/enrol"
    console.client.cookies.clear()
    await console.sign_in(admin, later=1)  # a code is accepted once: the next step's
    store, engine = await store_of(console.db_url)
    try:
        nia = await store.user_by_email("nia@example.com")
        assert nia is not None and nia.role is Role.OPERATOR
        nia.locked_until = datetime.now(UTC) + timedelta(minutes=15)
        await store.save_user(nia)
        page = await console.client.get("/users")
        token = CSRF.search(page.text).group(1)  # type: ignore[union-attr]
        assert f'action="/users/{nia.id}/unlock"' in page.text
        await console.client.post(f"/users/{nia.id}/unlock", data={"csrf": token})
        await console.client.post(f"/users/{nia.id}/role", data={"csrf": token, "role": "viewer"})
        after = await store.user_by_email("nia@example.com")
        assert after is not None and after.role is Role.VIEWER and after.locked_until is None
        assert after.session_epoch == nia.session_epoch + 1  # signed out everywhere
    finally:
        await engine.dispose()  # type: ignore[attr-defined]
    log = await console.audit()
    for words in ("add user", "nia@example.com", "unlock user", "change role", "role viewer"):
        assert words in log, words
    assert password not in log


async def test_bad_input_names_the_field_and_adds_nobody(console):  # noqa: F811
    admin = await console.user(Role.ADMIN)
    await console.sign_in(admin)
    token = CSRF.search((await console.client.get("/users")).text).group(1)  # type: ignore[union-attr]
    bad = await console.client.post(
        "/users", data={"csrf": token, "email": "not-an-address", "role": "root"}
    )
    assert bad.status_code == 422
    assert "email: not an e-mail address" in bad.text and "role: one of viewer" in bad.text
    twice = await console.client.post(
        "/users", data={"csrf": token, "email": admin["email"], "role": "viewer"}
    )
    assert twice.status_code == 409 and "already a user" in twice.text
    own = twice.text.split('data-user="admin@example.com"', 1)[1].split("</tr>", 1)[0]
    assert "/users/" not in own, "an admin is not offered a change of their own role"
    store, engine = await store_of(console.db_url)
    try:
        assert [u.email for u in await store.users()] == ["admin@example.com"]
    finally:
        await engine.dispose()  # type: ignore[attr-defined]


@pytest.mark.parametrize("role", [Role.OPERATOR, Role.VIEWER])
async def test_only_admins_manage_users(console, role):  # noqa: F811
    await console.sign_in(await console.user(role))
    inbox = await console.client.get("/")
    assert 'href="/users"' not in inbox.text
    token = CSRF.search(inbox.text).group(1)  # type: ignore[union-attr]
    assert (await console.client.get("/users")).status_code == 403
    posted = await console.client.post(
        "/users", data={"csrf": token, "email": "eve@example.com", "role": "admin"}
    )
    assert posted.status_code == 403
    store, engine = await store_of(console.db_url)
    try:
        assert await store.user_by_email("eve@example.com") is None
    finally:
        await engine.dispose()  # type: ignore[attr-defined]
    log = await console.audit()
    assert len(re.findall(r"<td>refused</td><td>/users</td>", log)) == 2, log  # GET and POST
