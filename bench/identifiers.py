"""Identifiers at scale: POST /hits of 1 000 phone numbers, and a `q=` that matches nothing.

    python -m bench.identifiers --db postgresql+psycopg://postgres@127.0.0.1:5432/caseapi_bench \
        --size medium --per-case 10

On top of a dataset of bench/generate.py (generated first when missing): `--per-case`
phone identifiers in every case (10 x 100 k cases = 1 M), loaded with COPY once, then
`caseapi serve --workers 1` and, one request at a time (the latency of one search, not
the throughput of many):

- POST /hits with 1 000 distinct numbers as a non-participant agency would send them: 100
  held in cases of every handling code (so the search meets full, summary and hidden
  matches and writes the hidden cases' hit.received events), 900 held nowhere;
- GET /cases?q=<text no case holds>, with the trigram index, then without it (dropped for
  the measurement and rebuilt), and the statement `q=` ran before case folding (ILIKE on
  reference, title and summary) timed on the database directly.

Prints p50/p99 in milliseconds and appends them to bench/identifiers-results.json.
"""

import argparse
import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from app.auth.models import Scope
from app.auth.service import create_client
from app.core.db import create_db_engine
from app.identifiers.normalize import IdentifierKind, normalize
from bench import run_unit, use_bench_audit_key
from bench.generate import generate
from bench.run import log, request, start_caseapi

RESULTS = Path(__file__).resolve().parent / "identifiers-results.json"
SEARCHER = "KG-MVD-CYBER"  # takes part in no generated case: it meets every kind of match
NO_MATCH_Q = "zqxj-no-case-holds-this"


def phone(n: int) -> str:
    """The n-th synthetic Kazakh mobile number in E.164 (+7 70x, valid for phonenumbers)."""
    return f"+770{n // 10_000_000}{n % 10_000_000:07d}"


def load_identifiers(url: str, per_case: int) -> int:
    """per_case phone identifiers in every case, numbered in case order; returns how many exist."""
    engine = create_db_engine(url)
    with engine.connect() as conn:
        have = conn.execute(sa.text("SELECT count(*) FROM identifier")).scalar_one()
        cases = [row[0] for row in conn.execute(sa.text('SELECT id FROM "case" ORDER BY created_at, id'))]
    engine.dispose()
    wanted = len(cases) * per_case
    if have >= wanted:
        log(f"{have} identifiers already in place")
        return have
    assert normalize(IdentifierKind.phone, phone(wanted - 1), country=None) == phone(wanted - 1)
    started = time.monotonic()
    plain = url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(plain) as conn, conn.cursor() as cur:
        cur.execute("TRUNCATE identifier")
        with cur.copy(
            "COPY identifier (id, case_id, kind, value, normalized, version, created_at) FROM STDIN"
        ) as copy:
            n = 0
            now = datetime.now(UTC)
            for case_id in cases:
                for _ in range(per_case):
                    number = phone(n)
                    copy.write_row((f"{n:032x}", case_id, "phone", number, number, 1, now))
                    n += 1
        conn.commit()
        conn.autocommit = True
        cur.execute("ANALYZE identifier")
    log(f"{wanted} identifiers loaded in {time.monotonic() - started:.0f} s")
    return wanted


def timed(rounds: int, send: Any) -> dict[str, float]:
    samples = []
    for _ in range(rounds):
        started = time.perf_counter()
        send()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return {
        "p50_ms": round(statistics.median(samples), 1),
        "p99_ms": round(samples[min(len(samples) - 1, int(len(samples) * 0.99))], 1),
        "max_ms": round(samples[-1], 1),
        "rounds": rounds,
    }


def main(argv: list[str] | None = None) -> None:
    use_bench_audit_key()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--size", default="medium", choices=["small", "medium", "large"])
    parser.add_argument("--per-case", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=50)
    args = parser.parse_args(argv)

    generate(args.db, args.size)
    total = load_identifiers(args.db, args.per_case)
    _, key = run_unit(
        args.db, lambda tx: create_client(tx, agency_code=SEARCHER, name="bench hits", scopes=(Scope.read,))
    )
    engine = create_db_engine(args.db)
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    rng = random.Random(20251123)
    held = rng.sample(range(total), 100)
    items = [{"kind": "phone", "value": phone(n)} for n in held]
    items += [{"kind": "phone", "value": phone(total + n)} for n in range(900)]
    rng.shuffle(items)
    body = json.dumps({"items": items}).encode()

    server = start_caseapi(args.db, workers=1)
    results: dict[str, Any] = {"at": datetime.now(UTC).isoformat(), "db": args.db.split("://")[0]}
    try:
        with engine.connect() as conn:
            results["cases"] = conn.execute(sa.text('SELECT count(*) FROM "case"')).scalar_one()
        results["identifiers"] = total

        def hits() -> None:
            status, answer, _ = request(server.port, "POST", "/api/v1/hits", headers, body)
            assert status == 200, answer[:300]

        def no_match() -> None:
            status, answer, _ = request(server.port, "GET", f"/api/v1/cases?q={NO_MATCH_Q}", headers)
            assert status == 200 and json.loads(answer)["items"] == [], answer[:300]

        timed(5, hits)
        results["hits_1000_phones"] = timed(args.rounds, hits)
        log(f"POST /hits, 1 000 phones: {results['hits_1000_phones']}")
        timed(5, no_match)
        results["q_no_match_trigram"] = timed(args.rounds * 4, no_match)
        log(f"GET /cases?q=<no match>, trigram index: {results['q_no_match_trigram']}")
        with engine.begin() as conn:
            definition = conn.execute(
                sa.text("SELECT indexdef FROM pg_indexes WHERE indexname = 'ix_case_search_text_trgm'")
            ).scalar_one()
            conn.execute(sa.text("DROP INDEX ix_case_search_text_trgm"))
        try:
            timed(2, no_match)
            results["q_no_match_no_index"] = timed(args.rounds, no_match)
            log(f"GET /cases?q=<no match>, no index: {results['q_no_match_no_index']}")
        finally:
            with engine.begin() as conn:
                conn.execute(sa.text(definition))
        old = sa.text(
            'SELECT id FROM "case" WHERE reference ILIKE :p OR title ILIKE :p OR summary ILIKE :p '
            "ORDER BY created_at, id LIMIT 51"
        )
        with engine.connect() as conn:

            def before() -> None:
                conn.execute(old, {"p": f"%{NO_MATCH_Q}%"}).all()

            timed(2, before)
            results["q_no_match_before_sql_only"] = timed(args.rounds, before)
        log(f"the statement before (ILIKE on 3 columns, SQL only): {results['q_no_match_before_sql_only']}")
    finally:
        server.stop()
        engine.dispose()
    runs = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps([*runs, results], indent=2) + "\n")
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
