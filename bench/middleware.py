"""What the observability middleware costs on the hottest route, measured in one run.

    python -m bench.middleware --db postgresql+psycopg://postgres@127.0.0.1:5432/caseapi_bench --rounds 5

Three instances on the same dataset, each one uvicorn worker started the same way:
`bare` (the app without the request id, metrics and log line of its middleware,
app.core.gate, and without a rate limit),
`observed` (the app as it ships) and `limited` (as it ships, with a rate limit far above
the load, so that every request goes through the in-process limiter). GET
/api/v1/cases/{id} is driven on each in interleaved rounds (bench.run.interleaved);
the ratios to `bare` are what the middleware costs. On a shared machine that difference
is smaller than the noise, so the middleware is also timed alone, called directly around
an app that does nothing. Writes bench/MIDDLEWARE.md.
"""

import argparse
import asyncio
import os
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from fastapi import FastAPI
from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.gate import Gate
from app.core.observability.metrics import Metrics
from app.core.observability.middleware import RequestObserver
from app.core.ratelimit.middleware import RateLimit
from app.core.ratelimit.rate import Rate
from app.core.ratelimit.service import LocalLimiter
from app.main import create_app
from bench import use_bench_audit_key
from bench.generate import default_url, generate
from bench.load import HOST, Load
from bench.run import Contender, Server, bench_targets, free_port, interleaved, loads, log, servers

RESULTS = Path(__file__).resolve().parent / "MIDDLEWARE.md"


class _Unobserved(Gate):
    """The app's middleware (app.core.gate) without its observation: admission,
    limits and the hot routes only."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


def create_bare_app() -> FastAPI:
    """The shipped app minus the observability and rate-limit middleware (the baseline)."""
    application = create_app()
    application.user_middleware = [
        Middleware(_Unobserved, *m.args, **{**m.kwargs, "limiter": None}) if m.cls is Gate else m
        for m in application.user_middleware
    ]
    return application


def start(name: str, factory: str, db: str, extra_env: dict[str, str] | None = None) -> Server:
    port = free_port()
    argv = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        factory,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        "1",
        "--no-server-header",
        "--no-access-log",
    ]
    server = Server(name, argv, {"CASEAPI_DATABASE_URL": db, **(extra_env or {})}, port)
    server.wait_healthy()
    return server


async def _noop(scope: Scope, receive: Receive, send: Send) -> None:
    await send(
        {"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]}
    )
    await send({"type": "http.response.body", "body": b"{}"})


def middleware_alone(load: Load, rounds: int, n: int) -> dict[str, float]:
    """Microseconds per request the middleware itself adds, around an app that does nothing.

    Through the network the difference drowns in the noise of a shared machine; called
    directly, best of `rounds`, it is the CPU time every request pays.
    """
    metrics = Metrics()
    limiter = LocalLimiter(Rate(1_000_000, 1.0))
    stacks: dict[str, ASGIApp] = {
        "bare": _noop,
        "observed": RequestObserver(_noop, metrics, "/api/v1", []),
        "limited": RequestObserver(RateLimit(_noop, limiter, metrics), metrics, "/api/v1", []),
    }
    path = load.paths[0]
    headers = [
        (b"host", b"127.0.0.1:8000"),
        *((k.lower().encode(), v.encode()) for k, v in load.headers.items()),
    ]

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(_: Message) -> None:
        return None

    async def per_request(app: ASGIApp) -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            scope = {
                "type": "http",
                "method": "GET",
                "path": path,
                "headers": headers,
                "client": ("127.0.0.1", 1),
            }
            await app(scope, receive, send)
        return (time.perf_counter() - t0) / n * 1e6

    async def run() -> dict[str, float]:
        best = {name: float("inf") for name in stacks}
        for _ in range(rounds):
            for name, app in stacks.items():
                best[name] = min(best[name], await per_request(app))
        return {name: round(us, 1) for name, us in best.items()}

    return asyncio.run(run())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.middleware", description=__doc__.splitlines()[0])
    p.add_argument("--db", help="database URL (default: an SQLite file under bench/data/)")
    p.add_argument("--size", default="small")
    p.add_argument("--duration", type=float, default=5.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--python-load", action="store_true")
    args = p.parse_args(argv)
    use_bench_audit_key()
    db = args.db or default_url(args.size)
    marker = generate(db, args.size)
    targets = bench_targets(db, marker)
    load = loads(marker, targets, False)["get_case"]
    limited_env = {"CASEAPI_RATE_LIMIT": "1000000/second"}
    results = {}
    with servers(
        lambda: start("bare", "bench.middleware:create_bare_app", db),
        lambda: start("observed", "app.main:create_app", db),
        lambda: start("limited", "app.main:create_app", db, limited_env),
    ) as (bare, observed, limited):
        for name, server in (("observed", observed), ("limited", limited)):
            # In interleaved()'s terms the measured instance is "caseapi" and `bare` the "reference".
            contenders = [Contender("caseapi", server, load, load), Contender("reference", bare, load, load)]
            result = interleaved("get_case", contenders, args=args, connections=args.connections)
            results[name] = result
            log(f"{name} / bare: req/s {result['ratio']['rps']}, p50 {result['ratio']['p50_ms']}")
    alone = middleware_alone(load, rounds=15, n=5000)
    log(f"the middleware alone, µs per request (best of 15): {alone}")
    lines = [
        "# Middleware cost: GET /api/v1/cases/{id}",
        "",
        f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {db.split(':')[0]}, {args.rounds} rounds of "
        f"{args.duration} s at {args.connections} connections, load average {os.getloadavg()[0]:.1f}. "
        "Medians over the rounds; `bare` is the app without the request-id/metrics middleware and "
        "without a rate limit.",
        "",
        "| instance | req/s | p50 ms | p99 ms | bare req/s | bare p50 ms | req/s ratio | p50 ratio |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in results.items():
        a, b, ratio = r["caseapi"], r["reference"], r["ratio"]
        lines.append(
            f"| {name} | {a['rps']} | {a['p50_ms']} | {a['p99_ms']} | {b['rps']} | {b['p50_ms']} "
            f"| {ratio['rps']} | {ratio['p50_ms']} |"
        )
    # One worker serves the load alone: its time per request is 1 / (req/s).
    bare_us = 1e6 / results["observed"]["reference"]["rps"]
    lines += [
        "",
        "The middleware alone (around an app that does nothing, best of 15 rounds of 5 000 requests), "
        f"against the {bare_us:.0f} µs a `bare` worker spends per GET /cases/{{id}} above:",
        "",
        "| instance | µs per request | added by the middleware | share of a GET /cases/{id} |",
        "| --- | --- | --- | --- |",
        *(
            f"| {name} | {us} | {us - alone['bare']:.1f} | {(us - alone['bare']) / bare_us:.1%} |"
            for name, us in alone.items()
        ),
    ]
    for name, r in results.items():
        rounds = [
            (x["rps"], y["rps"])
            for x, y in zip(r["rounds"]["caseapi"], r["rounds"]["reference"], strict=True)
        ]
        lines.append(f"\n{name}: req/s per round ({name}, bare): {rounds}")
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
