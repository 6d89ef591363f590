"""What FastAPI itself costs a POST: the reference's write, served by FastAPI with caseapi's middleware.

    python -m bench.floor --db postgresql+psycopg://postgres@127.0.0.1:5432/caseapi_bench --size medium

Serves `POST /api/v1/cases/{id}/seized-items` three ways, one worker each, one after the
other on the benchmark's dataset: caseapi; the reference (bench/reference.py, bare ASGI);
and the floor: a FastAPI app whose route takes the body as caseapi's `SeizedItemCreate`,
behind caseapi's own request-id/metrics, admission and body-size middleware, and writes
with the reference's transaction (its rows, journal and lock, on asyncpg). For each:
req/s at `--connections`, and the worker's CPU per request. The floor is what this stack
(FastAPI, pydantic, our middleware) costs on top of the fastest write: the rest of
caseapi's cost is its own write path.
"""

import argparse
import os
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import orjson
import psutil
from fastapi import FastAPI, Request, Response

from app.core.admission import Admission
from app.core.gate import Gate
from app.core.limits import BodyLimits
from app.core.observability.metrics import Metrics
from app.evidence.models import SeizedItemCreate
from bench import reference, use_bench_audit_key
from bench.generate import SIZES, default_url, generate
from bench.load import run, wrk_available
from bench.run import Server, _uvicorn, bench_targets, free_port, loads, start_caseapi, start_reference

PATH = "/api/v1/cases/{case_id}/seized-items"


def create_app() -> FastAPI:
    ref = reference.create_app()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await ref.start()
        yield
        await ref.db.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post(PATH, status_code=201)
    async def create_item(case_id: uuid.UUID, body: SeizedItemCreate, request: Request) -> Response:
        who = ref.caller(request.scope)
        if who is None:
            return Response(status_code=401)
        async with ref.db.acquire() as conn:
            item, _ = await ref.write_item(conn, who, case_id, body.model_dump(mode="json"))
        headers = {"location": f"/api/v1/seized-items/{item['id']}", "etag": '"1"'}
        return Response(orjson.dumps(item), status_code=201, media_type="application/json", headers=headers)

    # As app.main adds it; no rate limit, as in the benchmark.
    metrics = Metrics()
    app.add_middleware(
        Gate,
        metrics=metrics,
        api_prefix="/api/v1",
        api_routes=[route for route in app.routes if getattr(route, "path", "") == PATH],
        admission=Admission(limit=20, wait_seconds=5.0, waiting=metrics.waiting),
        body_limits=BodyLimits(max_bytes=1024 * 1024),
        router=app.router,
    )
    return app


def start_floor(db: str) -> Server:
    port = free_port()
    argv = _uvicorn("bench.floor:create_app", port, "--factory")
    server = Server("floor", argv, {"CASEAPI_DATABASE_URL": db}, port)
    server.wait_healthy()
    return server


def measure(server: Server, load: Any, connections: int, seconds: float) -> dict[str, Any]:
    run(server.url, load, connections=connections, seconds=2, use_wrk=wrk_available())  # warm-up
    worker = psutil.Process(server.proc.pid)
    before, t0 = worker.cpu_times(), time.perf_counter()
    result = run(server.url, load, connections=connections, seconds=seconds, use_wrk=wrk_available())
    elapsed, after = time.perf_counter() - t0, worker.cpu_times()
    cpu = (after.user + after.system) - (before.user + before.system)
    return {
        "rps": result["rps"],
        "p50_ms": result["p50_ms"],
        "p99_ms": result["p99_ms"],
        "errors": result["errors"],
        "worker_cpu_share": round(cpu / elapsed, 2),
        "cpu_ms_per_request": round(1000 * cpu / max(result["requests"], 1), 2),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.splitlines()[0])
    p.add_argument("--db")
    p.add_argument("--size", choices=sorted(SIZES), default="medium")
    p.add_argument("--seconds", type=float, default=8)
    p.add_argument("--connections", type=int, default=32)
    args = p.parse_args(argv)
    use_bench_audit_key()
    db = args.db or default_url(args.size)
    marker = generate(db, args.size)
    load = loads(marker, bench_targets(db, marker), False)["post_item"]
    out = {}
    for name, start in (
        ("caseapi", lambda: start_caseapi(db, 1)),
        ("reference", lambda: start_reference(db)),
        ("floor", lambda: start_floor(db)),
    ):
        server = start()
        try:
            out[name] = measure(server, load, args.connections, args.seconds)
        finally:
            server.stop()
    print(f"POST {PATH}, {args.connections} connections, load average {os.getloadavg()[0]:.2f}")
    print("| server | req/s | ÷ reference | p50 / p99 ms | worker CPU | CPU ms per POST |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in out.items():
        ratio = r["rps"] / out["reference"]["rps"]
        print(
            f"| {name} | {r['rps']:.1f} | {ratio:.2f} | {r['p50_ms']} / {r['p99_ms']} | "
            f"{100 * r['worker_cpu_share']:.0f} % | {r['cpu_ms_per_request']} |"
        )


if __name__ == "__main__":
    main()
