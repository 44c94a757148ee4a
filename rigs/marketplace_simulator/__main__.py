"""`python -m rigs.marketplace_simulator`: serve on `DROPSHIP_MARKETPLACE_SIM_PORT` (8011)."""

from __future__ import annotations

import uvicorn

from rigs.marketplace_simulator.app import MarketplaceSimSettings, create_app


def main() -> None:
    settings = MarketplaceSimSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, access_log=False)


if __name__ == "__main__":
    main()
