"""Webhook delivery throughput: N events to M subscribers, timed.

    python -m bench.webhooks                       # SQLite, a file under bench/data/
    python -m bench.webhooks --db postgresql+psycopg://postgres@127.0.0.1:5432/caseapi_bench_hooks

Builds a fresh database (the PostgreSQL one named by --db is dropped and
recreated: give it one of its own), writes --events feed events of a case
that the subscribing agency leads, subscribes --subscribers URLs of a local
receiver (another process, answering 200 at once), then times --processes
deliverers (each what `caseapi deliver --once` runs, forked once the code
is loaded) until every subscriber has every event, and checks that each got
them all, once each, in feed order.
"""

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from multiprocessing.connection import Connection
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import make_url

import app.models  # noqa: F401  (every table, for the journal's writes)
from app.agencies.models import AgencyCreate, AgencyKind
from app.agencies.service import create_agency
from app.auth.models import Scope
from app.auth.service import Principal, create_client
from app.cases.models import CaseCreate
from app.cases.service import create_case
from app.core import migrate
from app.core.config import Settings
from app.core.db import create_db_engine
from app.core.journal import CLI, record
from app.core.secrets import audit_key
from app.core.uow import Tx, run_with_database
from app.webhooks import service
from app.webhooks.delivery import Deliverer
from app.webhooks.models import SubscriptionCreate
from bench import run_unit, use_bench_audit_key

DATA_DIR = Path(__file__).resolve().parent / "data"


# ---- the receiver: a minimal HTTP/1.1 server, so that it costs little next to the deliverer ----


class _Receiver(asyncio.Protocol):
    def __init__(self, seen: dict[str, list[int]]) -> None:
        self.seen = seen
        self.buffer = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            lines = head.split(b"\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            if len(rest) < length:
                return
            body, self.buffer = rest[:length], rest[length:]
            path = lines[0].split(b" ")[1].decode()
            self.seen.setdefault(path, []).append(json.loads(body)["seq"])
            self.transport.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")  # type: ignore[attr-defined]


def _receive(port_out: Connection, results: Connection) -> None:
    async def main() -> None:
        seen: dict[str, list[int]] = {}
        server = await asyncio.get_running_loop().create_server(lambda: _Receiver(seen), "127.0.0.1", 0)
        port_out.send(server.sockets[0].getsockname()[1])
        await asyncio.get_running_loop().run_in_executor(None, results.recv)  # "report"
        results.send(seen)
        server.close()

    asyncio.run(main())


# ---- the database ----


def _fresh_database(url: str | None) -> str:
    if url is None or url.startswith("sqlite"):
        DATA_DIR.mkdir(parents=True, exist_ok=True)
        path = Path(tempfile.mkdtemp(dir=DATA_DIR)) / "webhooks.db"
        return f"sqlite:///{path}"
    target = make_url(url)
    admin = sa.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{target.database}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{target.database}"')
    admin.dispose()
    return url


def _seed(settings: Settings, *, events: int, urls: list[str]) -> None:
    """An agency with a live key (an agency without one gets no webhooks:
    app.webhooks.lifecycle), its subscriptions, a case and `events` changes to deliver."""

    async def work(tx: Tx) -> None:
        data = AgencyCreate(
            code="KZ-MVD", name="Ministry of Interior of Kazakhstan", kind=AgencyKind.ministry
        )
        agency = await create_agency(tx, None, data)
        client, _ = await create_client(tx, agency_code=agency.code, name="bench", scopes=[Scope.admin])
        admin = Principal(client_id=client.id, agency_id=agency.id, parent_agency_id=None, scopes=frozenset())
        for url in urls:
            await service.create_subscription(tx, admin, SubscriptionCreate(url=url), settings)
        title = "Call centre in Kyiv"
        case = await create_case(tx, admin, CaseCreate(reference="KZ-2025-KYIV", title=title))
        for _ in range(events):
            record(
                tx,
                CLI,
                action="seized_item.created",
                resource_type="seized_item",
                resource_id=uuid.uuid4(),
                case_id=case.id,
            )

    run_unit(settings.database_url, work)


def _deliver(settings: Settings, counts: Connection) -> None:
    cpu = time.process_time()

    attempts = run_with_database(
        settings.database_url,
        lambda database: Deliverer(database, settings).run_once(),
        audit_key=audit_key(settings),
        size=2,
        timeout=settings.pool_timeout_seconds,
    )
    counts.send((attempts, time.process_time() - cpu))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", help="a PostgreSQL URL (dropped and recreated); default: SQLite")
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--subscribers", type=int, default=10)
    parser.add_argument("--processes", type=int, default=1, help="deliverers at once (default 1)")
    args = parser.parse_args()

    port_in, port_out = multiprocessing.Pipe()
    results, results_remote = multiprocessing.Pipe()
    receiver = multiprocessing.Process(target=_receive, args=(port_out, results_remote), daemon=True)
    receiver.start()
    port = port_in.recv()

    url = _fresh_database(args.db)
    use_bench_audit_key()
    # One agency subscribes here: it may take every delivery slot.
    settings = Settings(database_url=url, webhook_allow_private=True, webhook_agency_concurrency=500)
    engine = create_db_engine(url)
    with engine.begin() as conn:
        migrate.upgrade(conn)
    urls = [f"http://127.0.0.1:{port}/hook/{n}" for n in range(args.subscribers)]
    _seed(settings, events=args.events, urls=urls)

    engine.dispose()  # the deliverers open their own connections
    counts, counts_remote = multiprocessing.Pipe()
    deliverers = [
        multiprocessing.Process(target=_deliver, args=(settings, counts_remote))
        for _ in range(args.processes)
    ]
    started = time.perf_counter()
    for process in deliverers:
        process.start()
    done = [counts.recv() for _ in deliverers]
    elapsed = time.perf_counter() - started
    for process in deliverers:
        process.join()
    attempts, cpu = sum(a for a, _ in done), sum(c for _, c in done)

    results.send("report")
    seen: dict[str, list[int]] = results.recv()
    receiver.join(timeout=5)
    expected = args.events + args.subscribers  # each also gets the subscription.created events
    complete = all(
        seqs == sorted(set(seqs)) and len(seqs) == expected
        for seqs in (seen.get(f"/hook/{n}", []) for n in range(args.subscribers))
    )
    backend = engine.dialect.name
    print(
        f"{backend}: {attempts} deliveries ({args.events} events + {args.subscribers} subscription events "
        f"to each of {args.subscribers} subscribers) by {args.processes} deliverer(s) in {elapsed:.2f} s "
        f"({cpu:.2f} s of CPU; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores) "
        f"= {attempts / elapsed:.0f}/s; "
        f"every subscriber got every event once, in order: {complete}"
    )
    if not complete:
        sys.exit(1)


if __name__ == "__main__":
    main()
