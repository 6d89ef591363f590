"""The reference: what a hand-written handler costs.

The same routes as caseapi, answering the same response shapes from the same queries,
written directly on Starlette and the database driver: no FastAPI, no ORM, no pydantic,
no validation, no access checks beyond the visibility filter that decides which rows a
list returns. Writes do write the same rows as caseapi (the item, its seizure event, the
hash-chained audit entries and the feed events, under the same journal lock), so that a
POST's ratio measures the framework and the checks, not a different amount of data.

    CASEAPI_DATABASE_URL=... uvicorn --factory bench.reference:create_app --port 8001

PostgreSQL: psycopg's async pool. SQLite: sqlite3, one connection per worker thread.
API keys are resolved from a table read at startup: a hand-written service with a fixed
set of clients would do no more.
"""

import base64
import hashlib
import hmac
import json
import os
import re
import sqlite3
import threading
import uuid
from collections.abc import Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy.engine import make_url
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

GENESIS = "0" * 64
JOURNAL_LOCK = 0x63617365  # the journal's advisory lock (app.journal): caseapi and the reference share data
PUBLIC = ("TLP:GREEN", "TLP:CLEAR")
REQUEST_TYPES = ("information_request", "request_message")

CASE_COLS = (
    "id, reference, title, summary, status, handling_code, offence_types, modus_operandi, victim_regions, "
    "opened_at, closed_at, lead_agency_id, version, created_at, updated_at"
)
ITEM_COLS = (
    "id, case_id, category, description, quantity, location_id, seized_at, sha256, seized_by_agency_id, "
    "custodian_agency_id, status, version, created_at, updated_at"
)
PARTICIPANT = "EXISTS (SELECT 1 FROM participant p WHERE p.case_id = c.id AND p.agency_id = :agency)"

SQL_CASE = f'SELECT {CASE_COLS}, {PARTICIPANT} AS full_access FROM "case" c WHERE c.id = :id'
# The same visibility as app.access.with_case_access: an outer join on the participant key.
C_COLS = ", ".join(f"c.{col}" for col in CASE_COLS.split(", "))
SQL_CASES = (
    f'SELECT {C_COLS}, own.agency_id IS NOT NULL AS full_access FROM "case" c '
    "LEFT JOIN participant own ON own.case_id = c.id AND own.agency_id = :agency "
    "WHERE (c.handling_code IN ('TLP:GREEN', 'TLP:CLEAR') OR own.agency_id IS NOT NULL) {after} "
    "ORDER BY c.created_at, c.id LIMIT :limit"
)
SQL_ITEMS = (
    f"SELECT {ITEM_COLS} FROM seized_item WHERE case_id = :case_id {{after}} "
    "ORDER BY created_at, id LIMIT :limit"
)
SQL_EVENTS = (
    "SELECT e.seq, e.type, e.resource_type, e.resource_id, e.case_id, e.at FROM event e "
    'LEFT JOIN "case" c ON c.id = e.case_id '
    "LEFT JOIN participant own ON own.case_id = e.case_id AND own.agency_id = :agency WHERE ("
    " (e.resource_type IN ('information_request', 'request_message')"
    "   AND (e.request_from_agency_id = :agency OR e.request_to_agency_id = :agency))"
    " OR (e.resource_type NOT IN ('information_request', 'request_message')"
    "   AND e.case_id IS NULL AND e.resource_type = 'agency')"
    " OR (e.resource_type NOT IN ('information_request', 'request_message') AND own.agency_id IS NOT NULL)"
    " OR (e.resource_type = 'case' AND c.handling_code IN ('TLP:GREEN', 'TLP:CLEAR'))"
    ") {after} ORDER BY e.seq LIMIT :limit"
)

UUID_COLS = {
    "id",
    "case_id",
    "lead_agency_id",
    "location_id",
    "seized_by_agency_id",
    "custodian_agency_id",
    "resource_id",
    "agency_id",
}
TIME_COLS = {"opened_at", "closed_at", "seized_at", "created_at", "updated_at", "at"}
JSON_COLS = {"offence_types", "modus_operandi", "victim_regions", "charges"}


# ---- values ----------------------------------------------------------------------------------------


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _now() -> datetime:
    return datetime.now(UTC)


def entry_hash(entry: dict[str, Any]) -> str:
    """The audit chain's canonical form and HMAC, written out by hand (see app.audit.service)."""
    canonical = json.dumps(entry, sort_keys=True, separators=(",", ":"))
    return hmac.new(os.environ["CASEAPI_AUDIT_KEY"].encode(), canonical.encode(), hashlib.sha256).hexdigest()


def encode_cursor(values: Iterable[Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(values)).encode()).decode()


def decode_cursor(cursor: str) -> list[Any]:
    return json.loads(base64.urlsafe_b64decode(cursor))


class Db:
    """What differs between the two drivers: placeholders and how values come back."""

    sqlite: bool

    def out(self, row: dict[str, Any]) -> dict[str, Any]:
        return {k: self._out(k, v) for k, v in row.items()}

    def _out(self, key: str, value: Any) -> Any:
        if value is None:
            return None
        if isinstance(value, uuid.UUID):
            return str(value)
        if isinstance(value, datetime):
            return _iso(value)
        if isinstance(value, date):
            return value.isoformat()
        if self.sqlite:
            if key in UUID_COLS and isinstance(value, str) and len(value) == 32:
                return str(uuid.UUID(hex=value))
            if key in TIME_COLS and isinstance(value, str):
                return _iso(datetime.fromisoformat(value).replace(tzinfo=UTC))
            if key in JSON_COLS and isinstance(value, str):
                return json.loads(value)
        return value

    def uid(self, value: str | uuid.UUID) -> Any:
        return (uuid.UUID(str(value)).hex if self.sqlite else str(value)) if value is not None else None

    def ts(self, value: datetime | str | None) -> Any:
        if value is None:
            return None
        if isinstance(value, str):
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        if self.sqlite:
            return value.astimezone(UTC).replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f")
        return value


# ---- the two drivers -------------------------------------------------------------------------------

_NAMED = re.compile(r"(?<!:):([a-z_][a-z0-9_]*)")


def _pg_sql(sql: str) -> str:
    return _NAMED.sub(r"%(\1)s", sql)


class PgDb(Db):
    sqlite = False

    def __init__(self, url: str) -> None:
        from psycopg.rows import dict_row
        from psycopg_pool import AsyncConnectionPool

        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.pool = AsyncConnectionPool(
            conninfo,
            min_size=4,
            max_size=20,
            open=False,
            kwargs={"autocommit": True, "row_factory": dict_row},
        )

    async def open(self) -> None:
        await self.pool.open(wait=True)

    async def close(self) -> None:
        await self.pool.close()

    async def all(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        async with self.pool.connection() as conn:
            cur = await conn.execute(_pg_sql(sql), params)
            return await cur.fetchall()

    async def write(self, fn: Callable[[Any], Any]) -> Any:
        """fn(tx) runs in one transaction; tx has .one(), .many() and .lock() (the journal lock)."""
        async with self.pool.connection() as conn, conn.transaction():
            return await fn(_PgTx(conn))


class _PgTx:
    def __init__(self, conn: Any) -> None:
        self.conn = conn

    async def lock(self) -> None:
        # Taken as late as caseapi takes it (its before-commit hook): held only for the journal and commit.
        await self.conn.execute("SELECT pg_advisory_xact_lock(%s)", (JOURNAL_LOCK,))

    async def one(self, sql: str, params: dict[str, Any] | tuple[Any, ...] = ()) -> Any:
        cur = await self.conn.execute(_pg_sql(sql), params)
        return await cur.fetchone()

    async def many(self, sql: str, rows: list[dict[str, Any]]) -> None:
        async with self.conn.cursor() as cur:
            await cur.executemany(_pg_sql(sql), rows)


class SqliteDb(Db):
    sqlite = True

    def __init__(self, url: str) -> None:
        self.path = make_url(url).database
        self.local = threading.local()

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self.local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=10000")
            conn.execute("PRAGMA synchronous=FULL")
            self.local.conn = conn
        return conn

    def _all(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return [dict(r) for r in self._conn().execute(sql, params).fetchall()]

    async def all(self, sql: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        return await run_in_threadpool(self._all, sql, params)

    def _write(self, fn: Callable[[Any], Any]) -> Any:
        conn = self._conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            result = _drive(fn(_SqliteTx(conn)))
            conn.execute("COMMIT")
            return result
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    async def write(self, fn: Callable[[Any], Any]) -> Any:
        return await run_in_threadpool(self._write, fn)


def _drive(coro: Any) -> Any:
    """Run a coroutine that never really awaits (the SQLite transaction object is synchronous)."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    raise RuntimeError("the SQLite write path awaited something real")


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    async def lock(self) -> None:
        return None  # BEGIN IMMEDIATE already holds SQLite's write lock

    async def one(self, sql: str, params: dict[str, Any] | tuple[Any, ...] = ()) -> Any:
        row = self.conn.execute(sql.replace("%s", "?"), params).fetchone()
        return None if row is None else dict(row)

    async def many(self, sql: str, rows: list[dict[str, Any]]) -> None:
        self.conn.executemany(sql, rows)


# ---- handlers --------------------------------------------------------------------------------------


def _json(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(json.dumps(body, separators=(",", ":")), status, headers, "application/json")


def _not_found() -> Response:
    return JSONResponse({"title": "Not found", "status": 404}, 404, media_type="application/problem+json")


def _limit(request: Request) -> int:
    return int(request.query_params.get("limit", 50))


def _page(db: Db, rows: list[dict[str, Any]], limit: int, key: Callable[[dict[str, Any]], list[Any]]) -> Any:
    items = rows[:limit]
    cursor = encode_cursor(key(items[-1])) if len(rows) > limit and items else None
    return items, cursor


def _case_out(db: Db, row: dict[str, Any]) -> dict[str, Any]:
    full = bool(row.pop("full_access"))
    out = db.out(row)
    out["access"] = "full" if full else "summary"
    return out


def _insert(table: str, columns: str, **literals: str) -> str:
    """INSERT of named parameters, one per column, except the columns given a literal value."""
    cols = columns.split()
    values = ", ".join(literals.get(c, f":{c}") for c in cols)
    return f'INSERT INTO "{table}" ({", ".join(cols)}) VALUES ({values})'


INSERT_ITEM = _insert(
    "seized_item",
    "id case_id category description quantity location_id seized_at sha256 seized_by_agency_id "
    "custodian_agency_id status version created_at updated_at",
)
INSERT_CUSTODY = _insert(
    "custody_event",
    "id seized_item_id seq action from_agency_id to_agency_id at note recorded_by_agency_id created_at",
)
INSERT_AUDIT = _insert(
    "audit_entry",
    "seq at agency_id client_id action resource_type resource_id case_id purpose prev_hash hash",
)
INSERT_EVENT = _insert(
    "event",
    "seq type resource_type resource_id case_id request_from_agency_id request_to_agency_id at",
    request_from_agency_id="NULL",
    request_to_agency_id="NULL",
)
INSERT_CASE = _insert(
    "case",
    "id reference title summary status handling_code offence_types modus_operandi victim_regions "
    "opened_at closed_at lead_agency_id version created_at updated_at",
    version="1",
)
INSERT_PARTICIPANT = _insert(
    "participant", "case_id agency_id role version created_at updated_at", version="1"
)
INSERT_LOCATION = _insert(
    "location",
    "id case_id label address city country searched_at searched_by_agency_id version created_at updated_at",
    version="1",
)
INSERT_DETAINEE = _insert(
    "detainee",
    "id case_id label nationality detained_at location_id custody_status charges full_name date_of_birth "
    "id_document detained_by_agency_id review_due version created_at updated_at",
    version="1",
)


async def _journal(
    db: Db, tx: Any, actor: tuple[str, str], changes: list[tuple[str, str, str, str]], at: datetime
) -> None:
    """Audit entries (hash chain continued from the head) and feed events for the changes."""
    await tx.lock()
    head = await tx.one("SELECT seq, hash FROM audit_entry ORDER BY seq DESC LIMIT 1")
    seq, prev = (head["seq"], head["hash"]) if head else (0, GENESIS)
    last = await tx.one("SELECT coalesce(max(seq), 0) AS seq FROM event")
    eseq = last["seq"]
    agency, client = actor
    audits, events = [], []
    for action, rtype, rid, case_id in changes:
        seq += 1
        eseq += 1
        entry = {
            "seq": seq,
            "at": at.isoformat(),
            "agency_id": agency,
            "client_id": client,
            "action": action,
            "resource_type": rtype,
            "resource_id": rid,
            "case_id": case_id,
            "purpose": None,
            "prev_hash": prev,
        }
        digest = entry_hash(entry)
        audits.append(
            {
                **entry,
                "at": db.ts(at),
                "agency_id": db.uid(agency),
                "client_id": db.uid(client),
                "resource_id": db.uid(rid),
                "case_id": db.uid(case_id),
                "hash": digest,
            }
        )
        events.append(
            {
                "seq": eseq,
                "type": action,
                "resource_type": rtype,
                "resource_id": db.uid(rid),
                "case_id": db.uid(case_id),
                "at": db.ts(at),
            }
        )
        prev = digest
    await tx.many(INSERT_AUDIT, audits)
    await tx.many(INSERT_EVENT, events)


def create_app(url: str | None = None) -> Starlette:
    url = url or os.environ.get("CASEAPI_DATABASE_URL", "sqlite:///./caseapi.db")
    db: PgDb | SqliteDb = SqliteDb(url) if url.startswith("sqlite") else PgDb(url)
    keys: dict[str, tuple[str, str]] = {}  # key hash -> (agency id, client id)

    async def load_keys() -> None:
        rows = await db.all("SELECT key_hash, agency_id, id FROM api_client WHERE revoked_at IS NULL", {})
        keys.clear()
        for r in rows:
            keys[r["key_hash"]] = (
                db.out({"agency_id": r["agency_id"]})["agency_id"],
                db.out({"id": r["id"]})["id"],
            )

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> Any:
        await db.open()
        await load_keys()
        yield
        await db.close()

    def caller(request: Request) -> tuple[str, str] | None:
        auth = request.headers.get("authorization", "")
        return keys.get(hashlib.sha256(auth.removeprefix("Bearer ").encode()).hexdigest())

    def unauthorized() -> Response:
        return JSONResponse(
            {"title": "Unauthorized", "status": 401}, 401, media_type="application/problem+json"
        )

    async def health(_request: Request) -> Response:
        return _json({"status": "ok"})

    async def get_case(request: Request) -> Response:
        who = caller(request)
        if who is None:
            return unauthorized()
        rows = await db.all(
            SQL_CASE, {"id": db.uid(request.path_params["case_id"]), "agency": db.uid(who[0])}
        )
        if not rows:
            return _not_found()
        row = rows[0]
        if not row["full_access"] and row["handling_code"] not in PUBLIC:
            return _not_found()
        return _json(_case_out(db, row), headers={"ETag": f'"{row["version"]}"'})

    async def list_cases(request: Request) -> Response:
        who = caller(request)
        if who is None:
            return unauthorized()
        limit = _limit(request)
        params: dict[str, Any] = {"agency": db.uid(who[0]), "limit": limit + 1}
        after = ""
        if cursor := request.query_params.get("cursor"):
            at, cid = decode_cursor(cursor)
            after = "AND (c.created_at, c.id) > (:at, :cid)"
            params.update(at=db.ts(at), cid=db.uid(cid))
        rows = [_case_out(db, r) for r in await db.all(SQL_CASES.format(after=after), params)]
        items, next_cursor = _page(db, rows, limit, lambda r: [r["created_at"], r["id"]])
        return _json({"items": items, "next_cursor": next_cursor})

    async def list_items(request: Request) -> Response:
        if caller(request) is None:
            return unauthorized()
        limit = _limit(request)
        params: dict[str, Any] = {"case_id": db.uid(request.path_params["case_id"]), "limit": limit + 1}
        after = ""
        if cursor := request.query_params.get("cursor"):
            at, iid = decode_cursor(cursor)
            after = "AND (created_at, id) > (:at, :iid)"
            params.update(at=db.ts(at), iid=db.uid(iid))
        rows = [db.out(r) for r in await db.all(SQL_ITEMS.format(after=after), params)]
        items, next_cursor = _page(db, rows, limit, lambda r: [r["created_at"], r["id"]])
        return _json({"items": items, "next_cursor": next_cursor})

    async def list_events(request: Request) -> Response:
        who = caller(request)
        if who is None:
            return unauthorized()
        limit = _limit(request)
        params: dict[str, Any] = {"agency": db.uid(who[0]), "limit": limit + 1}
        after = ""
        if cursor := request.query_params.get("cursor"):
            (seq,) = decode_cursor(cursor)
            after = "AND e.seq > :seq"
            params["seq"] = int(seq)
        rows = [db.out(r) for r in await db.all(SQL_EVENTS.format(after=after), params)]
        items, next_cursor = _page(db, rows, limit, lambda r: [r["seq"]])
        return _json({"items": items, "next_cursor": next_cursor})

    async def create_item(request: Request) -> Response:
        who = caller(request)
        if who is None:
            return unauthorized()
        body = await request.json()
        case_id = request.path_params["case_id"]
        agency = who[0]
        now = _now()
        seized_by = body.get("seized_by_agency_id") or agency
        custodian = body.get("custodian_agency_id") or seized_by
        item_id, event_id = str(uuid.uuid4()), str(uuid.uuid4())
        item = {
            "id": item_id,
            "case_id": case_id,
            "category": body["category"],
            "description": body["description"],
            "quantity": body.get("quantity"),
            "location_id": body.get("location_id"),
            "seized_at": body.get("seized_at"),
            "sha256": body.get("sha256"),
            "seized_by_agency_id": seized_by,
            "custodian_agency_id": custodian,
            "status": "seized",
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }

        async def write(tx: Any) -> None:
            row = {k: db.uid(v) if k in UUID_COLS else v for k, v in item.items()}
            row.update(seized_at=db.ts(item["seized_at"]), created_at=db.ts(now), updated_at=db.ts(now))
            await tx.many(INSERT_ITEM, [row])
            await tx.many(
                INSERT_CUSTODY,
                [
                    {
                        "id": db.uid(event_id),
                        "seized_item_id": db.uid(item_id),
                        "seq": 1,
                        "action": "seized",
                        "from_agency_id": None,
                        "to_agency_id": db.uid(custodian),
                        "at": db.ts(item["seized_at"] or now),
                        "note": None,
                        "recorded_by_agency_id": db.uid(agency),
                        "created_at": db.ts(now),
                    }
                ],
            )
            await _journal(
                db,
                tx,
                who,
                [
                    ("seized_item.created", "seized_item", item_id, case_id),
                    ("custody_event.created", "custody_event", event_id, case_id),
                ],
                now,
            )

        await db.write(write)
        out = {**item, "created_at": _iso(now), "updated_at": _iso(now)}
        return _json(out, 201, {"Location": f"/api/v1/seized-items/{item_id}", "ETag": '"1"'})

    async def import_bundle(request: Request) -> Response:
        """A bundle as caseapi exports it, written with executemany: a new case and all under it."""
        who = caller(request)
        if who is None:
            return unauthorized()
        doc = await request.json()
        agency, _client = who
        now = _now()
        ts = db.ts(now)
        spec = doc["case"]
        case_id = str(uuid.uuid4())
        changes: list[tuple[str, str, str, str]] = [("case.created", "case", case_id, case_id)]
        changes.append(("participant.created", "participant", agency, case_id))
        locations = {loc["id"]: str(uuid.uuid4()) for loc in doc.get("locations", [])}
        loc_rows, item_rows, custody_rows, det_rows = [], [], [], []
        for loc in doc.get("locations", []):
            new = locations[loc["id"]]
            loc_rows.append(
                {
                    "id": db.uid(new),
                    "case_id": db.uid(case_id),
                    "label": loc["label"],
                    "address": loc.get("address"),
                    "city": loc.get("city"),
                    "country": loc.get("country"),
                    "searched_at": db.ts(loc.get("searched_at")),
                    "searched_by_agency_id": db.uid(loc.get("searched_by_agency_id")),
                    "created_at": ts,
                    "updated_at": ts,
                }
            )
            changes.append(("location.created", "location", new, case_id))
        for it in doc.get("seized_items", []):
            iid = str(uuid.uuid4())
            chain = it.get("custody") or [{"action": "seized", "at": it.get("seized_at") or now.isoformat()}]
            item_rows.append(
                {
                    "id": db.uid(iid),
                    "case_id": db.uid(case_id),
                    "category": it["category"],
                    "description": it["description"],
                    "quantity": it.get("quantity"),
                    "location_id": db.uid(locations.get(it.get("location_id")))
                    if it.get("location_id")
                    else None,
                    "seized_at": db.ts(it.get("seized_at")),
                    "sha256": it.get("sha256"),
                    "seized_by_agency_id": db.uid(it.get("seized_by_agency_id")),
                    "custodian_agency_id": db.uid(it.get("custodian_agency_id")),
                    "status": it.get("status") or "seized",
                    "version": 1,
                    "created_at": ts,
                    "updated_at": ts,
                }
            )
            changes.append(("seized_item.created", "seized_item", iid, case_id))
            for seq, ev in enumerate(chain, start=1):
                eid = str(uuid.uuid4())
                custody_rows.append(
                    {
                        "id": db.uid(eid),
                        "seized_item_id": db.uid(iid),
                        "seq": seq,
                        "action": ev["action"],
                        "from_agency_id": db.uid(ev.get("from_agency_id")),
                        "to_agency_id": db.uid(ev.get("to_agency_id")),
                        "at": db.ts(ev["at"]),
                        "note": ev.get("note"),
                        "recorded_by_agency_id": db.uid(ev.get("recorded_by_agency_id")),
                        "created_at": ts,
                    }
                )
                changes.append(("custody_event.created", "custody_event", eid, case_id))
        for d in doc.get("detainees", []):
            did = str(uuid.uuid4())
            det_rows.append(
                {
                    "id": db.uid(did),
                    "case_id": db.uid(case_id),
                    "label": d["label"],
                    "nationality": d.get("nationality"),
                    "detained_at": db.ts(d.get("detained_at")),
                    "location_id": db.uid(locations.get(d.get("location_id")))
                    if d.get("location_id")
                    else None,
                    "custody_status": d.get("custody_status") or "detained",
                    "charges": json.dumps(d.get("charges", [])),
                    "full_name": d.get("full_name"),
                    "date_of_birth": d.get("date_of_birth"),
                    "id_document": d.get("id_document"),
                    "detained_by_agency_id": db.uid(d.get("detained_by_agency_id")),
                    "review_due": d.get("review_due") or (now.date().replace(year=now.year + 1)).isoformat(),
                    "created_at": ts,
                    "updated_at": ts,
                }
            )
            changes.append(("detainee.created", "detainee", did, case_id))
        case_row = {
            "id": db.uid(case_id),
            "reference": spec["reference"],
            "title": spec["title"],
            "summary": spec.get("summary"),
            "status": spec.get("status", "open"),
            "handling_code": spec.get("handling_code", "TLP:AMBER"),
            "offence_types": json.dumps(spec.get("offence_types", [])),
            "modus_operandi": json.dumps(spec.get("modus_operandi", [])),
            "victim_regions": json.dumps(spec.get("victim_regions", [])),
            "opened_at": db.ts(spec.get("opened_at")) or ts,
            "closed_at": db.ts(spec.get("closed_at")),
            "lead_agency_id": db.uid(agency),
            "created_at": ts,
            "updated_at": ts,
        }

        async def write(tx: Any) -> None:
            await tx.many(INSERT_CASE, [case_row])
            await tx.many(
                INSERT_PARTICIPANT,
                [
                    {
                        "case_id": db.uid(case_id),
                        "agency_id": db.uid(agency),
                        "role": "lead",
                        "created_at": ts,
                        "updated_at": ts,
                    }
                ],
            )
            for sql, rows in (
                (INSERT_LOCATION, loc_rows),
                (INSERT_ITEM, item_rows),
                (INSERT_CUSTODY, custody_rows),
                (INSERT_DETAINEE, det_rows),
            ):
                if rows:
                    await tx.many(sql, rows)
            await _journal(db, tx, who, changes, now)

        await db.write(write)
        return _json(
            {"id": case_id, "reference": spec["reference"]}, 201, {"Location": f"/api/v1/cases/{case_id}"}
        )

    routes = [
        Route("/health", health),
        Route("/api/v1/health", health),
        Route("/api/v1/cases", list_cases),
        Route("/api/v1/cases/{case_id}", get_case),
        Route("/api/v1/cases/{case_id}/seized-items", list_items, methods=["GET"]),
        Route("/api/v1/cases/{case_id}/seized-items", create_item, methods=["POST"]),
        Route("/api/v1/events", list_events),
        Route("/api/v1/bundles", import_bundle, methods=["POST"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)
