"""Identifiers under a case, and hit/no-hit across cases.

A search answers each item from one query over (kind, normalized), whatever
it finds. What a match shows follows app.access: the identifier in a case
the caller sees in full; only the case and its lead in a TLP:GREEN/CLEAR
case it takes no part in; nothing in any other case, whose lead instead
receives a `hit.received` event (one per case and search) in its feed.
A hidden match leaves the answer exactly as a miss: same shape, same
values, and the same statements run (the notifications are rows added to
the journal's write that every search makes anyway).
"""

import functools
import hashlib
import hmac
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app import access
from app.agencies.models import Agency
from app.auth.service import Principal
from app.cases.models import Case
from app.config import get_settings
from app.crud import add_recorded, delete_recorded
from app.db import bulk_insert
from app.errors import invalid
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
)
from app.identifiers.normalize import IdentifierKind, InvalidIdentifier, normalize
from app.journal import record
from app.pagination import PageParams, keyset, read_page
from app.reads import Reads
from app.secrets import search_term_key

Loc = list[str | int]


def agency_country(session: Session, agency_id: uuid.UUID) -> str | None:
    return session.execute(sa.select(Agency.country).where(Agency.id == agency_id)).scalar_one_or_none()


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

IDENTIFIER_KEYS = (Identifier.created_at, Identifier.id)


@functools.cache
def _list_statement(*, kind: bool, after: bool) -> sa.Select[Any]:
    stmt = sa.select(Identifier).where(Identifier.case_id == sa.bindparam("case_id"))
    if kind:
        stmt = stmt.where(Identifier.kind == sa.bindparam("kind"))
    return access.in_case_seen_in_full(keyset(stmt, keys=IDENTIFIER_KEYS, after=after), IDENTIFIER_KEYS)


async def list_identifiers(
    reads: Reads, p: Principal, case_id: uuid.UUID, params: PageParams, *, kind: IdentifierKind | None
) -> tuple[list[Any], str | None]:
    """A page of the case's identifiers; 404 unless the caller sees the case in full (one statement)."""
    stmt = _list_statement(kind=kind is not None, after=bool(params.cursor))
    values = access.principal_params(p) | {"case_id": case_id, "kind": kind}
    return await read_page(
        reads, stmt, values, params, scope=f"identifiers:{case_id}", keys=IDENTIFIER_KEYS, in_case=True
    )


def create_identifier(session: Session, p: Principal, case: Case, data: IdentifierCreate) -> Identifier:
    """A phone number without country code is read in the country of the case's lead agency."""
    country = agency_country(session, case.lead_agency_id)
    norm = normalized(data.kind, data.value, country=country, loc=["body", "value"])
    identifier = Identifier.model_validate(data, update={"case_id": case.id, "normalized": norm})
    add_recorded(session, identifier, p.actor, resource_type="identifier", case_id=case.id)
    return identifier


def delete_identifier(session: Session, p: Principal, identifier: Identifier) -> None:
    delete_recorded(session, identifier, p.actor, resource_type="identifier", case_id=identifier.case_id)


# --- bundles --------------------------------------------------------------------------------------------


def export_for_bundle(session: Session, case_id: uuid.UUID) -> list[Identifier]:
    """The case's identifiers in list order."""
    return list(
        session.execute(
            sa.select(Identifier).where(Identifier.case_id == case_id).order_by(*IDENTIFIER_KEYS)
        ).scalars()
    )


def rows_for_import(
    session: Session, items: Sequence[IdentifierTransfer], *, lead_agency_id: uuid.UUID, loc: Loc
) -> list[dict[str, Any]]:
    """Rows for a bundle's identifiers, validated and normalised again before anything is
    written (an invalid one is a 422 at loc + [index, ...]); insert_imported() writes them.

    The exported `normalized` is preferred to `value`: a phone number written
    without country code was read in the exporting lead's country, which the
    importer does not know; without it, the importing lead's country reads it.
    """
    country = agency_country(session, lead_agency_id) if items else None
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


def insert_imported(session: Session, rows: list[dict[str, Any]]) -> None:
    """Write rows_for_import() (each with its case_id and created_at) under an imported case; the
    import is journalled once, with the rest of the bundle (app.bundles)."""
    bulk_insert(session, Identifier.__table__, rows)  # type: ignore[attr-defined]


# --- hit/no-hit -----------------------------------------------------------------------------------------


@functools.cache
def _hits_statement() -> sa.Select[Any]:
    stmt = sa.select(
        Identifier.id,
        Identifier.case_id,
        Identifier.kind,
        Identifier.normalized,
        Identifier.note,
        Case.reference,
        Case.title,
        Case.handling_code,
        Case.lead_agency_id,
    ).join(Case, Case.id == Identifier.case_id)
    stmt, full, visible = access.with_case_access(
        stmt, case_id=Identifier.case_id, handling_code=Case.handling_code, with_parent=True
    )
    # One IN list per kind, not one list of (kind, value) pairs: PostgreSQL plans
    # a thousand pairs as a thousand OR-ed conditions (a second of planning),
    # a list as one index condition (`normalized = ANY(...)`).
    by_kind = sa.or_(
        *(
            sa.and_(
                Identifier.kind == kind,
                Identifier.normalized.in_(sa.bindparam(_values_param(kind), expanding=True)),
            )
            for kind in IdentifierKind
        )
    )
    return (
        stmt.add_columns(full.label("full"), visible.label("visible"))
        .where(by_kind)
        .order_by(Identifier.case_id, Identifier.created_at, Identifier.id)
    )


def _values_param(kind: IdentifierKind) -> str:
    return f"values_{kind.value}"


def _digest(key: bytes, kind: IdentifierKind, value: str) -> str:
    return hmac.new(key, f"{kind.value}\x1f{value}".encode(), hashlib.sha256).hexdigest()


def search_hits(session: Session, p: Principal, items: Sequence[HitItem]) -> HitResults:
    """Answer each item in order; audit the search with keyed hashes of the values;
    notify the leads of hidden cases that matched."""
    country = agency_country(session, p.agency_id)
    keys = [
        (item.kind, normalized(item.kind, item.value, country=country, loc=["body", "items", n, "value"]))
        for n, item in enumerate(items)
    ]
    values: dict[str, list[str]] = {_values_param(kind): [] for kind in IdentifierKind}
    for kind, norm in sorted(set(keys)):
        values[_values_param(kind)].append(norm)
    rows = session.execute(_hits_statement(), access.principal_params(p) | values).all()
    by_key: dict[tuple[str, str], list[Any]] = defaultdict(list)
    for row in rows:
        by_key[(row.kind, row.normalized)].append(row)

    hidden: dict[uuid.UUID, tuple[uuid.UUID, uuid.UUID]] = {}  # case -> (first identifier, lead)
    results = []
    for kind, norm in keys:
        matches: list[HitMatch] = []
        summarised: set[uuid.UUID] = set()
        for row in by_key[(kind, norm)]:
            case = HitCase(
                id=row.case_id,
                reference=row.reference,
                title=row.title,
                handling_code=row.handling_code,
                lead_agency_id=row.lead_agency_id,
            )
            if row.full:
                identifier = HitIdentifier(
                    id=row.id, case_id=row.case_id, kind=row.kind, normalized=row.normalized, note=row.note
                )
                matches.append(HitMatch(access="full", case=case, identifier=identifier))
            elif row.visible:
                if row.case_id not in summarised:
                    summarised.add(row.case_id)
                    matches.append(HitMatch(access="summary", case=case, identifier=None))
            else:
                hidden.setdefault(row.case_id, (row.id, row.lead_agency_id))
        results.append(HitResult(kind=kind, normalized=norm, hit=bool(matches), matches=matches))

    _journal_search(session, p, keys, hidden)
    return HitResults(items=results)


def _journal_search(
    session: Session,
    p: Principal,
    keys: list[tuple[IdentifierKind, str]],
    hidden: dict[uuid.UUID, tuple[uuid.UUID, uuid.UUID]],
) -> None:
    search_id = uuid.uuid4()
    key = search_term_key(get_settings())
    terms = [
        {"search_id": search_id, "position": n, "kind": kind, "digest": _digest(key, kind, norm)}
        for n, (kind, norm) in enumerate(keys)
    ]
    bulk_insert(session, HitSearchTerm.__table__, terms)  # type: ignore[attr-defined]
    record(
        session,
        p.actor,
        action="hit.searched",
        resource_type="hit_search",
        resource_id=search_id,
        case_id=None,
        emit_event=False,
    )
    for case_id, (identifier_id, lead_agency_id) in hidden.items():
        record(
            session,
            p.actor,
            action="hit.received",
            resource_type="identifier",
            resource_id=identifier_id,
            case_id=case_id,
            notify=(p.agency_id, lead_agency_id),
            audit=False,
        )
