"""What `caseapi_federation_pending` costs a scrape when a peer is far behind.

    python -m bench.pending --db postgresql+psycopg://postgres@127.0.0.1:5432/caseapi_pending
    python -m bench.pending --db sqlite:///bench/data/pending.db

The database named by `--db` is dropped and made again (PostgreSQL: on its server;
SQLite: the file): migrated and seeded as `caseapi migrate` and `caseapi seed` do, one
agency of the seeded case then hosted by a peer `ua.caseapi`, and the feed grown by
`--events` events behind the peer's cursor in each of `--steps` steps, half of them of
the seeded case (which the peer should mirror), half of 100 other cases (which it
should not). After each step, the count the gauge reads (app.federation.delivery
.pending's statement, the same as `GET /federation/peers` answers): the best of five.
"""

import argparse
import os
import subprocess
import sys
import time
import uuid

import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app.core.db import create_db_engine, utcnow
from app.federation import delivery

PEER = "ua.caseapi"


def fresh(url: str) -> None:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and os.path.exists(parsed.database):
            os.remove(parsed.database)
        return
    server = create_db_engine(parsed.set(database="postgres").render_as_string(hide_password=False))
    with server.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{parsed.database}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{parsed.database}"'))
    server.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pending", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--events", type=int, default=24_000)
    parser.add_argument("--steps", type=int, default=4)
    args = parser.parse_args()
    fresh(args.db)
    env = os.environ | {"CASEAPI_DATABASE_URL": args.db, "CASEAPI_AUDIT_KEY": os.urandom(32).hex()}
    for command in ("migrate", "seed"):
        subprocess.run([sys.executable, "-m", "app", command], env=env, check=True, stdout=subprocess.DEVNULL)
    engine = create_db_engine(args.db)
    with engine.begin() as conn:
        case_id = conn.execute(sa.select(delivery.CASES.c.id)).scalar_one()
        conn.execute(
            delivery.AGENCIES.update().where(delivery.AGENCIES.c.code == "UA-LE").values(home_instance=PEER)
        )
        conn.execute(
            delivery.PEERS.insert().values(
                instance_id=PEER, url="https://ua.example", public_key={}, thumbprint="-", created_at=utcnow()
            )
        )
    others = [uuid.uuid4() for _ in range(100)]
    behind = 0
    for _ in range(args.steps):
        with engine.begin() as conn:
            last = conn.execute(sa.select(sa.func.max(delivery.EVENTS.c.seq))).scalar_one()
            conn.execute(
                delivery.EVENTS.insert(),
                [
                    {
                        "seq": last + n,
                        "type": "location.updated",
                        "resource_type": "location",
                        "resource_id": uuid.uuid4(),
                        "case_id": case_id if n % 2 else others[n % 100],
                        "at": utcnow(),
                    }
                    for n in range(1, args.events + 1)
                ],
            )
        behind += args.events
        with engine.connect() as conn:
            if engine.dialect.name == "postgresql":
                conn.execute(sa.text("ANALYZE"))
            best = float("inf")
            for _ in range(5):
                started = time.perf_counter()
                count = conn.execute(delivery._PENDING, {"after": 0, "peer": PEER}).scalar_one()
                best = min(best, time.perf_counter() - started)
        print(f"{engine.dialect.name}: {behind} events behind, {count} pending, {best * 1000:.1f} ms")
    engine.dispose()


if __name__ == "__main__":
    main()
