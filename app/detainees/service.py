"""Detainees. Personal data is stored for those allowed to see it and
returned only to a client with the `personal_data` scope that states its
purpose (X-Purpose); every such disclosure is audited."""

import functools
import uuid
from collections.abc import Iterable
from datetime import date
from typing import Any

import sqlalchemy as sa

from app import access
from app.agencies.service import require_agencies
from app.auth.models import Scope
from app.auth.service import Principal
from app.cases.models import Case
from app.core.crud import (
    delete_recorded,
    insert_recorded,
    update_recorded,
)
from app.core.db import table_of, utcnow
from app.core.errors import AppError
from app.core.http import public
from app.core.journal import record
from app.core.pagination import PageParams, keyset, read_page
from app.core.uow import Row, Statements, Tx
from app.detainees.models import (
    PERSONAL_FIELDS,
    Detainee,
    DetaineeCreate,
    DetaineePublic,
    DetaineeUpdate,
)
from app.locations.service import require_location_in_case


def may_see_personal_data(p: Principal, purpose: str | None) -> bool:
    return p.has(Scope.personal_data) and bool(purpose and purpose.strip())


def require_personal_scope(p: Principal, written: Iterable[str]) -> None:
    """403 unless the key may write the personal fields among `written`.

    Erasing is writing: a null sent for a personal field, or deleting a
    record that holds personal data, needs the scope as setting one does.
    """
    if not p.has(Scope.personal_data) and any(f in PERSONAL_FIELDS for f in written):
        raise AppError(403, "Writing personal data needs the 'personal_data' scope.", slug="forbidden")


def personal_fields_set(row: object) -> list[str]:
    """The personal fields that hold a value in `row` (a detainee, or one to create)."""
    return [f for f in PERSONAL_FIELDS if getattr(row, f) is not None]


def one_year_after(day: date) -> date:
    if day.year >= date.max.year:
        return date.max
    try:
        return day.replace(year=day.year + 1)
    except ValueError:  # 29 February
        return day.replace(year=day.year + 1, day=28)


def to_public(detainee: Row, *, disclose: bool) -> DetaineePublic:
    redacted = {} if disclose else dict.fromkeys(PERSONAL_FIELDS)
    return public(DetaineePublic, detainee, **redacted, personal_data_redacted=not disclose)


_CASES = table_of(Case)
# Personal data leaves a case's home only if its lead shares it (§9): a mirror
# holds it only then, and the home answers it to a peer's agency (a write
# forwarded through its mirror) only then.
_SHARED = sa.select(_CASES.c.home_instance.is_(None).label("at_home"), _CASES.c.share_personal_data).where(
    _CASES.c.id == sa.bindparam("case_id")
)


async def _held_for(tx: Tx, p: Principal, case_id: uuid.UUID) -> bool:
    """Whether the case's personal data may be answered to `p` here at all."""
    case = await tx.first(_SHARED, {"case_id": case_id})
    return case is not None and bool(case.share_personal_data or (case.at_home and not p.remote))


async def present(
    tx: Tx,
    p: Principal,
    purpose: str | None,
    detainees: list[Row],
    *,
    case_id: uuid.UUID,
) -> list[DetaineePublic]:
    """Public views of detainees, with personal data only when allowed.

    A response that shows personal data is one audit entry naming every
    detainee it showed (`detail.detainee_ids`; `resource_id` too when it is
    one), so the log answers "whose data did this list or bundle disclose?"
    while a case of many detainees adds one row under the journal lock, not one each.
    """
    disclose = may_see_personal_data(p, purpose) and await _held_for(tx, p, case_id)
    if disclose and detainees:
        record(
            tx,
            p.actor,
            action="personal_data.disclosed",
            resource_type="detainee",
            resource_id=detainees[0].id if len(detainees) == 1 else None,
            case_id=case_id,
            purpose=purpose,
            emit_event=False,
            detail={"detainee_ids": [str(d.id) for d in detainees]},
        )
    return [to_public(d, disclose=disclose) for d in detainees]


DETAINEES = table_of(Detainee)
KEYS = (DETAINEES.c.created_at, DETAINEES.c.id)


@functools.cache
def _list_statement(*, overdue: bool | None, after: bool) -> sa.Select[Any]:
    stmt = sa.select(DETAINEES).where(DETAINEES.c.case_id == sa.bindparam("case_id"))
    if overdue is True:
        stmt = stmt.where(DETAINEES.c.review_due < sa.bindparam("today"))
    elif overdue is False:
        stmt = stmt.where(DETAINEES.c.review_due >= sa.bindparam("today"))
    return access.in_case_seen_in_full(keyset(stmt, keys=KEYS, after=after), KEYS)


async def list_detainees(
    db: Statements, p: Principal, case_id: uuid.UUID, params: PageParams, *, review_overdue: bool | None
) -> tuple[list[Row], str | None]:
    """A page of the case's detainees; 404 unless the caller sees the case in full (one statement)."""
    stmt = _list_statement(overdue=review_overdue, after=bool(params.cursor))
    values = access.principal_params(p) | {"case_id": case_id, "today": utcnow().date()}
    return await read_page(db, stmt, values, params, scope=f"detainees:{case_id}", keys=KEYS, in_case=True)


async def create_detainee(tx: Tx, p: Principal, case_id: uuid.UUID, data: DetaineeCreate) -> Row:
    require_personal_scope(p, personal_fields_set(data))
    detained_by = data.detained_by_agency_id or p.agency_id
    await require_agencies(tx, {"detained_by_agency_id": detained_by}, known=p.agency_id)
    await require_location_in_case(tx, data.location_id, case_id)
    review_due = data.review_due or one_year_after((data.detained_at or utcnow()).date())
    values = data.model_dump(exclude={"detained_by_agency_id", "review_due"})
    values |= {"case_id": case_id, "detained_by_agency_id": detained_by, "review_due": review_due}
    return await insert_recorded(tx, Detainee, values, p.actor, resource_type="detainee", case_id=case_id)


async def update_detainee(tx: Tx, p: Principal, detainee: Row, data: DetaineeUpdate) -> Row:
    changes = data.changes(detainee)
    require_personal_scope(p, changes)
    await require_agencies(tx, {"detained_by_agency_id": changes.get("detained_by_agency_id")})
    if "location_id" in changes:
        await require_location_in_case(tx, changes["location_id"], detainee.case_id)
    return await update_recorded(
        tx,
        Detainee,
        detainee,
        changes,
        p.actor,
        resource_type="detainee",
        case_id=detainee.case_id,
        blind=frozenset(PERSONAL_FIELDS),
    )


async def delete_detainee(tx: Tx, p: Principal, detainee: Row) -> None:
    require_personal_scope(p, personal_fields_set(detainee))
    await delete_recorded(tx, Detainee, detainee, p.actor, resource_type="detainee", case_id=detainee.case_id)
