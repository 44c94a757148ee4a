"""Run a command with a throwaway PostgreSQL cluster and tansu broker, always stopping both.

    python -m deploy.testenv -- pytest -q

Exports `DROPSHIP_TEST_PG_URL` (an asyncpg URL of the cluster's `postgres` database)
and `DROPSHIP_TEST_KAFKA_BOOTSTRAP` to the command and exits with its status.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

from shared.infra import EmbeddedBroker, PostgresCluster


def main(argv: list[str]) -> int:
    if "--" in argv:
        argv = argv[argv.index("--") + 1 :]
    if not argv:
        raise SystemExit(__doc__)
    pg = PostgresCluster()
    broker = EmbeddedBroker()
    try:
        pg.start()
        broker.start()
        env = dict(os.environ)
        env["DROPSHIP_TEST_PG_URL"] = pg.url()
        env["DROPSHIP_TEST_KAFKA_BOOTSTRAP"] = broker.bootstrap
        print(
            f"testenv: PostgreSQL on {pg.port}, tansu on {broker.port}", file=sys.stderr, flush=True
        )
        child = subprocess.Popen(argv, env=env)
        try:
            return child.wait()
        except KeyboardInterrupt:
            child.send_signal(signal.SIGINT)
            return child.wait()
    finally:
        broker.stop()
        pg.stop()


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
