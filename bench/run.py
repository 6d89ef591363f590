"""The benchmark, in one command.

    python -m bench.run --db postgresql+psycopg://postgres@127.0.0.1:5432/caseapi_bench --size small

Generates the dataset (or reuses it), starts `caseapi serve --workers 1` and the
hand-written reference (bench/reference.py) on free 127.0.0.1 ports, and drives both
from a separate load process (wrk when installed, a bounded Python client otherwise)
in interleaved rounds, warm-up discarded. Then: a walk over every page of GET /cases
with the worker's RSS after it (before the bundle import, whose 8 MB document leaves
the worker larger), a 10 000-item bundle import against 10 000 single POSTs, 256
connections, and `--workers 2`. Writes bench/results.json (every run kept,
keyed by backend and size) and bench/RESULTS.md.
"""

import argparse
import contextlib
import http.client
import json
import os
import platform
import socket
import sqlite3
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from app.cases.models import Case
from app.core.config import Settings
from app.core.db import create_db_engine
from app.core.pagination import encode_cursor
from app.core.secrets import cursor_key
from app.participants.models import Participant
from bench import reference, use_bench_audit_key
from bench.generate import DATA_DIR, SIZES, generate
from bench.load import HOST, Load, run, run_python, wrk_available
from bench.report import RESULTS_JSON, RESULTS_MD, ROUTES, save

BENCH_DIR = Path(__file__).resolve().parent
ROOT = BENCH_DIR.parent
ITEM_BODY = b'{"category":"computer","description":"Laptop seized at the search","quantity":1}'


def log(msg: str) -> None:
    print(f"[bench {datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


# ---- servers ---------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(
        self,
        name: str,
        argv: list[str],
        env: dict[str, str],
        port: int,
        health: tuple[str, dict[str, str]] = ("/health", {}),
    ) -> None:
        self.name, self.port, self.health = name, port, health
        self.url = f"http://{HOST}:{port}"
        logs = DATA_DIR / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log = open(logs / f"{name}.log", "w")  # noqa: SIM115  (closed in stop())
        self.proc = subprocess.Popen(
            argv,
            env={**os.environ, **env},
            cwd=ROOT,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_healthy(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log.name}")
            try:
                status, _, _ = request(self.port, "GET", *self.health)
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer /health within {seconds} s")

    def workers(self) -> list[psutil.Process]:
        """The processes that serve requests: the children of a supervisor, else the process itself."""
        root = psutil.Process(self.proc.pid)
        children = [
            c for c in root.children(recursive=True) if "resource_tracker" not in " ".join(c.cmdline())
        ]
        return children or [root]

    def rss_mb(self) -> float:
        try:
            return round(max(p.memory_info().rss for p in self.workers()) / 2**20, 1)
        except psutil.Error:
            return float("nan")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()


def start_caseapi(db: str, workers: int) -> Server:
    port = free_port()
    env = {"CASEAPI_DATABASE_URL": db}
    # `caseapi serve`, run by this interpreter (app.cli has no __main__ guard, so call main() directly).
    argv = [
        sys.executable,
        "-c",
        "import sys; from app.cli import main; main(sys.argv[1:])",
        "serve",
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
    ]
    server = Server(f"caseapi-w{workers}", argv, env, port)
    server.wait_healthy()
    return server


def _uvicorn(app: str, port: int, *extra: str, workers: int = 1) -> list[str]:
    # The reference and the anchor are served alike: no access log.
    return [
        sys.executable,
        "-m",
        "uvicorn",
        *extra,
        app,
        "--host",
        HOST,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
        "--no-server-header",
    ]


def start_reference(db: str, workers: int = 1) -> Server:
    port = free_port()
    argv = _uvicorn("bench.reference:create_app", port, "--factory", workers=workers)
    server = Server(f"reference-w{workers}", argv, {"CASEAPI_DATABASE_URL": db}, port)
    server.wait_healthy()
    return server


def start_anchor(path: Path, db: str, marker: dict[str, Any], case_id: str) -> Server:
    """The hand-written yardstick kept outside the repository (its path is given, never copied in)."""
    port = free_port()
    argv = _uvicorn(f"{path.stem}:app", port, "--app-dir", str(path.parent))
    key = marker["clients"]["bench-rw"]["key"]
    env = {
        "BENCH_DSN": make_url(db).set(drivername="postgresql").render_as_string(hide_password=False),
        "BENCH_KEY": key,
        "BENCH_AGENCY_ID": marker["agency_id"],
    }
    # It has no /health: a case it serves is its health.
    health = (f"/api/v1/cases/{case_id}", {"Authorization": f"Bearer {key}"})
    server = Server("anchor", argv, env, port, health)
    server.wait_healthy()
    return server


def request(
    port: int,
    method: str,
    path: str,
    headers: dict[str, str],
    body: bytes | None = None,
    timeout: float = 600,
) -> tuple[int, bytes, dict[str, str]]:
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


# ---- what the load sends ---------------------------------------------------------------------------------


def _plain(u: Any) -> str:
    return str(uuid.UUID(str(u)))


def bench_targets(db: str, marker: dict[str, Any]) -> dict[str, Any]:
    engine = create_db_engine(db)
    agency = uuid.UUID(marker["agency_id"])
    with engine.connect() as conn:
        ids = conn.execute(
            sa.select(Case.id)
            .join(Participant, Participant.case_id == Case.id)
            .where(Participant.agency_id == agency, Case.reference.like("BENCH-0%"))
            .order_by(Case.id)
            .limit(1000)
        ).scalars()
        ids = [_plain(i) for i in ids]
        others = ~sa.exists().where(Participant.case_id == Case.id, Participant.agency_id == agency)
        public = Case.handling_code.in_(["TLP:GREEN", "TLP:CLEAR"])
        hidden = conn.execute(sa.select(Case.id).where(~public, others).limit(1)).scalar_one()
        summary = conn.execute(sa.select(Case.id).where(public, others).limit(1)).scalar_one()
        middle = f"BENCH-{marker['cases'] // 2:07d}"
        deep = conn.execute(sa.select(Case.created_at, Case.id).where(Case.reference == middle)).one()
    engine.dispose()
    return {
        "case_ids": ids,
        "hidden_id": _plain(hidden),
        "summary_id": _plain(summary),
        # Signed as the served app signs it: its settings come from this environment.
        "deep_app": encode_cursor("cases", [deep.created_at, deep.id], cursor_key(Settings())),
        "deep_ref": reference.encode_cursor([deep.created_at.isoformat(), str(deep.id)]),
    }


def loads(marker: dict[str, Any], targets: dict[str, Any], for_reference: bool) -> dict[str, Load]:
    auth = {"Authorization": f"Bearer {marker['clients']['bench-rw']['key']}"}
    ids = targets["case_ids"]
    deep = targets["deep_ref" if for_reference else "deep_app"]
    return {
        "get_case": Load([f"/api/v1/cases/{i}" for i in ids], headers=auth),
        "list_first": Load(["/api/v1/cases"], headers=auth),
        "list_deep": Load([f"/api/v1/cases?cursor={deep}"], headers=auth),
        "items": Load([f"/api/v1/cases/{i}/seized-items" for i in ids], headers=auth),
        "events": Load(["/api/v1/events"], headers=auth),
        "post_item": post_load(marker),
    }


def post_load(marker: dict[str, Any]) -> Load:
    """POST /cases/{id}/seized-items to the case kept for it, as the read-write client."""
    auth = {"Authorization": f"Bearer {marker['clients']['bench-rw']['key']}"}
    return Load(
        [f"/api/v1/cases/{marker['post_case_id']}/seized-items"],
        method="POST",
        body=ITEM_BODY,
        headers={**auth, "Content-Type": "application/json"},
    )


# ---- measuring -------------------------------------------------------------------------------------------


def _median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def aggregate(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rps": _median([r["rps"] for r in rounds]),
        "p50_ms": _median([r["p50_ms"] for r in rounds]),
        "p99_ms": _median([r["p99_ms"] for r in rounds]),
        "max_ms": max((r["max_ms"] or 0) for r in rounds) or None,
        "stalled_rounds": sum(1 for r in rounds if r["requests"] == 0),
        "timeouts": sum(r["timeouts"] for r in rounds),
        "errors": sum(r["errors"] for r in rounds),
        "requests": sum(r["requests"] for r in rounds),
        "rss_mb": max(r["rss_mb"] for r in rounds),
        "codes": _sum_codes(rounds),
    }


def _sum_codes(rounds: list[dict[str, Any]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in rounds:
        for k, v in r["codes"].items():
            out[k] = out.get(k, 0) + v
    return out


def _div(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def ratios(app: dict[str, Any], ref: dict[str, Any]) -> dict[str, float | None]:
    return {k: _div(app[k], ref[k]) for k in ("rps", "p50_ms", "p99_ms", "rss_mb")}


@dataclass
class Contender:
    """One server in a route's rounds: what it is sent, and the GET that tells it has drained."""

    name: str
    server: Server
    load: Load
    probe: Load


def interleaved(
    route: str, contenders: list[Contender], *, args: argparse.Namespace, connections: int
) -> dict[str, Any]:
    """Warm-up (discarded), then rounds in which each server goes first in turn; medians over rounds.

    `ratio` is caseapi ÷ the yardstick: the anchor where it serves the route, else the reference;
    `vs_yardstick` gives every server's req/s as that ratio.
    """
    use_wrk = not args.python_load and wrk_available()
    for c in contenders:
        run(c.server.url, c.load, connections=connections, seconds=args.warmup, use_wrk=use_wrk)
        drain(c.server, c.probe)
    data: dict[str, list[dict[str, Any]]] = {c.name: [] for c in contenders}
    for n in range(args.rounds):
        shift = n % len(contenders)
        for c in contenders[shift:] + contenders[:shift]:
            r = run(c.server.url, c.load, connections=connections, seconds=args.duration, use_wrk=use_wrk)
            r["rss_mb"] = c.server.rss_mb()
            # Requests cut off at the end of a round may still be running (in the server or the
            # database): wait until it answers normally, so that they do not weigh on the next round.
            r["drain_seconds"] = drain(c.server, c.probe)
            data[c.name].append(r)
    result: dict[str, Any] = {"route": ROUTES.get(route, route), "connections": connections}
    result.update({name: aggregate(rounds) for name, rounds in data.items()})
    yardstick = "anchor" if "anchor" in data else "reference"
    result["yardstick"] = yardstick
    result["ratio"] = ratios(result["caseapi"], result[yardstick])
    result["vs_yardstick"] = {name: _div(result[name]["rps"], result[yardstick]["rps"]) for name in data}
    if yardstick != "reference":
        result["ratio_reference"] = ratios(result["caseapi"], result["reference"])
    result["rounds"] = data
    shown = " | ".join(
        f"{name} {result[name]['rps']:>8} req/s p50 {result[name]['p50_ms']} p99 {result[name]['p99_ms']}"
        for name in data
    )
    log(f"{route:<11} {shown} | caseapi ÷ {yardstick} {result['ratio']['rps']}")
    return result


# The routes the anchor serves (the first page only: its cursor is a placeholder).
ANCHOR_ROUTES = ("get_case", "list_first")
PARITY_ROUTES = ("get_case", "list_first", "list_deep", "items", "events")


def _answer(server: Server, path: str, headers: dict[str, str]) -> tuple[int, Any]:
    """Status, and the JSON of a 200 with a cursor reduced to its presence (each server encodes its own)."""
    status, body, _ = request(server.port, "GET", path, headers)
    if status != 200:
        return status, None
    doc = json.loads(body)
    if isinstance(doc, dict) and "next_cursor" in doc:
        doc["next_cursor"] = doc["next_cursor"] is not None
    return status, doc


def parity(
    app: Server, ref: Server, app_loads: dict[str, Load], ref_loads: dict[str, Load], targets: dict[str, Any]
) -> dict[str, Any]:
    """The reference must answer what caseapi answers, or its ratios compare different work:
    the first request of every GET route, and the visibility rules (a case seen in summary, one
    hidden, one missing: their items answer 404 on both, the hidden case as the missing one)."""
    pairs = [(route, app_loads[route].paths[0], ref_loads[route].paths[0]) for route in PARITY_ROUTES]
    for label, case_id in (
        ("summary", targets["summary_id"]),
        ("hidden", targets["hidden_id"]),
        ("missing", str(uuid.uuid4())),
    ):
        for suffix in ("", "/seized-items"):
            path = f"/api/v1/cases/{case_id}{suffix}"
            pairs.append((f"{label} case{suffix}", path, path))
    headers = app_loads["get_case"].headers
    checks = {}
    for name, app_path, ref_path in pairs:
        a, b = _answer(app, app_path, headers), _answer(ref, ref_path, headers)
        checks[name] = {"same": a == b, "caseapi": a[0], "reference": b[0]}
    out = {"pass": all(c["same"] for c in checks.values()), "checks": checks}
    log(f"parity: {'the reference answers as caseapi' if out['pass'] else json.dumps(checks)}")
    return out


def preflight(server: Server, load: Load) -> int:
    status, _, _ = request(server.port, load.method, load.paths[0], load.headers, load.body)
    return status


def bundle_check(
    app: Server, ref: Server, marker: dict[str, Any], args: argparse.Namespace
) -> dict[str, Any]:
    """POST /bundles with a 10 000-item case against 10 000 single POSTs, on both servers."""
    auth = {"Authorization": f"Bearer {marker['clients']['bench-rw']['key']}"}
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    status, body, _ = request(app.port, "GET", f"/api/v1/cases/{marker['bundle_case_id']}/bundle", auth)
    out["export"] = {"status": status, "seconds": round(time.perf_counter() - t0, 3), "bytes": len(body)}
    if status != 200:
        out["available"] = False
        out["note"] = f"GET /cases/{{id}}/bundle answered {status}: not available"
        return out
    doc = json.loads(body)
    out["items"] = len(doc.get("seized_items", []))
    out["custody_events"] = sum(len(i.get("custody", [])) for i in doc.get("seized_items", []))
    for name, server in (("caseapi", app), ("reference", ref)):
        doc["case"]["reference"] = f"BENCH-IMPORT-{uuid.uuid4().hex[:12]}"
        payload = json.dumps(doc).encode()
        t0 = time.perf_counter()
        status, resp, _ = request(
            server.port, "POST", "/api/v1/bundles", {**auth, "Content-Type": "application/json"}, payload
        )
        out[f"import_{name}"] = {
            "status": status,
            "seconds": round(time.perf_counter() - t0, 3),
            "bytes": len(payload),
            "detail": None if status < 300 else resp[:300].decode(errors="replace"),
        }
    out["available"] = out["import_caseapi"]["status"] not in (404, 405)
    # 10 000 single POSTs, 32 connections, bounded in time.
    single = Load(
        [f"/api/v1/cases/{marker['single_posts_case_id']}/seized-items"],
        method="POST",
        body=ITEM_BODY,
        headers={**auth, "Content-Type": "application/json"},
    )
    for name, server in (("caseapi", app), ("reference", ref)):
        r = run_python(
            server.url, single, connections=32, seconds=args.singles_seconds, max_requests=args.singles
        )
        # Scaled to as many single POSTs as the bundle has items (exact when --singles is 10 000).
        r["extrapolated_seconds_for_all"] = round(r["seconds"] * out["items"] / max(r["ok"], 1), 2)
        out[f"singles_{name}"] = r
        log(f"{args.singles} single POSTs on {name}: {r['ok']} ok in {r['seconds']} s ({r['rps']} req/s)")
    for name in ("caseapi", "reference"):
        imp = out[f"import_{name}"]
        if imp["status"] == 201:
            out[f"speedup_{name}"] = round(
                out[f"singles_{name}"]["extrapolated_seconds_for_all"] / imp["seconds"], 1
            )
    log(f"bundle: {json.dumps({k: v for k, v in out.items() if not k.startswith('singles')})}")
    return out


def drain(server: Server, load: Load, max_seconds: float = 300) -> float:
    """Seconds until the server answers a GET within a second again (work left by closed connections)."""
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < max_seconds:
        t1 = time.perf_counter()
        try:
            status, _, _ = request(server.port, "GET", load.paths[0], load.headers, timeout=30)
        except OSError:
            status = 0
        if status == 200 and time.perf_counter() - t1 < 1.0:
            break
        time.sleep(0.5)
    return round(time.perf_counter() - t0, 1)


def many_connections(app: Server, app_loads: dict[str, Load], args: argparse.Namespace) -> dict[str, Any]:
    """256 connections: bounded latency or 503, never a hang, never another error.

    A run lasts at least 15 s, three times the pool timeout, so that pool exhaustion shows.
    """
    use_wrk = not args.python_load and wrk_available()
    out = {}
    for route in ("get_case", "list_first", "post_item"):
        seconds = max(15.0, args.duration * 2)
        r = run(app.url, app_loads[route], connections=256, seconds=seconds, use_wrk=use_wrk, timeout=30)
        r["rss_mb"] = app.rss_mb()
        codes = {int(k) for k in r["codes"]}
        r["pass"] = (
            r["ok"] > 0
            and r["timeouts"] == 0
            and codes <= {200, 201, 503}
            and r["errors"] == r["codes"].get("503", 0)
        )
        r["drain_seconds"] = drain(app, app_loads["get_case"])
        out[route] = r
        log(
            f"256 connections {route}: {r['requests']} requests, {r['rps']} req/s p99 {r['p99_ms']} "
            f"max {r['max_ms']} "
            f"codes {r['codes']} timeouts {r['timeouts']}; back to normal after {r['drain_seconds']} s"
        )
    return out


def walk_pages(app: Server, marker: dict[str, Any], max_seconds: float) -> dict[str, Any]:
    """Follow next_cursor over every page of GET /cases (limit 200) on one keep-alive connection."""
    auth = {"Authorization": f"Bearer {marker['clients']['bench-rw']['key']}"}
    rss_before = app.rss_mb()
    conn = http.client.HTTPConnection(HOST, app.port, timeout=120)
    pages = items = 0
    seen: set[str] = set()
    duplicates = 0
    cursor: str | None = None
    t0 = time.perf_counter()
    page_ms: list[float] = []
    max_pages = marker["cases"] // 200 * 2 + 100
    complete = False
    try:
        while pages < max_pages and time.perf_counter() - t0 < max_seconds:
            path = "/api/v1/cases?limit=200" + (f"&cursor={cursor}" if cursor else "")
            t1 = time.perf_counter()
            conn.request("GET", path, headers=auth)
            resp = conn.getresponse()
            data = json.loads(resp.read())
            page_ms.append((time.perf_counter() - t1) * 1000)
            if resp.status != 200:
                raise RuntimeError(f"walk: page {pages + 1} answered {resp.status}: {data}")
            pages += 1
            for it in data["items"]:
                duplicates += it["id"] in seen
                seen.add(it["id"])
            items += len(data["items"])
            cursor = data["next_cursor"]
            if cursor is None:
                complete = True
                break
    finally:
        conn.close()
    page_ms.sort()
    out = {
        "pages": pages,
        "items": items,
        "duplicates": duplicates,
        "complete": complete,
        "seconds": round(time.perf_counter() - t0, 1),
        "page_p50_ms": round(page_ms[len(page_ms) // 2], 2) if page_ms else None,
        "page_p99_ms": round(page_ms[min(len(page_ms) - 1, int(len(page_ms) * 0.99))], 2)
        if page_ms
        else None,
        "rss_before_mb": rss_before,
        "rss_after_mb": app.rss_mb(),
    }
    log(f"walk: {json.dumps(out)}")
    return out


def stateless_check(app2: Server, marker: dict[str, Any]) -> dict[str, Any]:
    """With 2 workers, every request on a new connection: cursors and idempotent replays must still work."""
    auth = {"Authorization": f"Bearer {marker['clients']['bench-rw']['key']}"}
    cursor, seen, dup, pages, pids = None, set(), 0, 0, set()
    for _ in range(20):
        path = "/api/v1/cases?limit=50" + (f"&cursor={cursor}" if cursor else "")
        status, body, _ = request(app2.port, "GET", path, auth)
        if status != 200:
            return {"pass": False, "detail": f"page {pages + 1} answered {status}"}
        data = json.loads(body)
        for it in data["items"]:
            dup += it["id"] in seen
            seen.add(it["id"])
        pages += 1
        cursor = data["next_cursor"]
        if cursor is None:
            break
    key = f"bench-{uuid.uuid4().hex}"
    created = set()
    statuses = []
    for _ in range(10):
        status, body, _ = request(
            app2.port,
            "POST",
            f"/api/v1/cases/{marker['post_case_id']}/seized-items",
            {**auth, "Content-Type": "application/json", "Idempotency-Key": key},
            ITEM_BODY,
        )
        statuses.append(status)
        if status == 201:
            created.add(json.loads(body)["id"])
    pids = {p.pid for p in app2.workers()}
    ok = dup == 0 and len(created) == 1 and set(statuses) == {201}
    return {
        "pass": ok,
        "pages": pages,
        "duplicates": dup,
        "idempotent_ids": len(created),
        "statuses": statuses,
        "workers": len(pids),
    }


# ---- machine and versions --------------------------------------------------------------------------------


def machine(db: str) -> dict[str, Any]:
    cpu = "unknown"
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    versions = {}
    for pkg in (
        "fastapi",
        "starlette",
        "uvicorn",
        "sqlalchemy",
        "sqlmodel",
        "pydantic",
        "psycopg",
        "psycopg-pool",
        "uvloop",
        "httptools",
    ):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    if db.startswith("sqlite"):
        versions["sqlite"] = sqlite3.sqlite_version
    else:
        engine = create_db_engine(db)
        with engine.connect() as conn:
            versions["postgresql"] = conn.exec_driver_sql("SHOW server_version").scalar_one()
        engine.dispose()
    wrk = None
    if wrk_available():
        out = subprocess.run(["wrk", "--version"], capture_output=True, text=True).stdout
        wrk = out.splitlines()[0].split(" Copyright")[0] if out else "wrk"
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    # The servers run the working tree: say so when it is not the commit.
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--", "app", "migrations"], cwd=ROOT, capture_output=True, text=True
    )
    return {
        "nproc": os.cpu_count(),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": cpu,
        "python": platform.python_version(),
        "os": platform.platform(),
        "load_tool": wrk or "python (asyncio raw HTTP/1.1)",
        "versions": versions,
        "git_commit": commit.stdout.strip() or None,
        "app_changes_not_committed": [line[3:] for line in dirty.stdout.splitlines()],
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


# ---- the command -----------------------------------------------------------------------------------------


@contextmanager
def servers(*servers_: Callable[[], Server]) -> Iterator[list[Server]]:
    started: list[Server] = []
    try:
        for start in servers_:
            started.append(start())
        yield started
    finally:
        for s in started:
            s.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__.splitlines()[0])
    p.add_argument("--db", required=True, help="PostgreSQL URL of a database of the benchmark's own")
    p.add_argument(
        "--anchor",
        type=Path,
        default=os.environ.get("BENCH_ANCHOR"),
        help="a hand-written yardstick (module with `app`, e.g. a hand-written Starlette + asyncpg app; "
        "default $BENCH_ANCHOR) run beside the reference on the routes it serves",
    )
    p.add_argument("--size", choices=sorted(SIZES), default="small")
    p.add_argument("--fresh", action="store_true", help="generate the dataset again even if it is in place")
    p.add_argument("--duration", type=float, default=5.0, help="seconds per measured round and server")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per route")
    p.add_argument(
        "--warmup", type=float, default=2.0, help="seconds of discarded warm-up per route and server"
    )
    p.add_argument("--connections", type=int, default=32)
    p.add_argument("--routes", default=",".join(ROUTES), help="comma-separated subset of " + ",".join(ROUTES))
    p.add_argument(
        "--python-load", action="store_true", help="use the Python load generator even if wrk exists"
    )
    p.add_argument(
        "--singles", type=int, default=10_000, help="single POSTs to compare the bundle import with"
    )
    p.add_argument("--singles-seconds", type=float, default=300, help="time bound of the single POSTs")
    p.add_argument("--walk-seconds", type=float, default=1800, help="time bound of the walk over every page")
    p.add_argument("--merge", action="store_true", help="keep the parts of the last run this run skips")
    for flag in ("bundle", "many", "walk", "workers2"):
        p.add_argument(f"--skip-{flag}", action="store_true")
    args = p.parse_args(argv)
    use_bench_audit_key()
    db = args.db
    if not db.startswith("postgresql"):
        p.error("the reference (asyncpg) runs on PostgreSQL only: --db postgresql+psycopg://...")
    if args.anchor is not None and not args.anchor.is_file():
        p.error(f"--anchor {args.anchor}: no such file")
    backend = "postgresql"
    key = f"{backend}-{args.size}"
    started_at = datetime.now(UTC).isoformat(timespec="seconds")

    marker = generate(db, args.size, fresh=args.fresh)
    targets = bench_targets(db, marker)
    info = machine(db)
    log(f"{key}: {marker['counts']['case']:,} cases; load tool {info['load_tool']}")
    result: dict[str, Any] = {
        "backend": backend,
        "size": args.size,
        "started_at": started_at,
        "machine": info,
        "dataset": {k: marker[k] for k in ("cases", "counts", "seconds", "seed")},
        "settings": {k: getattr(args, k) for k in ("connections", "duration", "rounds", "warmup")},
        "routes": {},
        "notes": [
            "caseapi runs with its default settings (CASEAPI_DATABASE_URL aside).",
            "The reference writes the same rows as caseapi's POST (item, seizure event, HMAC-chained audit "
            "entries, feed events, under the same advisory lock); it decides visibility as caseapi does "
            "(checked: parity), skips body validation, the POST's write-access check and idempotency, and "
            "resolves API keys from a table read at startup.",
        ],
    }
    if args.merge and RESULTS_JSON.exists():
        # Measure only some parts again and keep the rest of this backend and size's last run.
        previous = json.loads(RESULTS_JSON.read_text()).get("runs", {}).get(key)
        if previous:
            kept = {
                k: v for k, v in previous.items() if k not in ("started_at", "machine", "settings", "notes")
            }
            notes = [*result["notes"], *(n for n in previous.get("notes", []) if n not in result["notes"])]
            result = {**result, **kept, "notes": notes}
            result["routes"] = dict(previous.get("routes", {}))
            result["notes"].append(f"--merge at {started_at}: measured again: {args.routes}.")
    routes = [r for r in args.routes.split(",") if r]
    starts = [lambda: start_caseapi(db, 1), lambda: start_reference(db)]
    if args.anchor is not None:
        anchor_path = args.anchor.resolve()
        starts.append(lambda: start_anchor(anchor_path, db, marker, targets["case_ids"][0]))
        result["anchor"] = {"path": str(args.anchor), "routes": list(ANCHOR_ROUTES)}
    with servers(*starts) as started:
        app, ref = started[:2]
        app_loads, ref_loads = loads(marker, targets, False), loads(marker, targets, True)
        result["parity"] = parity(app, ref, app_loads, ref_loads, targets)
        if not result["parity"]["pass"]:
            result["notes"].append("The reference did NOT answer as caseapi: see parity.")
        for route in routes:
            s_app, s_ref = preflight(app, app_loads[route]), preflight(ref, ref_loads[route])
            if s_app >= 300 or s_ref >= 300:
                result["notes"].append(
                    f"{ROUTES[route]}: preflight answered {s_app} (caseapi) / {s_ref} (reference)"
                )
                log(f"{route}: preflight {s_app}/{s_ref}")
            contenders = [
                Contender("caseapi", app, app_loads[route], app_loads["get_case"]),
                Contender("reference", ref, ref_loads[route], ref_loads["get_case"]),
            ]
            if len(started) > 2 and route in ANCHOR_ROUTES:
                contenders.append(Contender("anchor", started[2], ref_loads[route], ref_loads["get_case"]))
            result["routes"][route] = interleaved(route, contenders, args=args, connections=args.connections)
            save(key, result)
        if not args.skip_walk:
            result["walk"] = walk_pages(app, marker, args.walk_seconds)
            save(key, result)
        if not args.skip_bundle:
            result["bundle"] = bundle_check(app, ref, marker, args)
            save(key, result)
        if not args.skip_many:
            result["many"] = many_connections(app, app_loads, args)
            save(key, result)
    if not args.skip_workers2:
        with servers(lambda: start_caseapi(db, 2), lambda: start_reference(db)) as (app2, ref):
            w2: dict[str, Any] = {"routes": {}}
            for route in ("get_case", "list_first", "post_item"):
                contenders = [
                    Contender("caseapi", app2, app_loads[route], app_loads["get_case"]),
                    Contender("reference", ref, ref_loads[route], ref_loads["get_case"]),
                ]
                w2["routes"][route] = interleaved(route, contenders, args=args, connections=args.connections)
            w2["stateless"] = stateless_check(app2, marker)
            log(f"workers 2 stateless: {w2['stateless']}")
            result["workers2"] = w2
    result["finished_at"] = datetime.now(UTC).isoformat(timespec="seconds")
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    save(key, result)
    print(RESULTS_MD.read_text())


if __name__ == "__main__":
    main()
