"""CPU per request of one route, in process: the ASGI app called directly, with no server,
no load generator and no network, so that what is measured is caseapi's own work.

    python -m bench.cpu --db postgresql+psycopg://postgres@127.0.0.1:5432/caseapi_bench [--path PATH]

Runs on the dataset `python -m bench.run` generated (its marker file gives a key), with
`--concurrency` requests at once on one event loop (uvloop), and prints the process's CPU
time per request. Compare runs with a setting on and off (`CASEAPI_REQUEST_LOG=false`), or
with `--profile` for cProfile's view. CPU time, not wall time: steadier on a shared machine.
"""

import argparse
import asyncio
import cProfile
import json
import os
import pstats
import time
from typing import Any

import sqlalchemy as sa
import uvloop

from bench import use_bench_audit_key
from bench.generate import marker_path


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.cpu", description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="the benchmark's database (bench.run generated it)")
    parser.add_argument("--path", default="/api/v1/cases/{id}", help="{id}: a case the key's agency leads")
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument(
        "--profile", action="store_true", help="print cProfile's 40 heaviest by cumulative time"
    )
    args = parser.parse_args()
    use_bench_audit_key()
    os.environ["CASEAPI_DATABASE_URL"] = args.db
    marker = json.loads(marker_path(args.db).read_text())
    key = marker["clients"]["bench-ro"]["key"]
    engine = sa.create_engine(args.db)
    with engine.connect() as conn:
        case_ids = [
            str(row[0])
            for row in conn.execute(
                sa.text("SELECT case_id FROM participant WHERE agency_id = :a LIMIT 200"),
                {"a": marker["agency_id"]},
            )
        ]
    engine.dispose()

    from app.main import create_app

    app = create_app()

    async def one(n: int) -> None:
        path = args.path.replace("{id}", case_ids[n % len(case_ids)])
        route, _, query = path.partition("?")
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": route,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {key}".encode())],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])

        await app(scope, receive, send)
        if statuses != [200]:
            raise SystemExit(f"{path} answered {statuses}")

    async def run() -> None:
        async with app.router.lifespan_context(app):
            for n in range(200):  # statements prepared, caches warm
                await one(n)
            slots = asyncio.Semaphore(args.concurrency)

            async def limited(n: int) -> None:
                async with slots:
                    await one(n)

            profile = cProfile.Profile() if args.profile else None
            cpu = time.process_time()
            if profile:
                profile.enable()
            await asyncio.gather(*(limited(n) for n in range(args.requests)))
            if profile:
                profile.disable()
            spent = time.process_time() - cpu
            print(f"{args.path}: {spent / args.requests * 1e6:.0f} us of CPU per request ({args.requests})")
            if profile:
                pstats.Stats(profile).sort_stats("cumulative").print_stats(40)

    uvloop.run(run())


if __name__ == "__main__":
    main()
