"""Re-encrypt customer PII under the active key: `python -m services.order.rotate_pii`.

Rotation: put the new key first in `DROPSHIP_PII_KEY` (`new:KEY,old:KEY`), restart the
order service (it then writes with the new key and reads both), run this command, and
once it reports 0 remaining, drop the old key from the keyring.
"""

from __future__ import annotations

import asyncio

from services.order.handlers import rotate_pii
from services.order.settings import OrderSettings
from services.order.store import OrderUnitOfWork
from shared.db import create_engine, session_factory


async def main() -> int:
    settings = OrderSettings()
    engine = create_engine(settings.db_url)
    try:
        uow = OrderUnitOfWork(session_factory(engine), cipher=settings.cipher())
        changed = await rotate_pii(uow)
        print(f"re-encrypted {changed} order(s) under key {settings.cipher().active_kid!r}")
    finally:
        await engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
