"""Where one caseapi worker spends its time, per route, sampled with py-spy under load.

    python -m bench.profile --db URL [--size small] [--seconds 15] [--routes get_case,list_first,post_item]

Starts `caseapi serve --workers 1`, drives one route at a time with 32 connections (or
`--connections`) and records the worker with `py-spy record --format raw`. Prints, per route: the share of
samples by library (where the CPU goes), the functions with the most samples of their
own (file:line) and the app's own frames by inclusive share. Raw stacks are kept under
bench/data/profiles/ (flamegraph.pl or speedscope can open them).
"""

import argparse
import collections
import shutil
import subprocess
import sys
import threading
from pathlib import Path

from bench import use_bench_audit_key
from bench.generate import DATA_DIR, SIZES, default_url, generate
from bench.load import run
from bench.run import ROOT, bench_targets, loads, start_caseapi, wrk_available

BUCKETS = (
    ("app/", "caseapi (app/)"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("sqlmodel/", "SQLModel"),
    ("pydantic", "pydantic"),
    ("fastapi/", "FastAPI"),
    ("starlette/", "Starlette"),
    ("anyio/", "anyio (thread pool)"),
    ("uvicorn/", "uvicorn"),
    ("psycopg", "psycopg"),
    ("json/", "json"),
    ("asyncio/", "asyncio"),
    ("threading.py", "threading"),
)


def bucket(frame: str) -> str:
    for needle, name in BUCKETS:
        if needle in frame:
            return name
    return "other"


def summarize(raw: Path, top: int = 15) -> str:
    stacks: list[tuple[list[str], int]] = []
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    total = sum(n for _, n in stacks) or 1
    by_bucket: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        by_bucket[bucket(frames[-1])] += n
        own[frames[-1]] += n
        for f in {f for f in frames if "(app/" in f or "/main/app/" in f}:
            inclusive[f] += n
    lines = [f"{total} samples", "", "by library (own time):"]
    lines += [f"  {100 * n / total:5.1f}%  {name}" for name, n in by_bucket.most_common()]
    lines += ["", "top functions (own time):"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in own.most_common(top)]
    lines += ["", "caseapi frames (inclusive):"]
    lines += [f"  {100 * n / total:5.1f}%  {f}" for f, n in inclusive.most_common(top)]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__.splitlines()[0])
    p.add_argument("--db")
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--seconds", type=float, default=15)
    p.add_argument("--routes", default="get_case,list_first,post_item")
    p.add_argument("--connections", type=int, default=32, help="1: the cost of a request alone")
    args = p.parse_args(argv)
    use_bench_audit_key()
    if shutil.which("py-spy") is None:
        sys.exit("py-spy is not installed: pip install -r bench/requirements.txt")
    db = args.db or default_url(args.size)
    marker = generate(db, args.size)
    app_loads = loads(marker, bench_targets(db, marker), False)
    out_dir = DATA_DIR / "profiles"
    out_dir.mkdir(parents=True, exist_ok=True)
    app = start_caseapi(db, 1)
    try:
        for route in args.routes.split(","):
            run(app.url, app_loads[route], connections=32, seconds=2, use_wrk=wrk_available())  # warm-up
            raw = out_dir / f"{route}.txt"
            spy = threading.Thread(
                target=subprocess.run,
                args=(
                    [
                        "py-spy",
                        "record",
                        "--pid",
                        str(app.proc.pid),
                        "--duration",
                        str(int(args.seconds)),
                        "--rate",
                        "250",
                        "--format",
                        "raw",
                        "--output",
                        str(raw),
                        "--gil",
                    ],
                ),
                kwargs={"capture_output": True, "cwd": ROOT, "timeout": args.seconds + 60},
            )
            spy.start()
            result = run(
                app.url,
                app_loads[route],
                connections=args.connections,
                seconds=args.seconds,
                use_wrk=wrk_available(),
            )
            spy.join()
            print(
                f"==== {route}: {result['rps']} req/s, p50 {result['p50_ms']} ms, p99 {result['p99_ms']} ms"
            )
            print(summarize(raw) if raw.exists() else "py-spy wrote nothing")
            print()
    finally:
        app.stop()


if __name__ == "__main__":
    main()
