"""Re-encrypt customer PII and shop secrets under the active key.

Run `python -m services.order.rotate_pii`.

Rotation: put the new key first in `DROPSHIP_PII_KEY` (`new:KEY,old:KEY`) of every
service, restart them (they then write with the new key and read both), run this command
and `python -m services.supplier.rotate_secrets` (supplier credentials), and once both
report 0 remaining, drop the old key from the keyring.
"""

from __future__ import annotations

import asyncio

from services.order.handlers import rotate_pii
from services.order.settings import OrderSettings
from services.order.shops.handlers import reseal_shop_secrets
from services.order.store import OrderUnitOfWork
from shared.db import create_engine, session_factory


async def main() -> int:
    settings = OrderSettings()
    engine = create_engine(settings.db_url)
    try:
        uow = OrderUnitOfWork(session_factory(engine), cipher=settings.cipher())
        changed = await rotate_pii(uow)
        shops = await reseal_shop_secrets(uow)
        # a second pass: rows written under the old key by an instance not yet restarted
        remaining = await rotate_pii(uow) + await reseal_shop_secrets(uow)
        print(
            f"re-encrypted {changed} order(s) and {shops} shop(s) under key "
            f"{settings.cipher().active_kid!r}; {remaining} more in a second pass"
        )
    finally:
        await engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
