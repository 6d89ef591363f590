"""The reference: the fastest hand-written service of caseapi's routes we know how to write.

The same routes as caseapi, answering the same JSON (fields, order, visibility rules: bench.run
checks it), written as a bare ASGI callable on asyncpg and orjson: no framework, no ORM, no
pydantic, no validation of the body. Statements are prepared once per connection (asyncpg's
statement cache) and results come back in the binary protocol. Visibility is decided in SQL,
with the rules of app.access for a caller whose agency has no parent: a case it does not see
answers 404 as a missing one does. Writes write the same rows as caseapi (the item, its seizure
event, the HMAC-chained audit entries and the feed events, under the same journal lock), in as
few round trips as we could: BEGIN, the item and its custody event with the lock, the heads,
the journal, COMMIT. Writes check neither the caller's right to write to the case nor an
Idempotency-Key: the POST measures the cost of the rows, not of the rules.

    CASEAPI_DATABASE_URL=postgresql://... CASEAPI_AUDIT_KEY=... \
        uvicorn --factory bench.reference:create_app --port 8001 --no-access-log

PostgreSQL only. API keys are resolved from a table read at startup: a hand-written service
with a fixed set of clients would do no more.
"""

import base64
import hashlib
import hmac
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import parse_qs

import asyncpg
import orjson
from sqlalchemy.engine import make_url

from app.cases.models import reference_key, search_text

GENESIS = "0" * 64
MAX_LIMIT = 200  # app.core.pagination
JOURNAL_LOCK = (
    0x63617365  # the journal's advisory lock (app.core.journal): caseapi and the reference share data
)
PUBLIC = "c.handling_code IN ('TLP:GREEN', 'TLP:CLEAR')"
# Events addressed to named agencies (app.events.service.ADDRESSED_TYPES).
ADDRESSED = "('information_request', 'request_message', 'message_attachment', 'subscription')"

Scope = dict[str, Any]
Send = Callable[[dict[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Answer = tuple[int, bytes, list[tuple[bytes, bytes]]]

# caseapi's field order (CasePublic); `access` computed by the statement, `origin` built from its columns.
CASE_SELECT = (
    "c.reference, c.title, c.summary, c.status, c.handling_code, c.offence_types, c.modus_operandi, "
    "c.victim_regions, c.opened_at, c.closed_at, c.id::text, c.lead_agency_id::text, "
    "CASE WHEN own.agency_id IS NULL THEN 'summary' ELSE 'full' END AS access, c.version, c.created_at, "
    "c.updated_at, c.origin_bundle_sha256, c.origin_case_id::text, c.origin_lead_agency_id::text, "
    "c.origin_exported_at"
)
CASE_KEYS = [
    "reference",
    "title",
    "summary",
    "status",
    "handling_code",
    "offence_types",
    "modus_operandi",
    "victim_regions",
    "opened_at",
    "closed_at",
    "id",
    "lead_agency_id",
    "access",
    "version",
    "created_at",
    "updated_at",
]
CASE_FROM = (
    'FROM "case" c LEFT JOIN participant own ON own.case_id = c.id AND own.agency_id = $1 '
    f"WHERE ({PUBLIC} OR own.agency_id IS NOT NULL)"
)
SQL_CASE = f"SELECT {CASE_SELECT} {CASE_FROM} AND c.id = $2"
SQL_CASES = f"SELECT {CASE_SELECT} {CASE_FROM} {{after}} ORDER BY c.created_at, c.id LIMIT {{limit}}"
CASES_AFTER = "AND (c.created_at, c.id) > ($2, $3)"

# Items only for a caller that sees the case in full; one row with ok = false otherwise (-> 404).
ITEM_COLS = (
    "category, description, quantity, location_id::text AS location_id, seized_at, sha256, id::text AS id, "
    "case_id::text AS case_id, seized_by_agency_id::text AS seized_by_agency_id, "
    "custodian_agency_id::text AS custodian_agency_id, status, version, created_at, updated_at"
)
SQL_ITEMS = (
    f"SELECT i.*, a.ok FROM (SELECT EXISTS (SELECT 1 FROM participant p WHERE p.case_id = $1 "
    "AND p.agency_id = $2) AS ok) a "
    f"LEFT JOIN LATERAL (SELECT {ITEM_COLS} FROM seized_item s WHERE s.case_id = $1 AND a.ok {{after}} "
    "ORDER BY s.created_at, s.id LIMIT {limit}) i ON true"
)
ITEMS_AFTER = "AND (s.created_at, s.id) > ($3, $4)"

# app.events.service.visible_events(with_parent=False).
SQL_EVENTS = (
    "SELECT e.seq, e.type, e.resource_type, e.resource_id::text AS resource_id, e.case_id::text AS case_id, "
    "e.from_agency_id::text AS from_agency_id, e.at FROM event e "
    'LEFT JOIN "case" c ON c.id = e.case_id '
    "LEFT JOIN participant own ON own.case_id = e.case_id AND own.agency_id = $1 "
    "WHERE (e.recipient_agency_id = $1 OR (e.recipient_agency_id IS NULL AND ("
    f" (e.resource_type IN {ADDRESSED} AND (e.request_from_agency_id = $1 OR e.request_to_agency_id = $1))"
    f" OR (e.resource_type NOT IN {ADDRESSED} AND e.case_id IS NULL AND e.resource_type = 'agency')"
    f" OR (e.resource_type NOT IN {ADDRESSED} AND own.agency_id IS NOT NULL)"
    f" OR (e.resource_type = 'case' AND {PUBLIC})"
    "))) {after} ORDER BY e.seq LIMIT {limit}"
)
EVENTS_AFTER = "AND e.seq > $2"

# The item and its seizure event in one statement, which also takes the journal lock: the
# heads are then read by the next statement, whose snapshot is taken after the lock is held.
SQL_POST_ITEM = (
    "WITH item AS (INSERT INTO seized_item (id, case_id, category, description, quantity, location_id, "
    "seized_at, sha256, seized_by_agency_id, custodian_agency_id, status, version, created_at, updated_at) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'seized', 1, $11, $11) RETURNING id), "
    "custody AS (INSERT INTO custody_event (id, seized_item_id, seq, action, to_agency_id, at, "
    "recorded_by_agency_id, created_at) SELECT $12, item.id, 1, 'seized', $10, $13, $14, $11 FROM item) "
    "SELECT pg_advisory_xact_lock($15)"
)
SQL_LOCK = "SELECT pg_advisory_xact_lock($1)"
SQL_HEADS = (
    "SELECT a.seq, a.hash, (SELECT coalesce(max(seq), 0) FROM event) AS event_seq "
    "FROM (SELECT 0) z LEFT JOIN (SELECT seq, hash FROM audit_entry ORDER BY seq DESC LIMIT 1) a ON true"
)
# Audit entries and feed events of one caller's changes to one case, in one statement.
SQL_JOURNAL = (
    "WITH audit AS (INSERT INTO audit_entry (seq, at, agency_id, client_id, action, resource_type, "
    "resource_id, case_id, prev_hash, hash) SELECT s, $2, $3, $4, act, rt, rid, $5, ph, h "
    "FROM unnest($1::int[], $6::text[], $7::text[], $8::uuid[], $9::text[], $10::text[]) "
    "AS t(s, act, rt, rid, ph, h)) "
    "INSERT INTO event (seq, type, resource_type, resource_id, case_id, at) "
    "SELECT s, act, rt, rid, $5, $2 FROM unnest($11::int[], $6::text[], $7::text[], $8::uuid[]) "
    "AS t(s, act, rt, rid)"
)

# The tables a bundle import loads with COPY, and the columns of its rows.
BUNDLE_COLUMNS = {
    "location": "id case_id label address city country searched_at searched_by_agency_id version "
    "created_at updated_at",
    "seized_item": "id case_id category description quantity location_id seized_at sha256 "
    "seized_by_agency_id custodian_agency_id status version created_at updated_at",
    "custody_event": "id seized_item_id seq action from_agency_id to_agency_id at note "
    "recorded_by_agency_id created_at",
    "detainee": "id case_id label nationality detained_at location_id custody_status charges full_name "
    "date_of_birth id_document detained_by_agency_id review_due version created_at updated_at",
}

JSON = [(b"content-type", b"application/json")]
PROBLEM = [(b"content-type", b"application/problem+json")]
NOT_FOUND: Answer = (404, b'{"title":"Not found","status":404}', PROBLEM)
UNAUTHORIZED: Answer = (401, b'{"title":"Unauthorized","status":401}', PROBLEM)
DUMP_OPTIONS = orjson.OPT_UTC_Z


def _dump(body: Any) -> bytes:
    # The statements read UUIDs as text: orjson serialises every other value natively.
    return orjson.dumps(body, option=DUMP_OPTIONS)


def encode_cursor(values: list[Any]) -> str:
    return base64.urlsafe_b64encode(_dump(values)).decode()


def decode_cursor(cursor: str) -> list[Any]:
    return orjson.loads(base64.urlsafe_b64decode(cursor))


def _limit(query: dict[str, str]) -> int:
    """caseapi's bounds. A literal in the statement, not a parameter: the plan of a prepared
    statement is then made for this limit (one statement per limit, in asyncpg's cache)."""
    limit = int(query.get("limit", 50))
    if not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"limit {limit}")
    return limit


def _instant(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value.replace("Z", "+00:00"))


def _day(value: str | None) -> date | None:
    return None if value is None else date.fromisoformat(value)


def _case(row: asyncpg.Record) -> dict[str, Any]:
    out = dict(row)
    sha = out.pop("origin_bundle_sha256")
    origin = (out.pop("origin_case_id"), out.pop("origin_lead_agency_id"), out.pop("origin_exported_at"))
    out["origin"] = (
        None
        if sha is None
        else {
            "bundle_sha256": sha,
            "case_id": origin[0],
            "lead_agency_id": origin[1],
            "exported_at": origin[2],
        }
    )
    return out


def _page(items: list[dict[str, Any]], limit: int, key: Callable[[dict[str, Any]], list[Any]]) -> bytes:
    cursor = encode_cursor(key(items[limit - 1])) if len(items) > limit else None
    return _dump({"items": items[:limit], "next_cursor": cursor})


class Journal:
    """Audit entries (the HMAC chain continued from its head) and feed events, as app.core.journal
    writes them."""

    def __init__(self, audit_key: bytes) -> None:
        self.key = audit_key

    def hash(self, entry: dict[str, Any]) -> str:
        # app.audit.service's canonical form: sorted keys, no spaces (every value here is ASCII,
        # so orjson's bytes are json.dumps's).
        return hmac.new(
            self.key, orjson.dumps(entry, option=orjson.OPT_SORT_KEYS), hashlib.sha256
        ).hexdigest()

    async def write(
        self,
        conn: asyncpg.Connection,
        actor: tuple[uuid.UUID, uuid.UUID],
        case_id: uuid.UUID,
        changes: list[tuple[str, str, uuid.UUID]],
        at: datetime,
    ) -> None:
        """Called with the journal lock held: (action, resource type, resource id) per change."""
        head = await conn.fetchrow(SQL_HEADS)
        seq, prev = (head["seq"], head["hash"]) if head["seq"] is not None else (0, GENESIS)
        agency, client = str(actor[0]), str(actor[1])
        stamp, case = at.isoformat(), str(case_id)
        seqs, prevs, hashes = [], [], []
        for action, rtype, rid in changes:
            seq += 1
            entry = {
                "seq": seq,
                "at": stamp,
                "agency_id": agency,
                "client_id": client,
                "action": action,
                "resource_type": rtype,
                "resource_id": str(rid),
                "case_id": case,
                "purpose": None,
                "prev_hash": prev,
            }
            seqs.append(seq)
            prevs.append(prev)
            prev = self.hash(entry)
            hashes.append(prev)
        first_event = head["event_seq"] + 1
        await conn.execute(
            SQL_JOURNAL,
            seqs,
            at,
            actor[0],
            actor[1],
            case_id,
            [c[0] for c in changes],
            [c[1] for c in changes],
            [c[2] for c in changes],
            prevs,
            hashes,
            list(range(first_event, first_event + len(changes))),
        )


async def _init(conn: asyncpg.Connection) -> None:
    for name in ("json", "jsonb"):
        await conn.set_type_codec(
            name, encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )


class Reference:
    """The ASGI application: a router of six routes over one asyncpg pool."""

    def __init__(self, dsn: str, audit_key: bytes) -> None:
        self.dsn = dsn
        self.journal = Journal(audit_key)
        self.pool: asyncpg.Pool | None = None
        self.hashes: dict[str, tuple[uuid.UUID, uuid.UUID]] = {}  # sha256 of a key -> (agency id, client id)
        # Authorization header -> caller, filled only by keys that exist, so bounded by the clients.
        self.callers: dict[bytes, tuple[uuid.UUID, uuid.UUID]] = {}

    async def start(self) -> None:
        self.pool = await asyncpg.create_pool(self.dsn, min_size=10, max_size=10, init=_init)
        rows = await self.pool.fetch(
            "SELECT key_hash, agency_id, id FROM api_client WHERE revoked_at IS NULL"
        )
        # As uuid.UUID (not asyncpg's own type): they go into answers, which orjson writes natively.
        self.hashes = {r["key_hash"]: (uuid.UUID(str(r["agency_id"])), uuid.UUID(str(r["id"]))) for r in rows}

    def caller(self, scope: Scope) -> tuple[uuid.UUID, uuid.UUID] | None:
        header = next((v for k, v in scope["headers"] if k == b"authorization"), b"")
        found = self.callers.get(header)
        if found is None and header.startswith(b"Bearer "):
            found = self.hashes.get(hashlib.sha256(header[7:]).hexdigest())
            if found is not None:
                self.callers[header] = found
        return found

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        status, body, headers = await self.answer(scope, receive)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [*headers, (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.pool is not None:
                    await self.pool.close()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def answer(self, scope: Scope, receive: Receive) -> Answer:
        parts = scope["path"].strip("/").split("/")
        if parts in (["health"], ["api", "v1", "health"]):
            return 200, b'{"status":"ok"}', JSON
        if parts[:2] != ["api", "v1"]:
            return NOT_FOUND
        who = self.caller(scope)
        if who is None:
            return UNAUTHORIZED
        query = {k: v[0] for k, v in parse_qs(scope["query_string"].decode()).items()}
        route, method = parts[2:], scope["method"]
        try:
            if route == ["cases"] and method == "GET":
                return await self.list_cases(who, query)
            if route == ["events"] and method == "GET":
                return await self.list_events(who, query)
            if route == ["bundles"] and method == "POST":
                return await self.import_bundle(who, orjson.loads(await _body(receive)))
            if len(route) >= 2 and route[0] == "cases":
                case_id = uuid.UUID(route[1])
                if len(route) == 2 and method == "GET":
                    return await self.get_case(who, case_id)
                if route[2:] == ["seized-items"] and method == "GET":
                    return await self.list_items(who, case_id, query)
                if route[2:] == ["seized-items"] and method == "POST":
                    return await self.create_item(who, case_id, orjson.loads(await _body(receive)))
        except ValueError:
            return 422, b'{"title":"Unprocessable","status":422}', PROBLEM
        return NOT_FOUND

    @property
    def db(self) -> asyncpg.Pool:
        assert self.pool is not None, "the lifespan opens the pool"
        return self.pool

    async def get_case(self, who: tuple[uuid.UUID, uuid.UUID], case_id: uuid.UUID) -> Answer:
        row = await self.db.fetchrow(SQL_CASE, who[0], case_id)
        if row is None:
            return NOT_FOUND
        return 200, _dump(_case(row)), [*JSON, (b"etag", f'"{row["version"]}"'.encode())]

    async def list_cases(self, who: tuple[uuid.UUID, uuid.UUID], query: dict[str, str]) -> Answer:
        limit = _limit(query)
        args: list[Any] = [who[0]]
        after = ""
        if cursor := query.get("cursor"):
            at, cid = decode_cursor(cursor)
            args += [_instant(at), uuid.UUID(cid)]
            after = CASES_AFTER
        rows = await self.db.fetch(SQL_CASES.format(after=after, limit=limit + 1), *args)
        return 200, _page([_case(r) for r in rows], limit, lambda r: [r["created_at"], r["id"]]), JSON

    async def list_items(
        self, who: tuple[uuid.UUID, uuid.UUID], case_id: uuid.UUID, query: dict[str, str]
    ) -> Answer:
        limit = _limit(query)
        args: list[Any] = [case_id, who[0]]
        after = ""
        if cursor := query.get("cursor"):
            at, iid = decode_cursor(cursor)
            args += [_instant(at), uuid.UUID(iid)]
            after = ITEMS_AFTER
        rows = await self.db.fetch(SQL_ITEMS.format(after=after, limit=limit + 1), *args)
        if not rows[0]["ok"]:
            return NOT_FOUND
        items = [] if rows[0]["id"] is None else [dict(r) for r in rows]
        for item in items:
            del item["ok"]
        return 200, _page(items, limit, lambda r: [r["created_at"], r["id"]]), JSON

    async def list_events(self, who: tuple[uuid.UUID, uuid.UUID], query: dict[str, str]) -> Answer:
        limit = _limit(query)
        args: list[Any] = [who[0]]
        after = ""
        if cursor := query.get("cursor"):
            args.append(int(decode_cursor(cursor)[0]))
            after = EVENTS_AFTER
        rows = await self.db.fetch(SQL_EVENTS.format(after=after, limit=limit + 1), *args)
        return 200, _page([dict(r) for r in rows], limit, lambda r: [r["seq"]]), JSON

    async def create_item(
        self, who: tuple[uuid.UUID, uuid.UUID], case_id: uuid.UUID, body: dict[str, Any]
    ) -> Answer:
        async with self.db.acquire() as conn:
            item, _locked_at = await self.write_item(conn, who, case_id, body)
        headers = [*JSON, (b"location", f"/api/v1/seized-items/{item['id']}".encode()), (b"etag", b'"1"')]
        return 201, _dump(item), headers

    async def write_item(
        self,
        conn: asyncpg.Connection,
        who: tuple[uuid.UUID, uuid.UUID],
        case_id: uuid.UUID,
        body: dict[str, Any],
    ) -> tuple[dict[str, Any], float]:
        """The item, its seizure event and their journal in one transaction on `conn`. Returns the
        item and the perf_counter() at which the journal lock was seen held (bench.writes times
        the lock from there to the end of COMMIT)."""
        agency = who[0]
        now = datetime.now(UTC)
        seized_by = _uid(body.get("seized_by_agency_id")) or agency
        custodian = _uid(body.get("custodian_agency_id")) or seized_by
        item_id, event_id = uuid.uuid4(), uuid.uuid4()
        seized_at = _instant(body.get("seized_at"))
        item = {
            "category": body["category"],
            "description": body["description"],
            "quantity": body.get("quantity"),
            "location_id": _uid(body.get("location_id")),
            "seized_at": seized_at,
            "sha256": body.get("sha256"),
            "id": item_id,
            "case_id": case_id,
            "seized_by_agency_id": seized_by,
            "custodian_agency_id": custodian,
            "status": "seized",
            "version": 1,
            "created_at": now,
            "updated_at": now,
        }
        async with conn.transaction():
            await conn.execute(
                SQL_POST_ITEM,
                item_id,
                case_id,
                item["category"],
                item["description"],
                item["quantity"],
                item["location_id"],
                seized_at,
                item["sha256"],
                seized_by,
                custodian,
                now,
                event_id,
                seized_at or now,
                agency,
                JOURNAL_LOCK,
            )
            locked_at = time.perf_counter()
            await self.journal.write(
                conn,
                who,
                case_id,
                [
                    ("seized_item.created", "seized_item", item_id),
                    ("custody_event.created", "custody_event", event_id),
                ],
                now,
            )
        return item, locked_at

    async def import_bundle(self, who: tuple[uuid.UUID, uuid.UUID], doc: dict[str, Any]) -> Answer:
        """A bundle as caseapi exports it: a new case and all under it, loaded with COPY."""
        agency = who[0]
        now = datetime.now(UTC)
        spec = doc["case"]
        case_id = uuid.uuid4()
        changes: list[tuple[str, str, uuid.UUID]] = [
            ("case.created", "case", case_id),
            ("participant.created", "participant", agency),
        ]
        locations = {loc["id"]: uuid.uuid4() for loc in doc.get("locations", [])}
        tables: dict[str, list[tuple[Any, ...]]] = {table: [] for table in BUNDLE_COLUMNS}
        for loc in doc.get("locations", []):
            new = locations[loc["id"]]
            tables["location"].append(
                (
                    new,
                    case_id,
                    loc["label"],
                    loc.get("address"),
                    loc.get("city"),
                    loc.get("country"),
                    _instant(loc.get("searched_at")),
                    _uid(loc.get("searched_by_agency_id")),
                    1,
                    now,
                    now,
                )
            )
            changes.append(("location.created", "location", new))
        for it in doc.get("seized_items", []):
            iid = uuid.uuid4()
            tables["seized_item"].append(
                (
                    iid,
                    case_id,
                    it["category"],
                    it["description"],
                    it.get("quantity"),
                    locations.get(it.get("location_id")),
                    _instant(it.get("seized_at")),
                    it.get("sha256"),
                    _uid(it.get("seized_by_agency_id")),
                    _uid(it.get("custodian_agency_id")),
                    it.get("status") or "seized",
                    1,
                    now,
                    now,
                )
            )
            changes.append(("seized_item.created", "seized_item", iid))
            chain = it.get("custody") or [{"action": "seized", "at": it.get("seized_at") or now.isoformat()}]
            for seq, ev in enumerate(chain, start=1):
                eid = uuid.uuid4()
                tables["custody_event"].append(
                    (
                        eid,
                        iid,
                        seq,
                        ev["action"],
                        _uid(ev.get("from_agency_id")),
                        _uid(ev.get("to_agency_id")),
                        _instant(ev["at"]),
                        ev.get("note"),
                        _uid(ev.get("recorded_by_agency_id")),
                        now,
                    )
                )
                changes.append(("custody_event.created", "custody_event", eid))
        for d in doc.get("detainees", []):
            did = uuid.uuid4()
            review_due = _day(d.get("review_due")) or now.date().replace(year=now.year + 1)
            tables["detainee"].append(
                (
                    did,
                    case_id,
                    d["label"],
                    d.get("nationality"),
                    _instant(d.get("detained_at")),
                    locations.get(d.get("location_id")),
                    d.get("custody_status") or "detained",
                    orjson.dumps(d.get("charges", [])).decode(),
                    d.get("full_name"),
                    _day(d.get("date_of_birth")),
                    d.get("id_document"),
                    _uid(d.get("detained_by_agency_id")),
                    review_due,
                    1,
                    now,
                    now,
                )
            )
            changes.append(("detainee.created", "detainee", did))
        reference = spec["reference"]
        async with self.db.acquire() as conn, conn.transaction():
            await conn.execute(
                'INSERT INTO "case" (id, reference, reference_key, title, summary, status, handling_code, '
                "offence_types, modus_operandi, victim_regions, opened_at, closed_at, lead_agency_id, "
                "version, created_at, updated_at, search_text) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, 1, $14, $14, $15)",
                case_id,
                reference,
                reference_key(reference),
                spec["title"],
                spec.get("summary"),
                spec.get("status", "open"),
                spec.get("handling_code", "TLP:AMBER"),
                spec.get("offence_types", []),
                spec.get("modus_operandi", []),
                spec.get("victim_regions", []),
                _instant(spec.get("opened_at")) or now,
                _instant(spec.get("closed_at")),
                agency,
                now,
                search_text(reference, spec["title"], spec.get("summary")),
            )
            await conn.execute(
                "INSERT INTO participant (case_id, agency_id, role, version, created_at, updated_at) "
                "VALUES ($1, $2, 'lead', 1, $3, $3)",
                case_id,
                agency,
                now,
            )
            for table, rows in tables.items():
                if rows:
                    await conn.copy_records_to_table(
                        table, records=rows, columns=BUNDLE_COLUMNS[table].split()
                    )
            await conn.execute(SQL_LOCK, JOURNAL_LOCK)
            await self.journal.write(conn, who, case_id, changes, now)
        body = _dump({"id": case_id, "reference": reference})
        return 201, body, [*JSON, (b"location", f"/api/v1/cases/{case_id}".encode())]


def _uid(value: str | None) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(value)


async def _body(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


def create_app(url: str | None = None) -> Reference:
    url = url or os.environ["CASEAPI_DATABASE_URL"]
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    return Reference(dsn, os.environ["CASEAPI_AUDIT_KEY"].encode())
