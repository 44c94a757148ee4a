"""Step-up in a real headless Chromium against the stack `make up` runs: an admin whose
second factor is older than the window adds a user; the console asks for a code on an
accessible page, a wrong one does nothing, the right one (typed, Enter) adds the user."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from playwright.async_api import async_playwright

from services.console.sessions import COOKIE, SessionCodec
from tests.e2e.test_console_browser import (
    ARGS,
    CHROMIUM,
    _axe,
    _create_user,
    _sign_in,
    _wait_ready,
    launched,
)

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian chromium missing: make sysdeps"),
]
SECRET = "e2e-step-up-session-secret-" + "x" * 16


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[dict[str, Any]]:
    with launched(tmp_path, {"DROPSHIP_CONSOLE_SESSION_SECRET": SECRET}) as up:
        yield up


async def test_an_admin_with_a_stale_factor_confirms_a_code_to_add_a_user(stack):
    urls, env = stack["urls"], stack["env"]
    base = urls["console"]
    await _wait_ready(urls)
    admin = _create_user(env, "ada@example.com", "admin")
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            context = await browser.new_context()
            page = await context.new_page()
            await _sign_in(page, base, admin)
            # the sign-in check is ten minutes old: the cookie re-signed with that time
            codec = SessionCodec(SECRET, 8 * 3600)
            cookie = next(c for c in await context.cookies() if c["name"] == COOKIE)
            session = codec.loads(cookie["value"])
            session.verified_at = time.time() - 600
            await context.add_cookies([{**cookie, "value": codec.dumps(session)}])
            await page.get_by_role("link", name="Users").click()
            await page.locator("#add-user summary").click()
            await page.locator("#new-user-email").fill("nia@example.com")
            await page.locator("#new-user-role").select_option("operator")
            await page.get_by_role("button", name="Add a user").click()
            code = page.get_by_label("Authentication code")
            await code.wait_for()
            assert await page.locator("#stepup-hint").inner_text() == (
                "This is a key operation: enter a current code to go ahead with add user"
            )
            assert not await _axe(page)
            await code.fill("000000")
            await page.keyboard.press("Enter")
            error = await page.locator("#stepup-error").inner_text()
            assert error == "Wrong code: nothing was done."
            totp = pyotp.TOTP(admin["totp_secret"])
            await page.get_by_label("Authentication code").fill(totp.at(int(time.time()) + 30))
            await page.keyboard.press("Enter")
            assert "nia@example.com" in await page.locator("#user-created").inner_text()
            await page.goto(base + "/audit")
            log = await page.locator("#audit-table").inner_text()
            for words in ("step-up\tadd user\terror\twrong code", "step-up\tadd user\tok",
                          "add user\tnia@example.com\tok"):  # fmt: skip
                assert words in log, (words, log)
        finally:
            await browser.close()
