"""How long a bundle import holds the journal lock, and what other requests wait meanwhile.

    python -m bench.import_lock --db postgresql+psycopg://postgres@127.0.0.1:5432/postgres --items 10000

Creates a database of its own on that server (dropped at the end), imports
one bundle of `--items` seized items (each with a chain of two custody
events) through the API in this process, and reports:

* the journal lock's hold time: from the moment `pg_advisory_xact_lock`
  returns to the end of the commit that releases it (app.core.journal),
* the import's own duration,
* the slowest single write (`POST /cases`) and read (`GET /cases/{id}`)
  made by two other threads during the import.

The threads share this process's interpreter with the import, so their
latencies include waiting for the GIL, as in one server worker.
"""

import argparse
import contextlib
import json
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import sqlalchemy as sa
from fastapi.testclient import TestClient
from sqlalchemy.engine import make_url

import app.core.journal
from app.auth.models import Scope
from app.core import migrate
from app.core.config import Settings
from app.core.db import create_db_engine
from app.core.uow import PostgresDatabase, Tx
from app.main import create_app
from bench import agency_with_key, use_bench_audit_key


class LockClock:
    """Times every hold of the journal lock in this process: the import's, and the others'.

    The unit of work takes the lock in app.core.journal.write(), just before its
    COMMIT, and holds it until the transaction ends: a hold is timed from the
    start of write() to the end of the transaction it wrote for."""

    def __init__(self) -> None:
        self.holds: dict[str, list[float]] = {"import": [], "other": []}
        self.journal_written: list[float] = []  # the import's: from taking the lock to COMMIT
        write = app.core.journal.write
        transaction = PostgresDatabase.transaction
        clock = self

        async def timed_write(tx: Tx, audit_key: bytes) -> None:
            tx.lock_taken = time.perf_counter()  # type: ignore[attr-defined]
            await write(tx, audit_key)

        @contextlib.asynccontextmanager
        async def timed_transaction(database: PostgresDatabase) -> AsyncIterator[Tx]:
            async with transaction(database) as tx:
                yield tx
            taken = getattr(tx, "lock_taken", None)
            if taken is not None:
                held = time.perf_counter() - taken
                imported = any(change.action == "case.imported" for change in tx.changes)
                clock.holds["import" if imported else "other"].append(held)
                if imported:
                    clock.journal_written.append(held)

        app.core.journal.write = timed_write  # type: ignore[assignment]
        PostgresDatabase.transaction = timed_transaction  # type: ignore[assignment,method-assign]


def bundle(items: int, agency_id: str) -> dict[str, Any]:
    locations = [{"id": str(uuid.uuid4()), "label": f"Location {n}", "country": "UA"} for n in range(100)]
    return {
        "bundle_version": 1,
        "case": {"reference": f"BENCH-{uuid.uuid4().hex[:8]}", "title": "Import lock bench"},
        "locations": locations,
        "seized_items": [
            {
                "id": str(uuid.uuid4()),
                "category": "computer",
                "description": f"Item {n}",
                "quantity": 1,
                "location_id": locations[n % len(locations)]["id"],
                "seized_by_agency_id": agency_id,
                "custodian_agency_id": agency_id,
                "custody": [
                    {"action": "seized", "to_agency_id": agency_id, "at": "2025-09-23T07:00:00Z"},
                    {"action": "examined", "at": "2025-09-24T07:00:00Z"},
                ],
            }
            for n in range(items)
        ],
        "detainees": [],
    }


def main() -> None:
    use_bench_audit_key()
    parser = argparse.ArgumentParser(prog="python -m bench.import_lock", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a PostgreSQL server URL (a database is created on it)")
    parser.add_argument("--items", type=int, default=10_000)
    args = parser.parse_args()

    name = f"caseapi_lock_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(args.db, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(args.db).set(database=name).render_as_string(hide_password=False)
    try:
        engine = create_db_engine(url)
        with engine.begin() as conn:
            migrate.upgrade(conn)
        engine.dispose()
        agency_id, key = agency_with_key(url, "BENCH", "Bench", [Scope.read, Scope.write])
        run(url, key, agency_id, args.items)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def run(url: str, key: str, agency_id: str, items: int) -> None:
    headers = {"Authorization": f"Bearer {key}"}
    document = json.dumps(bundle(items, agency_id)).encode()
    clock = LockClock()
    application = create_app(Settings(database_url=url))
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with TestClient(application) as client:
        case_id = client.post(
            "/api/v1/cases", json={"reference": "R-0", "title": "T"}, headers=headers
        ).json()["id"]
        done = threading.Event()
        slowest = {"write": 0.0, "read": 0.0}

        def keep_calling(kind: str) -> None:
            n = 0
            while not done.is_set():
                n += 1
                started = time.perf_counter()
                if kind == "write":
                    body = {"reference": f"W-{kind}-{n}-{uuid.uuid4().hex[:6]}", "title": "T"}
                    response = client.post("/api/v1/cases", json=body, headers=headers)
                else:
                    response = client.get(f"/api/v1/cases/{case_id}", headers=headers)
                response.raise_for_status()
                slowest[kind] = max(slowest[kind], time.perf_counter() - started)

        others = [threading.Thread(target=keep_calling, args=(k,)) for k in ("write", "read")]
        for thread in others:
            thread.start()
        time.sleep(0.5)
        started = time.perf_counter()
        response = client.post(
            "/api/v1/bundles", content=document, headers={**headers, "Content-Type": "application/json"}
        )
        took = time.perf_counter() - started
        time.sleep(0.5)
        done.set()
        for thread in others:
            thread.join()
    assert response.status_code == 201, response.text
    print(f"bundle: {items} items, {len(document) / 2**20:.1f} MiB, imported in {took:.2f} s")
    [held] = clock.holds["import"]
    [written] = clock.journal_written
    print(f"journal lock held by the import: {held * 1000:.1f} ms ({written * 1000:.1f} ms before COMMIT)")
    other = clock.holds["other"]
    print(f"journal lock held by {len(other)} other writes: longest {max(other, default=0) * 1000:.1f} ms")
    print(f"slowest other write during the import: {slowest['write'] * 1000:.0f} ms")
    print(f"slowest other read during the import: {slowest['read'] * 1000:.0f} ms")


if __name__ == "__main__":
    main()
