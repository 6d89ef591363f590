"""Does a bundle import stall the others? Reads and writes elsewhere, while 10 000-item bundles import.

    python -m bench.import_stall --db postgresql+psycopg://postgres@127.0.0.1:5432/caseapi_bench --size medium

Starts `caseapi serve --workers 1` on the benchmark's dataset and exports its 10 000-item case
as a bundle once. Then, twice for `--seconds` each, first with nothing else going on (idle),
then while that bundle is imported again and again, one import after the other (under a new
reference each time):

* reads of other cases: GET /cases/{id} with `--connections` connections (wrk when installed),
  p50 and p99. One by default: each connection is a closed loop, and on a 2-core machine
  four of them already keep both cores busy, so that p99 would measure queueing for the CPU
  rather than what the import does to a worker;
* writes to another case: single POST /cases/{id}/seized-items from one client, one after the
  other, each one's latency (p50, p99, max).

The goal (issue: performance): during the imports, reads keep p99 within 2x their idle p99 and
no write waits more than 200 ms. Prints the table and writes bench/import-stall-results.json.
"""

import argparse
import json
import statistics
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from bench import use_bench_audit_key
from bench.generate import SIZES, default_url, generate
from bench.load import run, wrk_available
from bench.run import ITEM_BODY, bench_targets, loads, log, request, start_caseapi

RESULTS = Path(__file__).with_name("import-stall-results.json")


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


class Writer(threading.Thread):
    """Single POSTs to one case, one after the other, until stopped; their latencies in ms."""

    def __init__(self, port: int, path: str, headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.port, self.path, self.headers = port, path, headers
        self.latencies: list[float] = []
        self.failures = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            t0 = time.perf_counter()
            status, _, _ = request(self.port, "POST", self.path, self.headers, ITEM_BODY, timeout=60)
            self.latencies.append((time.perf_counter() - t0) * 1000)
            self.failures += status != 201

    def summary(self) -> dict[str, Any]:
        ms = self.latencies
        return {
            "writes": len(ms),
            "failures": self.failures,
            "p50_ms": round(statistics.median(ms), 1) if ms else None,
            "p99_ms": round(_percentile(ms, 0.99), 1) if ms else None,
            "max_ms": round(max(ms), 1) if ms else None,
        }


class Importer(threading.Thread):
    """POST /bundles of the same document under new references, one after the other."""

    def __init__(self, port: int, doc: dict[str, Any], headers: dict[str, str]) -> None:
        super().__init__(daemon=True)
        self.port, self.doc, self.headers = port, doc, headers
        self.seconds: list[float] = []
        self.statuses: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        # Serialised once: dumping 4 MB of JSON here would hold this process's GIL
        # for a tenth of a second, and the Writer's latencies would count it.
        marker = f"STALL-{uuid.uuid4().hex[:12]}"
        self.doc["case"]["reference"] = marker
        template = json.dumps(self.doc).encode()
        while not self.stop.is_set():
            payload = template.replace(marker.encode(), f"STALL-{uuid.uuid4().hex[:12]}".encode(), 1)
            t0 = time.perf_counter()
            status, _, _ = request(self.port, "POST", "/api/v1/bundles", self.headers, payload)
            self.seconds.append(round(time.perf_counter() - t0, 3))
            self.statuses.append(status)


def phase(
    app: Any,
    reads: Any,
    write_path: str,
    auth: dict[str, str],
    args: argparse.Namespace,
    doc: dict[str, Any] | None,
) -> dict[str, Any]:
    json_headers = {**auth, "Content-Type": "application/json"}
    writer = Writer(app.port, write_path, json_headers)
    importer = Importer(app.port, doc, json_headers) if doc is not None else None
    if importer is not None:
        importer.start()
        time.sleep(0.5)  # the first import under way
    writer.start()
    read = run(app.url, reads, connections=args.connections, seconds=args.seconds, use_wrk=wrk_available())
    writer.stop.set()
    writer.join()
    out = {"reads": read, "writes": writer.summary()}
    if importer is not None:
        importer.stop.set()
        importer.join()
        out["imports"] = {
            "count": len(importer.seconds),
            "seconds": importer.seconds,
            "statuses": sorted(set(importer.statuses)),
        }
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.import_stall", description=__doc__.splitlines()[0])
    p.add_argument("--db")
    p.add_argument("--size", choices=sorted(SIZES), default="medium")
    p.add_argument("--seconds", type=float, default=20)
    p.add_argument("--connections", type=int, default=1, help="connections of the reads")
    args = p.parse_args(argv)
    use_bench_audit_key()
    db = args.db or default_url(args.size)
    marker = generate(db, args.size)
    reads = loads(marker, bench_targets(db, marker), False)["get_case"]
    auth = {"Authorization": f"Bearer {marker['clients']['bench-rw']['key']}"}
    write_path = f"/api/v1/cases/{marker['post_case_id']}/seized-items"
    app = start_caseapi(db, 1)
    try:
        status, body, _ = request(app.port, "GET", f"/api/v1/cases/{marker['bundle_case_id']}/bundle", auth)
        assert status == 200, f"the bundle export answered {status}"
        doc = json.loads(body)
        run(app.url, reads, connections=args.connections, seconds=2, use_wrk=wrk_available())  # warm-up
        idle = phase(app, reads, write_path, auth, args, None)
        busy = phase(app, reads, write_path, auth, args, doc)
    finally:
        app.stop()
    ratio = busy["reads"]["p99_ms"] / idle["reads"]["p99_ms"]
    result = {
        "at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "size": args.size,
        "items_per_bundle": len(doc["seized_items"]),
        "seconds": args.seconds,
        "read_connections": args.connections,
        "idle": idle,
        "importing": busy,
        "reads_p99_ratio": round(ratio, 2),
        "goal_reads": ratio <= 2,
        "goal_writes": busy["writes"]["max_ms"] is not None and busy["writes"]["max_ms"] <= 200,
    }
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print("| | reads p50 / p99 ms | writes p50 / p99 / max ms | imports |")
    print("|---|---:|---:|---:|")
    for name, r in (("idle", idle), ("importing", busy)):
        w = r["writes"]
        imports = r.get("imports", {})
        print(
            f"| {name} | {r['reads']['p50_ms']} / {r['reads']['p99_ms']} | "
            f"{w['p50_ms']} / {w['p99_ms']} / {w['max_ms']} | "
            f"{imports.get('count', 0)} ({', '.join(str(s) for s in imports.get('seconds', []))} s) |"
        )
    log(
        f"reads p99 during imports / idle: {result['reads_p99_ratio']} (goal <= 2): "
        f"{'met' if result['goal_reads'] else 'not met'}; slowest write {busy['writes']['max_ms']} ms "
        f"(goal <= 200): {'met' if result['goal_writes'] else 'not met'}"
    )


if __name__ == "__main__":
    main()
