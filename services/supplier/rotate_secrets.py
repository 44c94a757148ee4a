"""Seal supplier credentials again under the active key.

Run `python -m services.supplier.rotate_secrets`.

Part of the PII key rotation runbook (README): with `DROPSHIP_PII_KEY=new:KEY,old:KEY`
set and the services restarted, run this and `python -m services.order.rotate_pii`; once
both report 0 remaining, drop the old key from the keyring.
"""

from __future__ import annotations

import asyncio

from services.supplier.handlers.secrets import rotate_credentials
from services.supplier.settings import SupplierSettings
from services.supplier.store import Sealer, SupplierDirectory, SupplierUnitOfWork
from shared.db import create_engine, session_factory


async def main() -> int:
    settings = SupplierSettings()
    cipher = settings.cipher()
    engine = create_engine(settings.db_url)
    try:
        directory = SupplierDirectory(Sealer.with_cipher(cipher), ttl_s=0)
        uow = SupplierUnitOfWork(session_factory(engine), directory=directory)
        changed, remaining = await rotate_credentials(uow)
        print(
            f"re-sealed the credentials of {changed} supplier(s) under key "
            f"{cipher.active_kid!r}; {remaining} remaining"
        )
    finally:
        await engine.dispose()
    return 0 if remaining == 0 else 1


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
