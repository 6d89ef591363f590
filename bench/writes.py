"""Write scaling under the global journal lock: POSTs per second with 1 and 2 workers.

    python -m bench.writes --db postgresql+psycopg://postgres@127.0.0.1:5432/caseapi_bench --size small

Every write (caseapi's and the reference's) appends to the one audit chain and the one event
sequence under one advisory lock, held from the read of the chains' heads until COMMIT: the
writes of the whole database pass through it one at a time. This measures where that puts
the ceiling:

- `POST /cases/{id}/seized-items` on `caseapi serve --workers 1` and `--workers 2`, and on the
  reference (bench/reference.py) with 1 and 2 workers, interleaved rounds, 32 connections;
- the reference's write transaction called in-process, without HTTP, from 32 tasks over its
  pool of 10 connections: the most writes per second this PostgreSQL takes through the lock;
- how long each write holds the lock (the span between the lock statement and the end of
  COMMIT, timed in that in-process loop), whose inverse is the ceiling.

Then `caseapi audit verify` must pass: the two servers' writes, interleaved, still make one
chain. Results are appended to bench/writes-results.json; bench/RESULTS.md shows the last.
"""

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from bench import reference, use_bench_audit_key
from bench.generate import SIZES, generate
from bench.load import Load
from bench.report import RESULTS_JSON, RESULTS_MD, WRITES_JSON, render
from bench.run import ROOT, Contender, interleaved, log, post_load, servers, start_caseapi, start_reference


async def _in_process(db: str, case_id: str, seconds: float, tasks: int) -> dict[str, Any]:
    """The reference's write transaction without HTTP, and how long each holds the journal lock."""
    app = reference.create_app(db)
    await app.start()
    who = next(iter(app.hashes.values()))
    body = {"category": "computer", "description": "Laptop seized at the search", "quantity": 1}
    held: list[float] = []
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < stop:
            async with app.core.db.acquire() as conn:
                _item, locked_at = await app.write_item(conn, who, uuid.UUID(case_id), body)
                held.append(time.perf_counter() - locked_at)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(tasks)))
    elapsed = time.perf_counter() - t0
    await app.core.db.close()
    held.sort()
    p50 = statistics.median(held)
    return {
        "tasks": tasks,
        "writes": len(held),
        "seconds": round(elapsed, 2),
        "writes_per_s": round(len(held) / elapsed, 1),
        "lock_held_p50_ms": round(p50 * 1000, 2),
        "lock_held_p99_ms": round(held[int(len(held) * 0.99)] * 1000, 2),
        "ceiling_per_s": round(1 / p50, 1),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.writes", description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True, help="PostgreSQL URL of a database of the benchmark's own")
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per measured round and server")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument(
        "--python-load", action="store_true", help="use the Python load generator even if wrk exists"
    )
    args = p.parse_args(argv)
    if not args.db.startswith("postgresql"):
        p.error("the journal lock is PostgreSQL's: --db postgresql+psycopg://...")
    use_bench_audit_key()
    marker = generate(args.db, args.size)
    out: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "size": args.size,
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "settings": {k: getattr(args, k) for k in ("connections", "duration", "rounds", "warmup")},
        "http": {},
    }
    post = post_load(marker)
    probe = Load([f"/api/v1/cases/{marker['post_case_id']}"], headers=post.headers)
    for workers in (1, 2):
        started = servers(
            lambda w=workers: start_caseapi(args.db, w), lambda w=workers: start_reference(args.db, w)
        )
        with started as (app, ref):
            contenders = [Contender("caseapi", app, post, probe), Contender("reference", ref, post, probe)]
            r = interleaved("post_item", contenders, args=args, connections=args.connections)
            del r["rounds"]
            out["http"][f"workers{workers}"] = r
    log("in-process: the reference's write transaction from 32 tasks, no HTTP")
    out["in_process"] = asyncio.run(_in_process(args.db, marker["post_case_id"], args.duration, 32))
    log(f"in-process: {json.dumps(out['in_process'])}")
    verify = subprocess.run(
        [sys.executable, "-c", "import sys; from app.cli import main; main(sys.argv[1:])", "audit", "verify"],
        cwd=ROOT,
        env={**os.environ, "CASEAPI_DATABASE_URL": args.db},
        capture_output=True,
        text=True,
    )
    out["audit_verify"] = {
        "returncode": verify.returncode,
        "output": (verify.stdout + verify.stderr).strip()[-300:],
    }
    log(f"audit verify: {out['audit_verify']}")
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    runs = json.loads(WRITES_JSON.read_text()) if WRITES_JSON.exists() else []
    runs.append(out)
    WRITES_JSON.write_text(json.dumps(runs, indent=1) + "\n")
    if RESULTS_JSON.exists():  # RESULTS.md shows the last run of each
        RESULTS_MD.write_text(render(json.loads(RESULTS_JSON.read_text())))
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
