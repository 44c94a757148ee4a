"""The dashboard page and its assets, all served by the service itself (no CDN)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import FastAPI, Query, Request
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from shared.http import API_KEY_COOKIE, check_api_key

STATIC = Path(__file__).parent / "static"


def install(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def dashboard(
        request: Request, key: Annotated[str | None, Query(description="Admin API key")] = None
    ) -> FileResponse:
        """Opened once as `/?key=<admin key>`; the key then lives in a same-site cookie that
        the page's own API calls carry."""
        presented = key or request.cookies.get(API_KEY_COOKIE)
        check_api_key(presented, request.app.state.runtime.settings.admin_key_set)
        page = FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})
        if key:
            page.set_cookie(API_KEY_COOKIE, key, httponly=True, samesite="strict")
        return page
