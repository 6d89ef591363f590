"""Federation: how fast a case reaches a peer, how far a mirror lags, what a federated search costs.

    python -m bench.federation --pg postgresql+psycopg://postgres@127.0.0.1:5432/postgres [--sqlite]

Real instances, as an operator runs them: each a `caseapi serve --workers 1` process
with a database of its own (on PostgreSQL a fresh database on the `--pg` server,
dropped at the end; on SQLite a file), a working directory holding its instance key
(under bench/data/federation/, where its log stays), agencies made with `caseapi
agency create`, keys with `caseapi client create`, and peered both ways with `caseapi
peer add`. Three measurements, each against the goal of the federation issue:

1. `case`: a case of `--items` seized items (two custody events each, 100 locations),
   imported on the home with `POST /bundles`, reaching a peer: the time from `POST
   /cases/{id}/participants` (a partner agency hosted by the peer) until the peer
   answers the case's item list (the mirror is applied in one transaction; a walk over
   every page then checks that it holds all the items). Against it, the same case
   moved by hand on one instance: `GET /cases/{id}/bundle` then `POST /bundles` with
   it. Interleaved, `--repeats` times (the import of one round is the case federated in
   the next). Goal: within 2x.
2. `lag`: `--writers` concurrent clients (a process of their own, raw HTTP/1.1
   keep-alive) keep writing into `--lag-cases` shared cases on the home while a probe
   adds a location with a unique label to one of them and polls the peer every 20 ms
   until it answers it; `--probes` probes, one at a time, for at most `--lag-seconds`.
   `--lag-modes`: `idle` (no writers: the floor), `patch` (each writer PATCHes a seized
   item of its own: the cases keep their size, 24 items each) and `post` (writers POST
   new seized items: the cases grow as under real work). Lag is timed from the home's
   201 to the peer's first 200 (a probe answered 503 tries again, as a client would).
   Also: the peer's time to apply each delivery (from its request log), and how long
   the peer takes to catch up once the writers stop. Goal: p99 <= 1 s.
3. `hits`: `POST /hits` of 1 000 phone numbers on a searcher peered with two other
   instances, each of the three holding `--identifiers` phone identifiers in cases of
   every handling code (100 of the searched numbers held on each instance, 700 nowhere),
   with `"federated": true` and without, one request at a time, alternating. Goal:
   federated p99 <= 2x local p99.

Results are printed and appended to bench/federation-results.json. `--profile` samples
the instances with py-spy during each part (raw collapsed stacks next to their logs).
"""

import argparse
import contextlib
import functools
import json
import math
import multiprocessing
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from bench import use_bench_audit_key
from bench.generate import DATA_DIR
from bench.load import HOST, _Conn
from bench.run import ROOT, free_port, log

API = "/api/v1"
CLI = [sys.executable, "-c", "import sys; from app.cli import main; main(sys.argv[1:])"]
WORK = DATA_DIR / "federation"
RESULTS = Path(__file__).resolve().parent / "federation-results.json"
SCOPES = ("--scope", "read", "--scope", "write", "--scope", "admin")
ITEM_BODY = b'{"category":"computer","description":"Laptop seized at the search","quantity":1}'
CODES = ["TLP:RED", "TLP:AMBER", "TLP:GREEN", "TLP:CLEAR", "TLP:AMBER+STRICT", "TLP:GREEN"]


def bundle(items: int, agency_id: str, locations: int = 100) -> dict[str, Any]:
    """A case of `items` seized items, each with a chain of two custody events, at `locations` places
    (the shape of bench/import_lock.py's bundle)."""
    places = [{"id": str(uuid.uuid4()), "label": f"Location {n}", "country": "UA"} for n in range(locations)]
    custody = [
        {"action": "seized", "to_agency_id": agency_id, "at": "2025-09-23T07:00:00Z"},
        {"action": "examined", "at": "2025-09-24T07:00:00Z"},
    ]
    return {
        "bundle_version": 1,
        "case": {"reference": f"BENCH-{uuid.uuid4().hex[:8]}", "title": "Federation bench"},
        "locations": places,
        "seized_items": [
            {
                "id": str(uuid.uuid4()),
                "category": "computer",
                "description": f"Item {n}",
                "quantity": 1,
                "location_id": places[n % locations]["id"],
                "seized_by_agency_id": agency_id,
                "custodian_agency_id": agency_id,
                "custody": custody,
            }
            for n in range(items)
        ],
    }


# ---- instances ------------------------------------------------------------------------------------------


class Api:
    """An agency's tool on one instance (one keep-alive connection)."""

    def __init__(self, url: str, key: str) -> None:
        self.http = httpx.Client(base_url=url + API, headers={"Authorization": f"Bearer {key}"}, timeout=600)

    def __call__(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        return self.http.request(method, path, **kwargs)

    def ok(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = self(method, path, **kwargs)
        if answer.status_code not in (200, 201):
            raise RuntimeError(f"{method} {path}: {answer.status_code} {answer.text[:300]}")
        return answer.json()

    def agency_id(self, code: str) -> str:
        return next(
            a["id"] for a in self.ok("GET", "/agencies", params={"limit": 200})["items"] if a["code"] == code
        )

    def close(self) -> None:
        self.http.close()


@dataclass
class Instance:
    instance_id: str
    home: Path
    env: dict[str, str]
    url: str = ""
    proc: subprocess.Popen[bytes] | None = None
    keys: dict[str, str] = field(default_factory=dict)
    apis: list[Api] = field(default_factory=list)

    def cli(self, *args: str) -> list[str]:
        done = subprocess.run(
            [*CLI, *args], env=self.env, cwd=self.home, capture_output=True, text=True, timeout=120
        )
        if done.returncode != 0:
            raise RuntimeError(f"{self.instance_id}: caseapi {' '.join(args)}: {done.stderr.strip()[-500:]}")
        return done.stdout.splitlines()

    def agency(self, code: str) -> None:
        self.cli(
            "agency",
            "create",
            "--code",
            code,
            "--name",
            f"Police {code}",
            "--kind",
            "police",
            "--country",
            "KZ",
        )
        self.keys[code] = self.cli("client", "create", "--agency", code, "--name", "bench", *SCOPES)[-1]

    def serve(self) -> None:
        port = free_port()
        self.url = f"http://{HOST}:{port}"
        self.proc = subprocess.Popen(
            [*CLI, "serve", "--host", HOST, "--port", str(port), "--workers", "1"],
            env=self.env,
            cwd=self.home,
            stdout=subprocess.DEVNULL,
            stderr=(self.home / "serve.log").open("ab"),
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/health/ready", timeout=2).status_code == 200:
                    return
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.instance_id} did not start: see {self.home / 'serve.log'}")
            time.sleep(0.1)

    def api(self, code: str) -> Api:
        api = Api(self.url, self.keys[code])
        self.apis.append(api)
        return api

    @functools.cached_property
    def thumbprint(self) -> str:
        return self.cli("instance", "show")[-1]

    def stop(self) -> None:
        for api in self.apis:
            api.close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.proc = None


class Backend:
    """Where an instance keeps its data: a fresh PostgreSQL database (dropped at the end), or a file."""

    def __init__(self, kind: str, pg: str) -> None:
        self.kind = kind
        self.pg = pg
        self.made: list[str] = []

    def database(self, home: Path, instance_id: str) -> str:
        if self.kind == "sqlite":
            return f"sqlite:///{home / 'caseapi.db'}"
        name = f"caseapi_fedbench_{instance_id.split('.')[0]}_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(self.pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
        admin.dispose()
        self.made.append(name)
        return make_url(self.pg).set(database=name).render_as_string(hide_password=False)

    def drop(self) -> None:
        if not self.made:
            return
        admin = sa.create_engine(self.pg, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in self.made:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()
        self.made.clear()


def peer(a: Instance, b: Instance) -> None:
    """Both add each other; `a` adds `b` again to learn its agencies (it could not before `b` trusted it)."""
    for x, y in ((a, b), (b, a), (a, b)):
        x.cli("peer", "add", "--url", y.url, "--thumbprint", y.thumbprint)


@contextlib.contextmanager
def cluster(
    backend: Backend, run_dir: Path, agencies: dict[str, str], pairs: list[tuple[str, str]]
) -> Iterator[dict[str, Instance]]:
    """Instances named by `agencies` (instance id -> the one agency it hosts), served and
    peered as `pairs` say; stopped, and their databases dropped, at the end."""
    made: dict[str, Instance] = {}
    try:
        for instance_id in agencies:
            home = run_dir / backend.kind / instance_id
            home.mkdir(parents=True)
            env = {
                **os.environ,
                "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
                "CASEAPI_DATABASE_URL": backend.database(home, instance_id),
                "CASEAPI_INSTANCE_ID": instance_id,
                "CASEAPI_STORAGE_DIR": str(home / "files"),
                "CASEAPI_WEBHOOK_DELIVERY": "false",
                # One search of 1 000 numbers after another: no per-client or per-agency budget.
                "CASEAPI_HIT_RATE_LIMIT": "",
                "CASEAPI_HIT_AGENCY_RATE_LIMIT": "",
            }
            made[instance_id] = Instance(instance_id, home, env)

        def ready(instance: Instance) -> None:
            t0 = time.perf_counter()
            instance.cli("migrate")
            instance.agency(agencies[instance.instance_id])
            instance.serve()
            assert instance.thumbprint
            log(f"{instance.instance_id} ready in {time.perf_counter() - t0:.1f} s")

        with ThreadPoolExecutor(len(made)) as pool:
            list(pool.map(ready, made.values()))
        t0 = time.perf_counter()
        for a, b in pairs:
            peer(made[a], made[b])
        log(f"peered in {time.perf_counter() - t0:.1f} s")
        yield made
    finally:
        for instance in made.values():
            instance.stop()
        backend.drop()


@contextlib.contextmanager
def profiled(instances: list[Instance], name: str, enabled: bool) -> Iterator[None]:
    """py-spy on each instance's process (and its import processes) while the block runs."""
    if not enabled:
        yield
        return
    spies = []
    for instance in instances:
        assert instance.proc is not None
        out = instance.home / f"profile-{name}.txt"
        spies.append(
            subprocess.Popen(
                [
                    shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy"),
                    "record",
                    "--format",
                    "raw",
                    "--rate",
                    "50",
                    "--subprocesses",
                    "--nonblocking",
                    "-p",
                    str(instance.proc.pid),
                    "-o",
                    str(out),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        )
    try:
        yield
    finally:
        for spy in spies:
            spy.send_signal(signal.SIGINT)
        for spy in spies:
            try:
                spy.wait(60)
            except subprocess.TimeoutExpired:
                spy.kill()


# ---- figures --------------------------------------------------------------------------------------------


def pct(values: list[float], q: float) -> float:
    """Nearest rank: the smallest value with at least q of the samples at or below it."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def spread(seconds: list[float]) -> dict[str, Any]:
    ms = [s * 1000 for s in seconds]
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 1),
        "p99_ms": round(pct(ms, 0.99), 1),
        "max_ms": round(max(ms), 1),
        "mean_ms": round(statistics.fmean(ms), 1),
    }


def deliveries(instance: Instance) -> dict[str, float]:
    """An instance's delivery counters, by peer and outcome, from /metrics."""
    text = httpx.get(f"{instance.url}/metrics", timeout=30).text
    counters: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("caseapi_federation_deliveries_total{"):
            labels, value = line.rsplit(" ", 1)
            counters[labels.split("{", 1)[1].rstrip("}")] = float(value)
    return counters


def wait_delivered(api: Api, seconds: float = 300) -> None:
    """Until the home has no delivery pending for any peer."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if all(p["pending"] == 0 for p in api.ok("GET", "/federation/peers")["items"]):
            return
        time.sleep(0.2)
    raise RuntimeError("deliveries still pending")


def poll(check: Callable[[], bool], interval: float, seconds: float) -> float:
    """perf_counter() at the first poll where `check` held."""
    deadline = time.perf_counter() + seconds
    while True:
        if check():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            raise RuntimeError(f"not there within {seconds} s")
        time.sleep(interval)


# ---- 1. a large case reaching a peer --------------------------------------------------------------------


def count_items(api: Api, case_id: str) -> int:
    n, cursor = 0, None
    while True:
        params: dict[str, Any] = {"limit": 200} | ({"cursor": cursor} if cursor else {})
        page = api.ok("GET", f"/cases/{case_id}/seized-items", params=params)
        n += len(page["items"])
        cursor = page["next_cursor"]
        if cursor is None:
            return n


def case_to_peer(home: Instance, peer_: Instance, items: int, repeats: int) -> dict[str, Any]:
    h, p = home.api("HOME-POL"), peer_.api("PEER-POL")
    partner = h.agency_id("PEER-POL")
    doc = bundle(items, h.agency_id("HOME-POL"))
    doc["case"] |= {"handling_code": "TLP:AMBER", "reference": "FED-0"}
    t0 = time.perf_counter()
    case = h.ok(
        "POST", "/bundles", content=json.dumps(doc).encode(), headers={"Content-Type": "application/json"}
    )
    log(f"case: {items} items imported on the home in {time.perf_counter() - t0:.1f} s")
    rounds = []
    for r in range(repeats):
        # By hand, on one instance: export the case, import it (the case of the next round).
        t0 = time.perf_counter()
        exported = h("GET", f"/cases/{case['id']}/bundle")
        t_export = time.perf_counter() - t0
        assert exported.status_code == 200, exported.text[:300]
        moved = exported.json()
        moved["case"]["reference"] = f"FED-{r + 1}"
        body = json.dumps(moved).encode()
        t0 = time.perf_counter()
        imported = h.ok("POST", "/bundles", content=body, headers={"Content-Type": "application/json"})
        t_import = time.perf_counter() - t0

        # Federated: the peer's agency joins; until the peer answers the case's items, all of them.
        before = deliveries(home)
        t0 = time.perf_counter()
        h.ok("POST", f"/cases/{case['id']}/participants", json={"agency_id": partner, "role": "partner"})
        t_added = time.perf_counter()
        path = f"/cases/{case['id']}/seized-items"
        t_seen = poll(lambda path=path: p("GET", path, params={"limit": 1}).status_code == 200, 0.05, 600)
        held = count_items(p, case["id"])
        t_walked = time.perf_counter()
        if held != items:
            raise RuntimeError(f"the mirror holds {held} items of {items}")
        wait_delivered(h)
        after = deliveries(home)
        row = {
            "export_s": round(t_export, 2),
            "import_s": round(t_import, 2),
            "by_hand_s": round(t_export + t_import, 2),
            "participant_post_s": round(t_added - t0, 3),
            "federated_s": round(t_seen - t0, 2),
            "walk_s": round(t_walked - t_seen, 2),
            "bundle_bytes": len(body),
            "deliveries": {k: after.get(k, 0) - before.get(k, 0) for k in after},
        }
        row["ratio"] = round(row["federated_s"] / row["by_hand_s"], 2)
        log(f"case round {r + 1}: {json.dumps(row)}")
        rounds.append(row)
        case = imported
    med = {
        k: round(statistics.median(r[k] for r in rounds), 2) for k in ("by_hand_s", "federated_s", "ratio")
    }
    return {"items": items, "custody_events": 2 * items, "locations": 100, "rounds": rounds, "median": med}


# ---- 2. the lag of one change under concurrent writers --------------------------------------------------


def _raw(method: str, path: str, port: int, key: str, body: bytes, extra: str = "") -> bytes:
    head = (
        f"{method} {path} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n{extra}\r\n"
    )
    return head.encode() + body


def _write(port: int, key: str, mode: str, writers: int, targets: list[str], stop: Any, out: Any) -> None:
    """A process of writers, one connection each, until `stop` is set: PATCH its own
    seized item (targets: `id version`), or POST items into the cases (targets: case ids)."""
    import asyncio

    async def main() -> dict[str, Any]:
        latencies: list[float] = []
        codes: dict[int, int] = {}
        errors = [0]

        async def writer(n: int) -> None:
            conn = _Conn(port, 30)
            if mode == "patch":
                item, version = targets[n].split()
            sent = 0
            while not stop.is_set():
                if mode == "patch":
                    body = json.dumps({"description": f"writer {n}, change {sent}"}).encode()
                    raw = _raw(
                        "PATCH", f"{API}/seized-items/{item}", port, key, body, f'If-Match: "{version}"\r\n'
                    )
                else:
                    raw = _raw(
                        "POST",
                        f"{API}/cases/{targets[sent % len(targets)]}/seized-items",
                        port,
                        key,
                        ITEM_BODY,
                    )
                sent += 1
                t0 = time.perf_counter()
                try:
                    status, answer = await conn.request(raw)
                except (OSError, TimeoutError, asyncio.IncompleteReadError, ValueError):
                    errors[0] += 1
                    conn.close()
                    await asyncio.sleep(0.05)
                    continue
                latencies.append(time.perf_counter() - t0)
                codes[status] = codes.get(status, 0) + 1
                if mode == "patch" and status == 200:
                    version = str(json.loads(answer)["version"])
                elif mode == "patch" and status == 412:
                    status, answer = await conn.request(
                        _raw("GET", f"{API}/seized-items/{item}", port, key, b"")
                    )
                    version = str(json.loads(answer)["version"])
            conn.close()

        started = time.perf_counter()
        await asyncio.gather(*(writer(n) for n in range(writers)))
        elapsed = time.perf_counter() - started
        ok = sum(v for k, v in codes.items() if k < 300)
        return {
            "writes_ok": ok,
            "seconds": round(elapsed, 1),
            "writes_per_s": round(ok / elapsed, 1),
            "codes": {str(k): v for k, v in sorted(codes.items())},
            "socket_errors": errors[0],
            "latency": spread(latencies) if latencies else None,
        }

    out.put(asyncio.run(main()))


def applied(instance: Instance, since: datetime, until: datetime) -> dict[str, Any] | None:
    """How long the instance took to answer the deliveries it received between two instants, from
    its request log (the peer's side of a delivery: authenticate, replace the mirrors, sign a receipt)."""
    seconds = []
    for line in (instance.home / "serve.log").read_text(errors="replace").splitlines():
        if "path=/api/v1/federation/deliveries" not in line or "duration_ms=" not in line:
            continue
        with contextlib.suppress(ValueError):
            at = datetime.fromisoformat(line.split(" ", 1)[0].replace("Z", "+00:00"))
            if since <= at <= until:
                seconds.append(float(line.split("duration_ms=", 1)[1].split()[0]) / 1000)
    return spread(seconds) if seconds else None


def lag(
    home: Instance,
    peer_: Instance,
    mode: str,
    writers: int,
    probes: int,
    n_cases: int,
    budget: float,
) -> dict[str, Any]:
    h, p = home.api("HOME-POL"), peer_.api("PEER-POL")
    partner, lead = h.agency_id("PEER-POL"), h.agency_id("HOME-POL")
    # Shared cases of a working size (24 items, 48 custody events), each mirrored on the peer.
    cases = []
    for n in range(n_cases):
        doc = bundle(24, lead, locations=4)
        doc["case"] |= {"handling_code": "TLP:AMBER", "reference": f"LAG-{mode}-{n}"}
        case = h.ok(
            "POST", "/bundles", content=json.dumps(doc).encode(), headers={"Content-Type": "application/json"}
        )
        h.ok("POST", f"/cases/{case['id']}/participants", json={"agency_id": partner, "role": "partner"})
        cases.append(case["id"])
    for case_id in cases:
        poll(lambda c=case_id: p("GET", f"/cases/{c}").status_code == 200, 0.1, 120)
    wait_delivered(h)
    targets: list[str] = []
    if mode == "patch":
        for w in range(writers):
            case_id = cases[w % n_cases]
            item = h.ok("GET", f"/cases/{case_id}/seized-items", params={"limit": 200})["items"][w // n_cases]
            targets.append(f"{item['id']} {item['version']}")
    elif mode == "post":
        targets = cases
    port = int(home.url.rsplit(":", 1)[1])
    ctx = multiprocessing.get_context("spawn")
    stop, out = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=_write, args=(port, home.keys["HOME-POL"], mode, writers, targets, stop, out))
    before = deliveries(home)
    if mode != "idle":
        proc.start()
    try:
        time.sleep(3)  # the writers at full pace before the first probe
        lags, acks, missed, busy = [], [], 0, 0
        rng = random.Random(7)
        started = time.perf_counter()
        since = datetime.now(UTC)
        for n in range(probes):
            if time.perf_counter() - started > budget:
                log(f"lag ({mode}): out of time after {n} probes")
                break
            if n and n % 20 == 0 and lags:
                log(f"lag ({mode}): {n} probes, p50 of the last 20: {statistics.median(lags[-20:]):.2f} s")
            case_id = cases[n % n_cases]
            t0 = time.perf_counter()
            label = {"label": f"probe {uuid.uuid4().hex}", "country": "UA"}
            while (answer := h("POST", f"/cases/{case_id}/locations", json=label)).status_code == 503:
                busy += 1  # as a client does: again after Retry-After (at most a second here)
                time.sleep(min(float(answer.headers.get("retry-after", 1)), 1.0))
            if answer.status_code != 201:
                raise RuntimeError(f"probe: {answer.status_code} {answer.text[:300]}")
            t_ack = time.perf_counter()
            location = answer.json()
            try:
                t_seen = poll(
                    lambda lid=location["id"]: p("GET", f"/locations/{lid}").status_code == 200, 0.02, 60
                )
            except RuntimeError:
                missed += 1
                continue
            acks.append(t_ack - t0)
            lags.append(t_seen - t_ack)
            time.sleep(rng.uniform(0, 0.1))
        probing = time.perf_counter() - started
        until = datetime.now(UTC)
    finally:
        stop.set()
        writes = out.get(timeout=120) if mode != "idle" else None
        if mode != "idle":
            proc.join(30)
    after = deliveries(home)
    t0 = time.perf_counter()
    try:
        wait_delivered(h, 600)
        caught_up: float | None = round(time.perf_counter() - t0, 1)
    except RuntimeError:
        caught_up = None
    result = {
        "mode": mode,
        "writers": 0 if mode == "idle" else writers,
        "cases": n_cases,
        "probes": len(lags),
        "missed": missed,
        "probe_writes_busy_503": busy,
        "probing_s": round(probing, 1),
        "lag": spread(lags),
        "lag_p50_first_10_ms": round(statistics.median(lags[:10]) * 1000),
        "lag_p50_last_10_ms": round(statistics.median(lags[-10:]) * 1000),
        "probe_write": spread(acks),
        "writes": writes,
        "deliveries": {k: after.get(k, 0) - before.get(k, 0) for k in after},
        "peer_apply": applied(peer_, since, until),
        "caught_up_after_s": caught_up,
        "items_per_case_after": round(statistics.fmean(count_items(h, c) for c in cases)),
    }
    log(f"lag ({mode}): {json.dumps(result)}")
    return result


# ---- 3. federated hit/no-hit ----------------------------------------------------------------------------


def phone(instance: int, n: int) -> str:
    """The n-th synthetic Kazakh mobile number of an instance (+7 700, 701, 702); 5: held nowhere."""
    return f"+770{instance}{n:07d}"


def hits(trio: list[Instance], codes: list[str], per_instance: int, rounds: int) -> dict[str, Any]:
    from app.identifiers.normalize import IdentifierKind, normalize

    assert normalize(IdentifierKind.phone, phone(5, 9_999_999), country=None) == phone(5, 9_999_999)
    apis = [instance.api(code) for instance, code in zip(trio, codes, strict=True)]
    per_case = 500
    for i, api in enumerate(apis):
        for c in range(0, per_instance, per_case):
            doc = {
                "bundle_version": 1,
                "case": {
                    "reference": f"HITS-{i}-{c}",
                    "title": "Call centre numbers",
                    "handling_code": CODES[(c // per_case) % len(CODES)],
                },
                "identifiers": [
                    {"kind": "phone", "value": phone(i, n)} for n in range(c, min(c + per_case, per_instance))
                ],
            }
            api.ok(
                "POST",
                "/bundles",
                content=json.dumps(doc).encode(),
                headers={"Content-Type": "application/json"},
            )
    rng = random.Random(20261207)
    items = [
        {"kind": "phone", "value": phone(i, n)}
        for i in range(3)
        for n in rng.sample(range(per_instance), 100)
    ]
    items += [{"kind": "phone", "value": phone(5, n)} for n in rng.sample(range(10_000_000), 700)]
    rng.shuffle(items)
    bodies = {
        "local": json.dumps({"items": items}).encode(),
        "federated": json.dumps({"items": items, "federated": True}).encode(),
    }
    searcher = apis[0]
    found: dict[str, int] = {}

    def search(kind: str) -> float:
        t0 = time.perf_counter()
        answer = searcher("POST", "/hits", content=bodies[kind], headers={"Content-Type": "application/json"})
        elapsed = time.perf_counter() - t0
        if answer.status_code != 200:
            raise RuntimeError(f"POST /hits ({kind}): {answer.status_code} {answer.text[:300]}")
        doc = answer.json()
        if kind == "federated" and any(p["status"] != "answered" for p in doc["peers"]):
            raise RuntimeError(f"a peer did not answer: {doc['peers']}")
        found[kind] = sum(item["hit"] for item in doc["items"])
        return elapsed

    for _ in range(3):
        search("local")
        search("federated")
    samples: dict[str, list[float]] = {"local": [], "federated": []}
    for r in range(rounds):
        for kind in ("local", "federated") if r % 2 == 0 else ("federated", "local"):
            samples[kind].append(search(kind))
    result: dict[str, Any] = {
        "identifiers_per_instance": per_instance,
        "searched": len(items),
        "hits": found,
        "local": spread(samples["local"]),
        "federated": spread(samples["federated"]),
    }
    result["ratio_p50"] = round(result["federated"]["p50_ms"] / result["local"]["p50_ms"], 2)
    result["ratio_p99"] = round(result["federated"]["p99_ms"] / result["local"]["p99_ms"], 2)
    log(f"hits: {json.dumps(result)}")
    return result


# ---- the run --------------------------------------------------------------------------------------------


def goals(r: dict[str, Any]) -> dict[str, Any]:
    verdict: dict[str, Any] = {}
    if "case" in r:
        verdict["case_within_2x"] = r["case"]["median"]["ratio"] <= 2
    for name, part in r.get("lag", {}).items():
        verdict[f"lag_{name}_p99_le_1s"] = part["lag"]["p99_ms"] <= 1000
    if "hits" in r:
        verdict["hits_p99_within_2x"] = r["hits"]["ratio_p99"] <= 2
    return verdict


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.federation", description=__doc__.splitlines()[0])
    p.add_argument(
        "--pg",
        default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres",
        help="a PostgreSQL server (URL of a database on it): each instance gets a fresh database there",
    )
    p.add_argument("--sqlite", action="store_true", help="run on SQLite too (after PostgreSQL)")
    p.add_argument("--sqlite-only", action="store_true")
    p.add_argument("--parts", default="case,lag,hits")
    p.add_argument("--items", type=int, default=10_000)
    p.add_argument("--repeats", type=int, default=2, help="rounds of the large case")
    p.add_argument("--writers", type=int, default=32)
    p.add_argument("--probes", type=int, default=100)
    p.add_argument("--lag-cases", type=int, default=8)
    p.add_argument("--lag-modes", default="idle,patch,post", help="idle: no writers (the floor); patch; post")
    p.add_argument(
        "--lag-seconds", type=float, default=150, help="probing stops after this long, done or not"
    )
    p.add_argument("--identifiers", type=int, default=3000, help="phone identifiers held on each instance")
    p.add_argument("--hit-rounds", type=int, default=50)
    p.add_argument("--profile", action="store_true", help="py-spy on every instance during each part")
    args = p.parse_args(argv)
    use_bench_audit_key()
    parts = set(args.parts.split(","))
    kinds = ["sqlite"] if args.sqlite_only else ["postgresql", *(["sqlite"] if args.sqlite else [])]
    stamp = datetime.now(UTC)
    run_dir = WORK / stamp.strftime("%Y%m%dT%H%M%S")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    out: dict[str, Any] = {
        "at": stamp.isoformat(timespec="seconds"),
        "commit": commit.stdout.strip(),
        "cpus": os.cpu_count(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
        "settings": {k: v for k, v in vars(args).items() if k not in ("pg",)},
        "logs": str(run_dir),
        "backends": {},
    }
    for kind in kinds:
        backend = Backend(kind, args.pg)
        r: dict[str, Any] = {}
        out["backends"][kind] = r
        if parts & {"case", "lag"}:
            pair = {"home.bench": "HOME-POL", "peer.bench": "PEER-POL"}
            with cluster(backend, run_dir, pair, [("home.bench", "peer.bench")]) as made:
                home, peer_ = made["home.bench"], made["peer.bench"]
                if "case" in parts:
                    log(f"{kind}: a {args.items}-item case reaching a peer")
                    with profiled([home, peer_], "case", args.profile):
                        r["case"] = case_to_peer(home, peer_, args.items, args.repeats)
                if "lag" in parts:
                    r["lag"] = {}
                    for mode in args.lag_modes.split(","):
                        log(f"{kind}: lag of one change, {args.writers} writers ({mode})")
                        with profiled([home, peer_], f"lag-{mode}", args.profile):
                            r["lag"][mode] = lag(
                                home, peer_, mode, args.writers, args.probes, args.lag_cases, args.lag_seconds
                            )
        if "hits" in parts:
            trio = {"searcher.bench": "S-POL", "a.bench": "A-POL", "b.bench": "B-POL"}
            pairs = [("searcher.bench", "a.bench"), ("searcher.bench", "b.bench")]
            with cluster(backend, run_dir / "hits", trio, pairs) as made:
                log(f"{kind}: federated POST /hits of 1 000 phones")
                with profiled(list(made.values()), "hits", args.profile):
                    r["hits"] = hits(
                        list(made.values()), list(trio.values()), args.identifiers, args.hit_rounds
                    )
        r["goals"] = goals(r)
    out["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    runs = json.loads(RESULTS.read_text()) if RESULTS.exists() else []
    RESULTS.write_text(json.dumps([*runs, out], indent=1) + "\n")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main(sys.argv[1:])
