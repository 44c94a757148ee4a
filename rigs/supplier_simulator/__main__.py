"""`python -m rigs.supplier_simulator`: serve on `DROPSHIP_SIMULATOR_HOST`/`_PORT`."""

from __future__ import annotations

import uvicorn

from rigs.supplier_simulator.app import create_app
from rigs.supplier_simulator.settings import SimulatorSettings


def main() -> None:
    settings = SimulatorSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, access_log=False)


if __name__ == "__main__":
    main()
