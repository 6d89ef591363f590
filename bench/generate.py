"""A deterministic synthetic dataset on top of `caseapi migrate` + `caseapi seed`.

    python -m bench.generate --db URL --size small|medium|large [--fresh]

Sizes: small ~1 k cases, medium ~100 k, large ~1 M. Per case, in the proportions of a
real joint investigation: the lead and 1-2 other participants, 1-3 search locations,
3-7 seized items each with 1-3 custody events, 0-4 detainees; every created row has its
audit entry (a valid hash chain, hashed with app.audit.service.entry_hash) and its feed
event, as the app's journal would have written them. Plus three special cases: one with
10 000 seized items (the bundle export/import check) and two empty ones that the load
driver POSTs into.

Rows go in with PostgreSQL COPY (foreign-key triggers off for the loading session only,
the generator keeps every reference valid) or SQLite executemany in large transactions.
The benchmark's API clients are created through app.auth.service.create_client, so their
audit entries come from the app's own journal. A small marker file under bench/data/
records what was generated (and the keys, which are shown only once), so that a second
run with the same size and seed reuses the database instead of generating it again.
"""

import argparse
import json
import random
import sqlite3
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from tqdm import tqdm

import app.core.journal
import app.models  # noqa: F401
from app import seed
from app.auth.models import Scope
from app.auth.service import create_client
from app.cases.models import reference_key, search_text
from app.core import migrate
from app.core.chain import GENESIS, entry_hash
from app.core.config import Settings
from app.core.db import create_db_engine
from app.core.secrets import audit_key
from bench import run_unit, use_bench_audit_key

SIZES = {"small": 1_000, "medium": 100_000, "large": 1_000_000}
DEFAULT_SEED = 20251123
GENERATOR_VERSION = 1  # the data; how it is loaded may change without it
BUNDLE_ITEMS = 10_000
CHUNK_CASES = 2_000
DATA_DIR = Path(__file__).resolve().parent / "data"
BENCH_AGENCY = "KZ-MVD"
BASE_TIME = datetime(2019, 1, 1, tzinfo=UTC)
SPAN = timedelta(days=5 * 365)

REF_BUNDLE = "BENCH-BUNDLE-10K"
REF_POSTS = "BENCH-POST-TARGET"
REF_SINGLE = "BENCH-SINGLE-POSTS"

COLUMNS: dict[str, tuple[str, ...]] = {
    "case": (
        "reference", "title", "summary", "status", "handling_code", "offence_types", "modus_operandi",
        "victim_regions", "opened_at", "closed_at", "id", "lead_agency_id", "version", "created_at",
        "updated_at", "search_text", "reference_key",
    ),
    "participant": ("case_id", "agency_id", "role", "version", "created_at", "updated_at"),
    "location": (
        "label", "address", "city", "country", "searched_at", "searched_by_agency_id", "id", "case_id",
        "version", "created_at", "updated_at",
    ),
    "seized_item": (
        "category", "description", "quantity", "location_id", "seized_at", "sha256", "id", "case_id",
        "seized_by_agency_id", "custodian_agency_id", "status", "version", "created_at", "updated_at",
    ),
    "custody_event": (
        "action", "from_agency_id", "to_agency_id", "at", "note", "id", "seized_item_id", "seq",
        "recorded_by_agency_id", "created_at",
    ),
    "detainee": (
        "label", "nationality", "detained_at", "location_id", "custody_status", "charges", "full_name",
        "date_of_birth", "id_document", "id", "case_id", "detained_by_agency_id", "review_due", "version",
        "created_at", "updated_at",
    ),
    "audit_entry": (
        "seq", "at", "agency_id", "client_id", "action", "resource_type", "resource_id", "case_id",
        "purpose", "prev_hash", "hash",
    ),
    "event": (
        "seq", "type", "resource_type", "resource_id", "case_id", "request_from_agency_id",
        "request_to_agency_id", "at",
    ),
}  # fmt: skip
# Parents before children, so that a loader with foreign keys on could take them in this order.
TABLE_ORDER = tuple(COLUMNS)

OFFENCES = ("fraud", "money laundering", "cybercrime", "identity theft", "extortion", "forgery")
MODUS = (
    "fictitious chargeback schemes",
    "forged documents",
    "deepfake technology",
    "social engineering",
    "coercing victims into paying fees",
    "phishing sites",
    "remote-access software",
)
REGIONS = ("KZ", "UA", "EU", "CIS", "KG", "UZ", "AZ", "AM", "BY", "TJ")
COUNTRIES = ("UA", "KZ", "KG", "UZ", "AZ", "AM", "BY", "TJ", "TM", "GE")
CITIES = ("Kyiv", "Astana", "Almaty", "Bishkek", "Tashkent", "Baku", "Yerevan", "Minsk", "Dushanbe")
STREETS = ("Main street", "Station road", "Market square", "River lane", "Industrial avenue")
CATEGORIES = (
    ("computer", 25), ("mobile_phone", 25), ("sim_card", 15), ("storage_media", 10), ("database", 5),
    ("document", 10), ("cash", 4), ("crypto_asset", 3), ("vehicle", 2), ("other", 1),
)  # fmt: skip
DIGITAL = {"computer", "mobile_phone", "sim_card", "storage_media", "database", "crypto_asset"}
HANDLING = (
    ("TLP:AMBER", 50),
    ("TLP:GREEN", 20),
    ("TLP:RED", 10),
    ("TLP:AMBER+STRICT", 10),
    ("TLP:CLEAR", 10),
)
CASE_STATUS = (("active", 50), ("open", 25), ("suspended", 10), ("closed", 15))
CUSTODY_STATUS = (
    ("detained", 20), ("in_custody", 40), ("house_arrest", 10), ("released_on_bail", 10),
    ("released", 10), ("extradited", 5), ("convicted", 5),
)  # fmt: skip
CHARGES = ("fraud", "participation in a criminal organisation", "forgery", "money laundering")
NOTES = (
    None,
    None,
    "Sealed bag, signed by two officers.",
    "Imaged for examination.",
    "Handed over on receipt.",
)

for _pool in (OFFENCES, MODUS, REGIONS, CITIES, STREETS, CHARGES):
    # COPY's text format gives backslash, tab and newline a meaning; JSON would escape quotes.
    assert not any(ch in s for s in _pool for ch in '\\\t\n"'), "pools hold plain text only"


def _dash(h: str | None) -> str | None:
    return None if h is None else f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


class _Entry:
    """What app.audit.service.entry_hash reads off an AuditEntry, without the ORM's cost."""

    __slots__ = (
        "action", "agency_id", "at", "case_id", "client_id", "detail", "prev_hash", "purpose",
        "resource_id", "resource_type", "seq",
    )  # fmt: skip

    def __init__(self, **kw: Any) -> None:
        for k, v in kw.items():
            setattr(self, k, v)


@dataclass
class Backend:
    """How one database spells values and takes rows."""

    name: str
    ts: Callable[[datetime], str]
    day: Callable[[date], str]

    @staticmethod
    def for_url(url: str) -> "Backend":
        if url.startswith("sqlite"):
            return Backend("sqlite", lambda d: d.strftime("%Y-%m-%d %H:%M:%S.%f"), date.isoformat)
        return Backend("postgresql", lambda d: d.strftime("%Y-%m-%d %H:%M:%S.%f+00"), date.isoformat)


@dataclass
class Batch:
    rows: dict[str, list[tuple[Any, ...]]] = field(default_factory=lambda: {t: [] for t in COLUMNS})

    def count(self) -> int:
        return sum(len(r) for r in self.rows.values())


class Generator:
    """Rows of synthetic cases, ids from a seeded RNG, audit chain continued from the seed's head."""

    def __init__(
        self,
        backend: Backend,
        rng: random.Random,
        agencies: dict[str, str],
        audit_head: tuple[int, str],
        event_seq: int,
        n_cases: int,
    ) -> None:
        self.b = backend
        self.rng = rng
        self.agencies = agencies  # code -> id hex
        self.codes = sorted(agencies)
        self.audit_seq, self.prev_hash = audit_head
        self.audit_key = audit_key(Settings())  # the servers' (use_bench_audit_key)
        self.event_seq = event_seq
        self.step = SPAN / max(n_cases, 1)
        self._weights: dict[int, tuple[list[str], list[int]]] = {}

    # ---- small helpers -------------------------------------------------------------------------------

    def uid(self) -> str:
        x = self.rng.getrandbits(128)
        x = (x & ~(0xF000 << 64)) | (0x4000 << 64)  # version 4
        x = (x & ~(0xC000 << 48)) | (0x8000 << 48)  # RFC 4122 variant
        return f"{x:032x}"

    def pick(self, table: Sequence[tuple[str, int]]) -> str:
        key = id(table)
        if key not in self._weights:
            self._weights[key] = ([v for v, _ in table], [w for _, w in table])
        values, weights = self._weights[key]
        return self.rng.choices(values, weights)[0]

    def record(
        self,
        batch: Batch,
        action: str,
        rtype: str,
        rid: str,
        case_id: str,
        agency: str,
        at: datetime,
        at_txt: str,
    ) -> None:
        """The audit entry and feed event the journal writes for one change."""
        self.audit_seq += 1
        entry = _Entry(
            seq=self.audit_seq,
            at=at,
            agency_id=_dash(agency),
            client_id=None,
            action=action,
            resource_type=rtype,
            resource_id=_dash(rid),
            case_id=_dash(case_id),
            purpose=None,
            detail=None,
            prev_hash=self.prev_hash,
        )
        digest = entry_hash(entry, self.audit_key)  # type: ignore[arg-type]
        batch.rows["audit_entry"].append(
            (self.audit_seq, at_txt, agency, None, action, rtype, rid, case_id, None, self.prev_hash, digest)
        )
        self.prev_hash = digest
        self.event_seq += 1
        batch.rows["event"].append((self.event_seq, action, rtype, rid, case_id, None, None, at_txt))

    # ---- one case ------------------------------------------------------------------------------------

    def case(
        self,
        batch: Batch,
        n: int,
        *,
        reference: str | None = None,
        lead: str | None = None,
        items: int | None = None,
        members: Sequence[tuple[str, str]] | None = None,
        handling: str | None = None,
        at: datetime | None = None,
    ) -> str:
        rng, b, rows = self.rng, self.b, batch.rows
        t0 = at or (BASE_TIME + self.step * n).replace(microsecond=0)
        ts = b.ts(t0)
        case_id = self.uid()
        lead_code = lead or rng.choice(self.codes)
        lead_id = self.agencies[lead_code]
        status = self.pick(CASE_STATUS)
        closed = b.ts(t0 + timedelta(days=rng.randint(30, 400))) if status == "closed" else None
        reference = reference or f"BENCH-{n:07d}"
        title = f"Synthetic case {n}: {rng.choice(OFFENCES)} in {rng.choice(CITIES)}"
        summary = (
            None
            if rng.random() < 0.2
            else f"{rng.choice(MODUS).capitalize()}; victims in {rng.choice(REGIONS)}."
        )
        rows["case"].append(
            (
                reference,
                title,
                summary,
                status,
                handling or self.pick(HANDLING),
                json.dumps(rng.sample(OFFENCES, rng.randint(1, 2))),
                json.dumps(rng.sample(MODUS, rng.randint(1, 3))),
                json.dumps(rng.sample(REGIONS, rng.randint(1, 3))),
                ts,
                closed,
                case_id,
                lead_id,
                1,
                ts,
                ts,
                search_text(reference, title, summary),
                reference_key(reference),
            )
        )
        self.record(batch, "case.created", "case", case_id, case_id, lead_id, t0, ts)

        if members is None:
            others = rng.sample([c for c in self.codes if c != lead_code], rng.randint(1, 2))
            members = [(lead_code, "lead")] + [
                (c, "partner" if rng.random() < 0.6 else "observer") for c in others
            ]
        holders = [self.agencies[c] for c, role in members if role != "observer"]
        for code, role in members:
            aid = self.agencies[code]
            rows["participant"].append((case_id, aid, role, 1, ts, ts))
            self.record(batch, "participant.created", "participant", aid, case_id, lead_id, t0, ts)

        locations = []
        for k in range(1, rng.randint(1, 3) + 1):
            lid = self.uid()
            locations.append(lid)
            rows["location"].append(
                (
                    f"Search location {k}",
                    f"{rng.randint(1, 200)} {rng.choice(STREETS)}",
                    rng.choice(CITIES),
                    rng.choice(COUNTRIES),
                    ts,
                    lead_id,
                    lid,
                    case_id,
                    1,
                    ts,
                    ts,
                )
            )
            self.record(batch, "location.created", "location", lid, case_id, lead_id, t0, ts)

        for _ in range(items if items is not None else rng.randint(3, 7)):
            self._item(batch, case_id, lead_id, holders, locations, t0, ts)

        for k in range(1, (0 if items is not None else rng.randint(0, 4)) + 1):
            did = self.uid()
            rows["detainee"].append(
                (
                    f"Detainee {k}",
                    rng.choice(COUNTRIES),
                    ts,
                    rng.choice(locations),
                    self.pick(CUSTODY_STATUS),
                    json.dumps(rng.sample(CHARGES, rng.randint(0, 2))),
                    f"Synthetic Person {n}-{k}",
                    b.day(date(1960 + rng.randint(0, 45), rng.randint(1, 12), rng.randint(1, 28))),
                    f"PASSPORT-{rng.randint(10**7, 10**8 - 1)}",
                    did,
                    case_id,
                    lead_id,
                    b.day(seed_one_year_after(t0.date())),
                    1,
                    ts,
                    ts,
                )
            )
            self.record(batch, "detainee.created", "detainee", did, case_id, lead_id, t0, ts)
        return case_id

    def _item(
        self,
        batch: Batch,
        case_id: str,
        lead_id: str,
        holders: list[str],
        locations: list[str],
        t0: datetime,
        ts: str,
    ) -> None:
        rng, rows = self.rng, batch.rows
        iid = self.uid()
        category = self.pick(CATEGORIES)
        custodian, status, version = lead_id, "seized", 1
        custody = [("seized", None, lead_id, ts)]
        for k in range(rng.choices((0, 1, 2), (50, 35, 15))[0]):
            at_txt = self.b.ts(t0 + timedelta(hours=k + 1))
            others = [h for h in holders if h != custodian]
            if others and rng.random() < 0.5:
                target = rng.choice(others)
                custody.append(("transferred", custodian, target, at_txt))
                custodian, status = target, "transferred"
            else:
                custody.append(("examined", None, None, at_txt))
                status = "under_examination"
            version += 1
        rows["seized_item"].append(
            (
                category,
                f"Synthetic {category.replace('_', ' ')} no. {rng.randint(1, 10**6)}",
                None if rng.random() < 0.15 else rng.randint(1, 50),
                rng.choice(locations) if rng.random() < 0.8 else None,
                ts,
                f"{rng.getrandbits(256):064x}" if category in DIGITAL and rng.random() < 0.5 else None,
                iid,
                case_id,
                lead_id,
                custodian,
                status,
                version,
                ts,
                ts,
            )
        )
        self.record(batch, "seized_item.created", "seized_item", iid, case_id, lead_id, t0, ts)
        for seq, (action, frm, to, at_txt) in enumerate(custody, start=1):
            cid = self.uid()
            rows["custody_event"].append(
                (action, frm, to, at_txt, rng.choice(NOTES), cid, iid, seq, lead_id, ts)
            )
            self.record(batch, "custody_event.created", "custody_event", cid, case_id, lead_id, t0, ts)
            if seq > 1:
                self.record(batch, "seized_item.updated", "seized_item", iid, case_id, lead_id, t0, ts)


def seed_one_year_after(day: date) -> date:
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year + 1, day=28)


# ---- writers -----------------------------------------------------------------------------------------


_PG_CONSTRAINTS = """
SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid), c.contype
FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
WHERE n.nspname = current_schema() AND c.contype IN ('p', 'u', 'f')
  AND (c.conrelid::regclass::text = ANY(%(tables)s) OR c.confrelid::regclass::text = ANY(%(tables)s))
"""
_PG_INDEXES = """
SELECT i.indexrelid::regclass::text, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace
WHERE n.nspname = current_schema() AND t.relname = ANY(%(names)s)
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid AND c.contype IN ('p', 'u'))
"""


class PostgresWriter:
    """COPY into tables whose keys, indexes and foreign keys are dropped for the load and rebuilt after.

    Random UUID keys make every index insert a random write: past a few million rows the load
    slows to a crawl (measured: 1 300 cases/s at the start of a 1 M load, 60 cases/s at 86 %).
    Building each index once, from sorted data, at the end is far cheaper. The definitions are
    read from the catalog and put back under the same names, so the schema ends exactly as the
    migrations made it.
    """

    def __init__(self, url: str, *, rebuild: bool = True) -> None:
        conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
        self.conn = psycopg.connect(conninfo)
        try:
            # Foreign-key checks are triggers; the generator keeps every reference valid, and
            # skipping them makes the load several times faster. Superuser only: else keep them.
            self.conn.execute("SET session_replication_role = replica")
        except psycopg.Error:
            self.conn.rollback()
        self.constraints: list[tuple[str, str, str, str]] = []
        self.indexes: list[tuple[str, str]] = []
        if rebuild:
            self._drop_keys()

    def _drop_keys(self) -> None:
        tables = [f'"{t}"' if t == "case" else t for t in COLUMNS]
        self.constraints = self.conn.execute(_PG_CONSTRAINTS, {"tables": tables}).fetchall()
        self.indexes = self.conn.execute(_PG_INDEXES, {"names": list(COLUMNS)}).fetchall()
        for table, name, _, _kind in sorted(self.constraints, key=lambda c: c[3] != "f"):
            self.conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT "{name}"')
        for name, _ in self.indexes:
            self.conn.execute(f"DROP INDEX {name}")
        self.conn.commit()

    def _restore_keys(self) -> None:
        self.conn.execute("SET maintenance_work_mem = '1GB'")
        for table, name, definition, _ in sorted(self.constraints, key=lambda c: c[3] == "f"):
            self.conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        for _, definition in self.indexes:
            self.conn.execute(definition)

    def write(self, batch: Batch) -> None:
        with self.conn.cursor() as cur:
            for table in TABLE_ORDER:
                rows = batch.rows[table]
                if not rows:
                    continue
                text = "".join("\t".join(_copy_text(v) for v in row) + "\n" for row in rows).encode()
                with cur.copy(f'COPY "{table}" ({", ".join(COLUMNS[table])}) FROM STDIN') as copy:
                    copy.write(text)

    def commit(self) -> None:
        self.conn.commit()

    def finish(self) -> None:
        self.conn.commit()
        started = time.monotonic()
        self._restore_keys()
        self.conn.commit()
        print(f"keys and indexes rebuilt in {time.monotonic() - started:.1f} s", file=sys.stderr)
        self.conn.autocommit = True
        self.conn.execute("ANALYZE")
        self.conn.close()


def _copy_text(value: Any) -> str:
    """A value in COPY's text format (a case's search_text holds newlines)."""
    if value is None:
        return "\\N"
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t")


class SqliteWriter:
    def __init__(self, url: str) -> None:
        path = make_url(url).database
        assert path, "an SQLite URL names a file"
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=OFF")
        self.conn.execute("PRAGMA foreign_keys=OFF")
        self.conn.execute("PRAGMA cache_size=-400000")
        self.conn.execute("BEGIN")

    def write(self, batch: Batch) -> None:
        for table in TABLE_ORDER:
            rows = batch.rows[table]
            if rows:
                cols = COLUMNS[table]
                marks = ",".join("?" * len(cols))
                self.conn.executemany(f'INSERT INTO "{table}" ({", ".join(cols)}) VALUES ({marks})', rows)

    def commit(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.execute("BEGIN")

    def finish(self) -> None:
        self.conn.execute("COMMIT")
        self.conn.execute("ANALYZE")
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        self.conn.close()


# ---- the database itself -----------------------------------------------------------------------------


def marker_path(url: str) -> Path:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        name = Path(u.database or "caseapi").stem
        return DATA_DIR / f"sqlite-{name}.json"
    return DATA_DIR / f"pg-{u.host or 'local'}-{u.port or 5432}-{u.database}.json"


def read_marker(url: str) -> dict[str, Any] | None:
    path = marker_path(url)
    return json.loads(path.read_text()) if path.exists() else None


def recreate_database(url: str) -> None:
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        path = Path(u.database or "")
        for suffix in ("", "-wal", "-shm"):
            Path(str(path) + suffix).unlink(missing_ok=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        return
    admin = sa.create_engine(u.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{u.database}" WITH (FORCE)')
        conn.exec_driver_sql(f'CREATE DATABASE "{u.database}"')
    admin.dispose()


def _counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {t: conn.exec_driver_sql(f'SELECT count(*) FROM "{t}"').scalar_one() for t in COLUMNS}


def generate(url: str, size: str, *, rng_seed: int = DEFAULT_SEED, fresh: bool = False) -> dict[str, Any]:
    """Generate the dataset unless the marker says this database already holds it."""
    n_cases = SIZES[size]
    wanted = {"size": size, "cases": n_cases, "seed": rng_seed, "generator": GENERATOR_VERSION}
    marker = read_marker(url)
    if not fresh and marker and all(marker.get(k) == v for k, v in wanted.items()):
        engine = create_db_engine(url)
        try:
            with engine.connect() as conn:
                found = conn.exec_driver_sql('SELECT count(*) FROM "case"').scalar_one()
        except sa.exc.SQLAlchemyError:
            found = -1
        finally:
            engine.dispose()
        if found >= marker["counts"]["case"]:
            print(f"dataset {size} already in place ({found} cases): reusing it", file=sys.stderr)
            return marker

    started = time.monotonic()
    recreate_database(url)
    marker_path(url).unlink(missing_ok=True)
    engine = create_db_engine(url)
    with engine.begin() as conn:
        migrate.upgrade(conn)
    run_unit(url, lambda tx: seed.load(tx, Settings().seed_dir))

    with engine.connect() as conn:
        agencies = {
            code: uuid.UUID(str(aid)).hex
            for code, aid in conn.execute(sa.text("SELECT code, id FROM agency"))
        }
        head = conn.execute(sa.text("SELECT seq, hash FROM audit_entry ORDER BY seq DESC LIMIT 1")).first()
        event_seq = conn.execute(sa.text("SELECT coalesce(max(seq), 0) FROM event")).scalar_one()
    audit_head = (head[0], head[1]) if head else (0, GENESIS)

    backend = Backend.for_url(url)
    gen = Generator(backend, random.Random(rng_seed), agencies, audit_head, event_seq, n_cases)
    writer: PostgresWriter | SqliteWriter = (
        SqliteWriter(url) if backend.name == "sqlite" else PostgresWriter(url)
    )
    rows = 0
    batch = Batch()
    with tqdm(total=n_cases, unit="case", desc=f"generating {size}", file=sys.stderr, mininterval=1) as bar:
        for n in range(n_cases):
            gen.case(batch, n)
            if (n + 1) % CHUNK_CASES == 0 or n + 1 == n_cases:
                writer.write(batch)
                rows += batch.count()
                batch = Batch()
                bar.update(CHUNK_CASES if (n + 1) % CHUNK_CASES == 0 else n_cases % CHUNK_CASES)
                if (n + 1) % (CHUNK_CASES * 10) == 0:
                    writer.commit()
        # The special cases come last, with the newest timestamps of the synthetic data.
        ua = "UA-LE"
        end = (BASE_TIME + SPAN).replace(microsecond=0)
        members = [(BENCH_AGENCY, "lead"), (ua, "partner")]
        special = {
            "bundle_case_id": gen.case(
                batch, n_cases, reference=REF_BUNDLE, lead=BENCH_AGENCY, items=BUNDLE_ITEMS,
                members=members, handling="TLP:AMBER", at=end,
            ),
            "post_case_id": gen.case(
                batch, n_cases + 1, reference=REF_POSTS, lead=BENCH_AGENCY, items=0, members=members,
                handling="TLP:AMBER", at=end + timedelta(seconds=1),
            ),
            "single_posts_case_id": gen.case(
                batch, n_cases + 2, reference=REF_SINGLE, lead=BENCH_AGENCY, items=0, members=members,
                handling="TLP:AMBER", at=end + timedelta(seconds=2),
            ),
        }  # fmt: skip
        writer.write(batch)
        rows += batch.count()
    load_seconds = time.monotonic() - started
    writer.finish()

    keys = {}
    for name, scopes in (("bench-rw", [Scope.read, Scope.write]), ("bench-ro", [Scope.read])):
        client, key = run_unit(
            url, lambda tx, n=name, s=scopes: create_client(tx, agency_code=BENCH_AGENCY, name=n, scopes=s)
        )
        keys[name] = {"key": key, "client_id": str(client.id)}
    counts = _counts(engine)
    engine.dispose()

    marker = {
        **wanted,
        "backend": backend.name,
        "agency": BENCH_AGENCY,
        "agency_id": _dash(agencies[BENCH_AGENCY]),
        "clients": keys,
        **{k: _dash(v) for k, v in special.items()},
        "counts": counts,
        "rows_written": rows,
        "seconds": round(time.monotonic() - started, 1),
        "load_seconds": round(load_seconds, 1),
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    marker_path(url).write_text(json.dumps(marker, indent=2) + "\n")
    print(
        f"generated {size}: {counts['case']} cases, {rows} rows in {marker['seconds']} s "
        f"({rows / max(load_seconds, 1e-9):,.0f} rows/s)",
        file=sys.stderr,
    )
    return marker


def default_url(size: str) -> str:
    return f"sqlite:///{DATA_DIR / f'bench-{size}.db'}"


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="database URL (default: an SQLite file under bench/data/)")
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="RNG seed (same seed, same data)")
    parser.add_argument("--fresh", action="store_true", help="drop and generate even if the marker matches")
    args = parser.parse_args(list(argv) if argv is not None else None)
    # Keyed as the servers the other scripts start: else the chain would be keyed by a key
    # file generated for the default SQLite URL, and `caseapi audit verify` would fail at entry 1.
    use_bench_audit_key()
    url = args.db or default_url(args.size)
    marker = generate(url, args.size, rng_seed=args.seed, fresh=args.fresh)
    print(json.dumps({k: v for k, v in marker.items() if k != "clients"}, indent=2))


if __name__ == "__main__":
    main()
