"""Identifiers under a case, and hit/no-hit across cases.

A search answers each item from one query over (kind, normalized). What a
match shows follows app.access: the identifier in a case the caller sees
in full; only the case and its lead in a TLP:GREEN/CLEAR case it takes no
part in; nothing in any other case. The leads of the cases not seen in full
receive a `hit.received` event, written after the search from its queued
row (app.identifiers.notices): a hidden match leaves the answer, the
statements and the rows written exactly as a miss does.
"""

import functools
import hashlib
import hmac
import json
import os
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import anyio.to_thread
import sqlalchemy as sa
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy.dialects import postgresql

from app import access
from app.agencies.models import Agency
from app.auth.service import Principal
from app.cases.models import Case
from app.core.config import Settings
from app.core.crud import delete_recorded, insert_recorded
from app.core.db import new_row, table_of, utcnow
from app.core.errors import invalid
from app.core.journal import record
from app.core.pagination import PageParams, keyset, read_page
from app.core.secrets import search_term_key
from app.core.uow import Row, Statements, Tx
from app.identifiers.limits import HitLimits
from app.identifiers.models import (
    MAX_NORMALIZED,
    HitCase,
    HitIdentifier,
    HitItem,
    HitMatch,
    HitResult,
    HitResults,
    HitSearchTerm,
    Identifier,
    IdentifierCreate,
    IdentifierTransfer,
    PeerAnswer,
    PendingHitNotice,
)
from app.identifiers.normalize import IdentifierKind, InvalidIdentifier, is_normalized, normalize

Loc = list[str | int]
_NONCE_BYTES = 12
# A search of more distinct values than this is normalised in a worker thread:
# a thousand phone numbers take tens of milliseconds, which the event loop
# would otherwise spend on nothing else.
_INLINE_ITEMS = 50

IDENTIFIERS = table_of(Identifier)
CASES = table_of(Case)
AGENCIES = table_of(Agency)
TERMS = table_of(HitSearchTerm)
PENDING = table_of(PendingHitNotice)

_AGENCY_COUNTRY = sa.select(AGENCIES.c.country).where(AGENCIES.c.id == sa.bindparam("agency_id"))


async def agency_country(db: Statements, agency_id: uuid.UUID) -> str | None:
    country: str | None = await db.scalar(_AGENCY_COUNTRY, {"agency_id": agency_id})
    return country


def normalized(kind: IdentifierKind, value: str, *, country: str | None, loc: Loc) -> str:
    """normalize(), with an invalid value as a 422 at `loc`."""
    try:
        result = normalize(kind, value, country=country)
    except InvalidIdentifier as exc:
        raise invalid(loc, f"Invalid {kind.value}: {exc}.") from exc
    if len(result) > MAX_NORMALIZED:
        raise invalid(loc, f"Invalid {kind.value}: too long.")
    return result


# --- identifiers under a case ---------------------------------------------------------------------------

IDENTIFIER_KEYS = (IDENTIFIERS.c.created_at, IDENTIFIERS.c.id)


@functools.cache
def _list_statement(*, kind: bool, after: bool) -> sa.Select[Any]:
    stmt = sa.select(IDENTIFIERS).where(IDENTIFIERS.c.case_id == sa.bindparam("case_id"))
    if kind:
        stmt = stmt.where(IDENTIFIERS.c.kind == sa.bindparam("kind"))
    return access.in_case_seen_in_full(keyset(stmt, keys=IDENTIFIER_KEYS, after=after), IDENTIFIER_KEYS)


async def list_identifiers(
    reads: Statements, p: Principal, case_id: uuid.UUID, params: PageParams, *, kind: IdentifierKind | None
) -> tuple[list[Any], str | None]:
    """A page of the case's identifiers; 404 unless the caller sees the case in full (one statement)."""
    stmt = _list_statement(kind=kind is not None, after=bool(params.cursor))
    values = access.principal_params(p) | {"case_id": case_id, "kind": kind}
    return await read_page(
        reads, stmt, values, params, scope=f"identifiers:{case_id}", keys=IDENTIFIER_KEYS, in_case=True
    )


async def create_identifier(tx: Tx, p: Principal, case: Row, data: IdentifierCreate) -> Row:
    """A phone number without country code is read in the country of the case's lead agency."""
    country = await agency_country(tx, case.lead_agency_id)
    norm = normalized(data.kind, data.value, country=country, loc=["body", "value"])
    values = data.model_dump() | {"case_id": case.id, "normalized": norm}
    return await insert_recorded(tx, Identifier, values, p.actor, resource_type="identifier", case_id=case.id)


async def delete_identifier(tx: Tx, p: Principal, identifier: Row) -> None:
    await delete_recorded(
        tx, Identifier, identifier, p.actor, resource_type="identifier", case_id=identifier.case_id
    )


# --- bundles --------------------------------------------------------------------------------------------

_EXPORT = (
    sa.select(IDENTIFIERS).where(IDENTIFIERS.c.case_id == sa.bindparam("case_id")).order_by(*IDENTIFIER_KEYS)
)


async def export_for_bundle(db: Statements, case_id: uuid.UUID) -> list[Row]:
    """The case's identifiers (rows of their columns) in list order."""
    return await db.all(_EXPORT, {"case_id": case_id})


async def rows_for_import(
    db: Statements, items: Sequence[IdentifierTransfer], *, lead_agency_id: uuid.UUID, loc: Loc
) -> list[dict[str, Any]]:
    """Rows for a bundle's identifiers, validated and normalised again before anything is
    written (an invalid one is a 422 at loc + [index, ...]); insert_imported() writes them.

    The exported `normalized` is preferred to `value`: a phone number written
    without country code was read in the exporting lead's country, which the
    importer does not know; without it, the importing lead's country reads it.
    """
    country = await agency_country(db, lead_agency_id) if items else None
    rows = []
    for n, item in enumerate(items):
        source, field = (item.normalized, "normalized") if item.normalized else (item.value, "value")
        rows.append(
            {
                **item.model_dump(exclude={"normalized"}),
                "id": uuid.uuid4(),
                "normalized": normalized(item.kind, source, country=country, loc=[*loc, n, field]),
                "version": 1,
            }
        )
    return rows


async def insert_imported(tx: Tx, rows: list[dict[str, Any]]) -> None:
    """Write rows_for_import() (each with its case_id and created_at) under an imported case; the
    import is journalled once, with the rest of the bundle (app.bundles)."""
    await tx.insert_many(IDENTIFIERS, rows)


# --- hit/no-hit -----------------------------------------------------------------------------------------


def _among(column: sa.ColumnElement[str], name: str, *, postgresql_array: bool) -> sa.ColumnElement[bool]:
    """`column` is one of the list of values bound as `name`: on PostgreSQL
    `= ANY(:name)`, an array (one prepared statement for any number of
    values); elsewhere an IN list the engine expands per execution."""
    if postgresql_array:
        return column == sa.any_(sa.bindparam(name, type_=postgresql.ARRAY(sa.String)))
    return column.in_(sa.bindparam(name, expanding=True))


@functools.cache
def hits_statement(*, notify: bool, dialect_name: str) -> sa.Select[Any]:
    """The identifiers matching the searched values, with the searcher's access to their cases
    (run with access.agency_params() and one list of values per kind, see hit_values()).

    A search reads only the matches the searcher may see, so that one in a
    case hidden from it costs nothing more than a miss; the notices
    (`notify`, app.identifiers.notices) read the others, as they were when
    the search was made (`searched_at`).
    """
    stmt = sa.select(
        IDENTIFIERS.c.id,
        IDENTIFIERS.c.case_id,
        IDENTIFIERS.c.kind,
        IDENTIFIERS.c.normalized,
        IDENTIFIERS.c.note,
        CASES.c.reference,
        CASES.c.title,
        CASES.c.handling_code,
        CASES.c.lead_agency_id,
        CASES.c.home_instance,
    ).join(CASES, CASES.c.id == IDENTIFIERS.c.case_id)
    stmt, full, visible = access.with_case_access(
        stmt, case_id=IDENTIFIERS.c.case_id, handling_code=CASES.c.handling_code, with_parent=True
    )
    # One list per kind, not one list of (kind, value) pairs: PostgreSQL plans
    # a thousand pairs as a thousand OR-ed conditions (a second of planning),
    # a list as one index condition (`normalized = ANY(...)`).
    by_kind = sa.or_(
        *(
            sa.and_(
                IDENTIFIERS.c.kind == kind,
                _among(
                    IDENTIFIERS.c.normalized,
                    _values_param(kind),
                    postgresql_array=dialect_name == "postgresql",
                ),
            )
            for kind in IdentifierKind
        )
    )
    if notify:
        # A mirror's lead is told by the case's home, when a search is federated.
        stmt = stmt.where(
            sa.not_(full),
            IDENTIFIERS.c.created_at <= sa.bindparam("searched_at"),
            CASES.c.home_instance.is_(None),
        )
    else:
        stmt = stmt.where(visible)
    return (
        stmt.add_columns(full.label("full")).where(by_kind).order_by(IDENTIFIERS.c.case_id, *IDENTIFIER_KEYS)
    )


def _values_param(kind: IdentifierKind) -> str:
    return f"values_{kind.value}"


def hit_values(terms: Sequence[tuple[IdentifierKind, str]]) -> dict[str, list[str]]:
    """hits_statement()'s lists of values, one per kind (empty for a kind not searched)."""
    values: dict[str, list[str]] = {_values_param(kind): [] for kind in IdentifierKind}
    for kind, norm in terms:
        values[_values_param(kind)].append(norm)
    return values


def _digest(key: bytes, kind: IdentifierKind, value: str) -> str:
    return hmac.new(key, f"{kind.value}\x1f{value}".encode(), hashlib.sha256).hexdigest()


def _sealing_key(settings: Settings) -> bytes:
    return hmac.new(search_term_key(settings), b"caseapi hit notices v1", hashlib.sha256).digest()


def seal_terms(
    settings: Settings, search_id: uuid.UUID, terms: Sequence[tuple[IdentifierKind, str]]
) -> bytes:
    """The searched values, for the notices only: AES-GCM under a key derived from the audit key."""
    nonce = os.urandom(_NONCE_BYTES)
    plain = json.dumps([[kind.value, norm] for kind, norm in terms]).encode()
    return nonce + AESGCM(_sealing_key(settings)).encrypt(nonce, plain, search_id.bytes)


def unseal_terms(settings: Settings, search_id: uuid.UUID, sealed: bytes) -> list[tuple[IdentifierKind, str]]:
    """seal_terms()'s values; InvalidTag when sealed under another key or for another search."""
    nonce, ciphertext = sealed[:_NONCE_BYTES], sealed[_NONCE_BYTES:]
    plain = AESGCM(_sealing_key(settings)).decrypt(nonce, ciphertext, search_id.bytes)
    return [(IdentifierKind(kind), norm) for kind, norm in json.loads(plain)]


def _normalized_items(
    items: Sequence[HitItem], country: str | None, sent_normalized: bool
) -> list[tuple[IdentifierKind, str]]:
    """Each item's (kind, normalized), in order; a 422 at the first invalid one."""
    seen: dict[tuple[IdentifierKind, str], tuple[IdentifierKind, str]] = {}
    for n, item in enumerate(items):
        if (item.kind, item.value) not in seen:  # a value given again is read once
            if sent_normalized and is_normalized(item.kind, item.value):
                norm = item.value
            else:
                norm = normalized(item.kind, item.value, country=country, loc=["body", "items", n, "value"])
            seen[(item.kind, item.value)] = (item.kind, norm)
    return [seen[(item.kind, item.value)] for item in items]


async def normalized_items(
    db: Statements, p: Principal, items: Sequence[HitItem], *, sent_normalized: bool = False
) -> list[tuple[IdentifierKind, str]]:
    """The items as searched: a phone number without country code in the caller's agency's country.
    `sent_normalized`: the values were sent normalised (a peer's search); each is checked, and one
    that is not is normalised as any other, so that what is searched never depends on the sender."""
    country = await agency_country(db, p.agency_id)
    if len(items) > _INLINE_ITEMS:
        return await anyio.to_thread.run_sync(_normalized_items, items, country, sent_normalized)
    return _normalized_items(items, country, sent_normalized)


async def search_hits(
    tx: Tx,
    p: Principal,
    keys: list[tuple[IdentifierKind, str]],
    *,
    settings: Settings,
    limits: HitLimits,
    own_cases_only: bool = False,
) -> HitResults:
    """Answer each item (normalized_items()) in order from the matches the caller may see;
    audit the search with keyed hashes of the values; queue it for the notices of the cases' leads.
    `own_cases_only`: leave out this instance's mirrors (a peer's federated search: their homes answer);
    without it, only those the caller sees in full.

    What the request does depends only on what was asked and what the caller
    may see: the matches in cases hidden from it are found later, by the notices.
    """
    distinct = sorted(set(keys))
    await limits.charge(p, len(distinct))
    rows = await tx.all(
        hits_statement(notify=False, dialect_name=tx.dialect_name),
        access.principal_params(p) | hit_values(distinct),
    )
    matches: dict[tuple[str, str], list[HitMatch]] = defaultdict(list)
    summarised: set[tuple[str, str, uuid.UUID]] = set()
    for row in rows:
        key = (row.kind, row.normalized)
        # A mirror's case is matched here only where the caller sees it in full. Seen in summary,
        # its home answers a federated search, and tells the case's lead (§8): a mirror cannot.
        if row.home_instance is not None and (own_cases_only or not row.full):
            continue
        if not row.full:
            # A case seen in summary shows once per item, whichever of its identifiers matched.
            if (*key, row.case_id) in summarised:
                continue
            summarised.add((*key, row.case_id))
        case = HitCase(
            id=row.case_id,
            reference=row.reference,
            title=row.title,
            handling_code=row.handling_code,
            lead_agency_id=row.lead_agency_id,
        )
        identifier = (
            HitIdentifier(
                id=row.id, case_id=row.case_id, kind=row.kind, normalized=row.normalized, note=row.note
            )
            if row.full
            else None
        )
        match = HitMatch(access="full" if row.full else "summary", case=case, identifier=identifier)
        if row.home_instance is not None:  # a mirror's case (federation); unset, the field is left out
            match.home_instance = row.home_instance
        matches[key].append(match)
    results = [
        HitResult(kind=kind, normalized=norm, hit=bool(matches[(kind, norm)]), matches=matches[(kind, norm)])
        for kind, norm in keys
    ]
    await _journal_search(tx, p, settings, keys, distinct)
    return HitResults(items=results)


def with_peers(results: HitResults, remote: list[list[HitMatch]], answers: list[PeerAnswer]) -> HitResults:
    """A federated search's answer: each item's matches on the peers added to this
    instance's (a case this instance mirrors is named once), and every peer's answer."""
    items = []
    for result, matches in zip(results.items, remote, strict=True):
        if not result.matches and not matches:  # most items: nothing found anywhere, nothing to copy
            items.append(result)
            continue
        seen = {match.case.id for match in result.matches}
        added = [match for match in matches if match.case.id not in seen]
        # In a federated answer every match names its home, null for this instance.
        local = [match.model_copy(update={"home_instance": match.home_instance}) for match in result.matches]
        items.append(result.model_copy(update={"matches": local + added, "hit": result.hit or bool(added)}))
    return HitResults(items=items, peers=answers)


async def _journal_search(
    tx: Tx,
    p: Principal,
    settings: Settings,
    keys: list[tuple[IdentifierKind, str]],
    distinct: list[tuple[IdentifierKind, str]],
) -> None:
    search_id = uuid.uuid4()
    now = utcnow()
    key = search_term_key(settings)
    terms = [
        {
            "search_id": search_id,
            "position": n,
            "kind": kind,
            "digest": _digest(key, kind, norm),
            "searched_at": now,
        }
        for n, (kind, norm) in enumerate(keys)
    ]
    await tx.insert_many(TERMS, terms)
    pending = new_row(
        PendingHitNotice,
        search_id=search_id,
        agency_id=p.agency_id,
        searched_at=now,
        sealed=seal_terms(settings, search_id, distinct),
    )
    await tx.insert([(PENDING, [pending])])
    record(
        tx,
        p.actor,
        action="hit.searched",
        resource_type="hit_search",
        resource_id=search_id,
        case_id=None,
        emit_event=False,
    )
