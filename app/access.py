"""The one place that decides what a client may see and do in a case.

Seeing: participants see a case and everything under it. Under TLP:AMBER,
so do the sub-agencies of participants (agencies whose parent_id is a
participant). Under TLP:GREEN and TLP:CLEAR every agency sees the case's own
fields ("summary" access) but nothing under it. Anything else is invisible
and answers 404, exactly as if it did not exist.

Changing: lead and partners with the `write` scope change the case and what
is under it; only the lead changes participants and the handling code.
Changing a record that exists (PATCH, DELETE) also needs `read` (Editor).
"""

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import sqlalchemy as sa
from fastapi import Depends

from app.agencies.models import Agency
from app.auth.deps import Admin, Writer
from app.auth.models import Scope
from app.auth.service import Principal
from app.cases.models import Case, HandlingCode
from app.core.db import table_of
from app.core.errors import AppError, HeldElsewhere, forbidden, not_found
from app.core.records import AuditEntry
from app.core.uow import Row, Statements
from app.participants.models import Participant, Role

PUBLIC_CODES = (HandlingCode.green, HandlingCode.clear)
CASES = table_of(Case)
PARTICIPANTS = table_of(Participant)
AGENCIES = table_of(Agency)

Level = Literal["full", "summary"]


@dataclass(frozen=True)
class CaseAccess:
    case: Row  # the case: a row of its columns
    level: Level
    role: Role | None  # the caller's own agency's role, None if not a participant


def _is_participant(case_id: sa.ColumnElement[uuid.UUID], agency_id: Any) -> sa.Exists:
    return sa.exists().where(PARTICIPANTS.c.case_id == case_id, PARTICIPANTS.c.agency_id == agency_id)


def principal_params(p: Principal) -> dict[str, Any]:
    """Values of the caller's bind parameters (`agency_id`, `parent_id`) in the statements below."""
    return agency_params(p.agency_id, p.parent_agency_id)


def agency_params(agency_id: uuid.UUID, parent_id: uuid.UUID | None) -> dict[str, Any]:
    """principal_params() for an agency rather than a caller (webhook delivery)."""
    return {"agency_id": agency_id, "parent_id": parent_id}


def with_case_access(
    stmt: sa.Select[Any],
    *,
    case_id: sa.ColumnElement[uuid.UUID],
    handling_code: sa.ColumnElement[Any],
    with_parent: bool,
) -> tuple[sa.Select[Any], sa.ColumnElement[bool], sa.ColumnElement[bool]]:
    """Outer-join the caller's participation (and, `with_parent`, its parent
    agency's) onto rows of cases; run with principal_params().

    Returns the statement and two row-level conditions: `full` (the caller
    sees the case and everything under it) and `visible` (it sees at least
    the case's own fields). Each row costs a primary-key probe of the
    participant table, so a page costs the same at a thousand cases or a
    million, however many cases the caller takes part in.
    """
    own = PARTICIPANTS.alias()
    stmt = stmt.outerjoin(
        own, sa.and_(own.c.case_id == case_id, own.c.agency_id == sa.bindparam("agency_id"))
    )
    full: sa.ColumnElement[bool] = own.c.agency_id.is_not(None)
    if with_parent:
        parent = PARTICIPANTS.alias()
        stmt = stmt.outerjoin(
            parent, sa.and_(parent.c.case_id == case_id, parent.c.agency_id == sa.bindparam("parent_id"))
        )
        full = sa.or_(full, sa.and_(handling_code == HandlingCode.amber, parent.c.agency_id.is_not(None)))
    visible = sa.or_(is_public(handling_code), full)
    return stmt, full, visible


def is_public(handling_code: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    # Not IN (...): app.core.uow prepares each statement once, without expanding lists.
    return sa.or_(*(handling_code == code for code in PUBLIC_CODES))


def sees_case_in_full() -> sa.ColumnElement[bool]:
    """The caller (principal_params()) sees the joined `Case` and all under it, as a
    condition of a statement's rows: a participant, or under TLP:AMBER a sub-agency of one."""
    return sa.or_(
        _is_participant(CASES.c.id, sa.bindparam("agency_id")),
        sa.and_(
            CASES.c.handling_code == HandlingCode.amber,
            _is_participant(CASES.c.id, sa.bindparam("parent_id")),
        ),
    )


def sees_request(
    from_agency_id: sa.ColumnElement[uuid.UUID], to_agency_id: sa.ColumnElement[uuid.UUID]
) -> sa.ColumnElement[bool]:
    """The caller (principal_params()) sees an information request, given its
    two agencies' columns (the request's own, or those copied onto its
    events): only the sending and the receiving agency see a request, its
    messages, their attachments and their events; to anyone else, sub-agencies
    and case partners alike, they do not exist (404), whatever case they name."""
    agency_id: sa.BindParameter[uuid.UUID] = sa.bindparam("agency_id")
    return sa.or_(from_agency_id == agency_id, to_agency_id == agency_id)


def level_of(case: Row, own_role: Role | None, parent_takes_part: bool) -> Level | None:
    """Access to one case, given the role of the caller's agency and whether its parent takes part."""
    if own_role is not None:
        return "full"
    if case.handling_code == HandlingCode.amber and parent_takes_part:
        return "full"
    if case.handling_code in PUBLIC_CODES:
        return "summary"
    return None


def _own_role() -> sa.ScalarSelect[Any]:
    """The caller's agency's role in the case of the statement's row (None: not a participant)."""
    return (
        sa.select(PARTICIPANTS.c.role)
        .where(PARTICIPANTS.c.case_id == CASES.c.id, PARTICIPANTS.c.agency_id == sa.bindparam("agency_id"))
        .scalar_subquery()
    )


def _case_access_statement() -> sa.Select[Any]:
    parent_takes_part = _is_participant(CASES.c.id, sa.bindparam("parent_id"))
    return sa.select(CASES, _own_role().label("role"), parent_takes_part.label("parent_in")).where(
        CASES.c.id == sa.bindparam("case_id")
    )


# Built once: this lookup runs on every request about a case, and building
# and keying a statement costs more than the database takes to answer it.
_CASE_ACCESS = _case_access_statement()

# A case whose contents the caller reads: hidden and missing alike return no
# row, so neither costs more than the other.
_READABLE_CASE = sa.select(CASES).where(CASES.c.id == sa.bindparam("case_id"), sees_case_in_full())


def _holding_participation(
    stmt: sa.Select[Any], own: sa.Alias, *, of: sa.FromClause | None
) -> sa.Select[Any]:
    """`stmt`, holding the caller's participant row (`own`, inner-joined)
    FOR KEY SHARE until commit, and `of` (a row the caller changes) FOR UPDATE.

    A write's check of the caller's role and the write itself must not
    straddle a change of that role: the lead's removal or role change locks
    the participant row FOR UPDATE, so it waits for writes already checked,
    and a write checked while the change is under way waits for it and then
    reads the row as committed (PostgreSQL re-reads a row it waited for;
    a subquery or another table would be read as of the statement's start,
    hence the join and the lock on this very row). Writers do not wait for
    each other. SQLite has one writer at a time (BEGIN IMMEDIATE) anyway.
    """
    if of is None:
        # The case row too, FOR KEY SHARE as inserting under it takes it
        # anyway: taken now, a lead's deletion of the case waits for this
        # write instead of deadlocking with it.
        return stmt.with_for_update(of=[CASES, own], read=True, key_share=True)
    # Two strengths in one statement; SQLAlchemy renders one locking clause.
    return stmt.with_for_update(of=of).suffix_with(f"FOR KEY SHARE OF {own.name}", dialect="postgresql")


def _own_participation() -> sa.Alias:
    return PARTICIPANTS.alias("own")  # type: ignore[return-value]


# What _held() needs to send a write into a mirror home.
_HOME = (CASES.c.home_instance.label("case_home"), CASES.c.id.label("case_ref"))


def _writable_case_statement(*, for_update: bool) -> sa.Select[Any]:
    """The case, with the caller's role, only when the caller's agency takes
    part in it; see _holding_participation() for the locks."""
    own = _own_participation()
    stmt = (
        sa.select(CASES, own.c.role.label("role"), *_HOME)
        .join(own, sa.and_(own.c.case_id == CASES.c.id, own.c.agency_id == sa.bindparam("agency_id")))
        .where(CASES.c.id == sa.bindparam("case_id"))
    )
    return _holding_participation(stmt, own, of=CASES if for_update else None)


_WRITABLE_CASE = {flag: _writable_case_statement(for_update=flag) for flag in (False, True)}


def _params(p: Principal, case_id: uuid.UUID) -> dict[str, Any]:
    return principal_params(p) | {"case_id": case_id}


def _access(row: Row | None) -> CaseAccess:
    """The caller's access from a row of _CASE_ACCESS (none: 404)."""
    if row is None:
        raise not_found("case")
    own_role = Role(row.role) if row.role is not None else None
    level = level_of(row, own_role, bool(row.parent_in))
    if level is None:
        raise not_found("case")
    return CaseAccess(case=row, level=level, role=own_role)


async def case_access(db: Statements, p: Principal, case_id: uuid.UUID) -> CaseAccess:
    """The case (a row of its columns) and the caller's access to it; 404 when
    the caller may not see it.

    One round trip: the caller's role and its parent's participation come
    with the case row.
    """
    return _access(await db.first(_CASE_ACCESS, _params(p, case_id)))


async def readable_case(db: Statements, p: Principal, case_id: uuid.UUID) -> Row:
    """A case (a row of its columns) whose contents the caller may read; 404 otherwise."""
    case = await db.first(_READABLE_CASE, _params(p, case_id))
    if case is None:
        raise not_found("case")
    return case


def require_writer(access: CaseAccess, p: Principal) -> None:
    if access.level != "full":
        raise not_found("case")
    if not p.has(Scope.write):
        raise AppError(403, "This action needs the 'write' scope.", slug="forbidden")
    if access.role not in (Role.lead, Role.partner):
        raise forbidden("Only the lead and partner agencies change this case.")


def _reads_too(p: Principal) -> Principal:
    """A PATCH answers the whole record and a stale If-Match its ETag: a key
    without `read` changing a record would read it. It needs `read` as well,
    checked before anything is looked up (the same 403 for any id)."""
    if not p.has(Scope.read):
        raise AppError(403, "Changing a record needs the 'read' scope as well.", slug="forbidden")
    return p


async def _editor(p: Writer) -> Principal:
    return _reads_too(p)


async def _admin_editor(p: Admin) -> Principal:
    return _reads_too(p)


# The caller of a PATCH or DELETE: `write` (agencies: `admin`) and `read`.
Editor = Annotated[Principal, Depends(_editor)]
AdminEditor = Annotated[Principal, Depends(_admin_editor)]


def _held(row: Row, p: Principal) -> CaseAccess:
    """The access of a row of a statement made by _holding_participation(), for a writer.
    A write into a mirror goes to the case's home (HeldElsewhere), once this
    instance's rules let the caller write at all."""
    access = CaseAccess(case=row, level="full", role=Role(row.role))
    require_writer(access, p)
    if row.case_home is not None:
        raise HeldElsewhere(row.case_home, row.case_ref, p)
    return access


_CASE_HOME = sa.select(CASES.c.home_instance).where(CASES.c.id == sa.bindparam("case_id"))


async def require_home(db: Statements, p: Principal, case_id: uuid.UUID | None) -> None:
    """A write that names a mirrored case (an information request in it) goes home."""
    if case_id is not None and (home := await db.scalar(_CASE_HOME, {"case_id": case_id})) is not None:
        raise HeldElsewhere(home, case_id, p)


async def writable_case(
    db: Statements, p: Principal, case_id: uuid.UUID, *, for_update: bool = False
) -> CaseAccess:
    """A case the caller may change (lead or partner with `write`); its
    participation held until commit, and with `for_update` the case row
    locked. `case` is a row of the case's columns (and the caller's `role`).

    No row: the caller's agency does not take part (or no longer does, once
    a removal it waited for committed), and the caller's access says why
    (404 or 403). Should that access allow the write after all (the agency
    was added meanwhile), the held lookup runs again.
    """
    while True:
        row = await db.first(_WRITABLE_CASE[for_update], _params(p, case_id))
        if row is not None:
            return _held(row, p)
        require_writer(await case_access(db, p, case_id), p)


def require_lead(access: CaseAccess, detail: str) -> None:
    if access.role != Role.lead:
        raise forbidden(detail)


def in_case_seen_in_full(rows: sa.Select[Any], keys: Sequence[sa.ColumnElement[Any]]) -> sa.Select[Any]:
    """`rows` (a page of one case's rows, keyset() ordered by `keys`, for
    `case_id`) in the same statement as the caller's access to that case: no
    row at all when the caller does not see the case in full (hidden or
    missing alike: 404), one row of nulls when the page is empty. Run with
    principal_params(). The page is a subquery of its own, read in its index's
    order and cut at its limit, joined to the one case row it belongs to."""
    page = rows.subquery("page")
    seen = (
        sa.select(CASES.c.id)
        .where(CASES.c.id == sa.bindparam("case_id"), sees_case_in_full())
        .subquery("seen")
    )
    return (
        sa.select(page)
        .select_from(seen)
        .outerjoin(page, sa.true())
        .order_by(*(page.c[str(key.key)] for key in keys))
    )


@functools.cache
def _child_row_statement(table: sa.Table) -> sa.Select[Any]:
    """The row's own columns, only when the caller sees its case in full: one
    statement, and a hidden row answers as a missing one does, no row at all.
    A second query only for rows that exist, or more work for the rows found,
    would let a prober time one against the other."""
    return (
        sa.select(table)
        .join(CASES, CASES.c.id == table.c.case_id)
        .where(table.c.id == sa.bindparam("child_id"), sees_case_in_full())
    )


async def readable_child(
    db: Statements, p: Principal, model: type[Any] | sa.Table, child_id: uuid.UUID
) -> Row:
    """A row under a case (location, seized item, detainee: a row of its
    table's columns) the caller may read; 404 (the row's) otherwise."""
    table = table_of(model)
    row = await db.first(_child_row_statement(table), principal_params(p) | {"child_id": child_id})
    if row is None:
        raise not_found(table.name)
    return row


@functools.cache
def _child_role_statement(table: sa.Table) -> sa.Select[Any]:
    """_child_row_statement() with the caller's role in the case (`role`, None if not a participant)."""
    return (
        sa.select(table, _own_role().label("role"))
        .join(CASES, CASES.c.id == table.c.case_id)
        .where(table.c.id == sa.bindparam("child_id"), sees_case_in_full())
    )


@functools.cache
def _writable_child_row_statement(table: sa.Table) -> sa.Select[Any]:
    """The row (its columns and the caller's `role`), locked, only when the
    caller's agency takes part in its case; see _holding_participation()."""
    own = _own_participation()
    stmt = (
        sa.select(table, own.c.role.label("role"), *_HOME)
        .join(CASES, CASES.c.id == table.c.case_id)
        .join(own, sa.and_(own.c.case_id == CASES.c.id, own.c.agency_id == sa.bindparam("agency_id")))
        .where(table.c.id == sa.bindparam("child_id"))
    )
    return _holding_participation(stmt, own, of=table)


async def writable_child(
    db: Statements, p: Principal, model: type[Any] | sa.Table, child_id: uuid.UUID
) -> tuple[Row, CaseAccess]:
    """A row under a case the caller may change (its columns and the caller's
    `role`), locked until commit, with the caller's participation held (as
    writable_case()); the access's `case` is the row too."""
    table = table_of(model)
    values = principal_params(p) | {"child_id": child_id}
    while True:
        row = await db.first(_writable_child_row_statement(table), values)
        if row is not None:
            return row, _held(row, p)
        seen = await db.first(_child_role_statement(table), values)
        if seen is None:
            raise not_found(table.name)
        role = Role(seen.role) if seen.role is not None else None
        require_writer(CaseAccess(case=seen, level="full", role=role), p)


@functools.cache
def audit_entries_visible(*, admin: bool) -> sa.ColumnElement[bool]:
    """The rows of AuditEntry the caller (principal_params(); `admin`: its key
    has the `admin` scope) reads in GET /audit.

    What its agency did (it knows that already, even in a case it has left or
    deleted), and what was done to cases it leads. An `admin` key adds what
    the agencies under its own did (app.agencies.service.require_managed) and
    the entries about the agencies and API clients it manages. None of those
    others in a case the caller's agency does not see in full (or no longer
    exists): such an entry names what is under the case, and its purpose may
    name a suspect.
    """
    # Imported here: this rule is the only one in the module about agencies, clients and the log.
    from app.agencies.models import Agency
    from app.auth.models import ApiClient

    entries, agencies, clients = table_of(AuditEntry), table_of(Agency), table_of(ApiClient)
    agency_id: sa.BindParameter[uuid.UUID] = sa.bindparam("agency_id")
    led = sa.select(CASES.c.id).where(CASES.c.lead_agency_id == agency_id)
    shown: list[sa.ColumnElement[bool]] = [entries.c.case_id.in_(led)]
    if admin:
        tree = sa.select(agencies.c.id).where(agencies.c.id == agency_id).cte("managed", recursive=True)
        tree = tree.union(sa.select(agencies.c.id).where(agencies.c.parent_id == tree.c.id))
        managed = sa.select(tree.c.id)
        keys = sa.select(clients.c.id).where(clients.c.agency_id.in_(managed))
        shown += [
            entries.c.agency_id.in_(managed),
            sa.and_(entries.c.resource_type == "agency", entries.c.resource_id.in_(managed)),
            sa.and_(entries.c.resource_type == "api_client", entries.c.resource_id.in_(keys)),
        ]
    seen = sa.select(CASES.c.id).where(CASES.c.id == entries.c.case_id, sees_case_in_full()).exists()
    others = sa.and_(sa.or_(*shown), sa.or_(entries.c.case_id.is_(None), seen))
    return sa.or_(entries.c.agency_id == agency_id, others)


# ---- peers (app.federation): which instances may hold what of a case --------------------------


def peer_sees_case_in_full() -> sa.ColumnElement[bool]:
    """The peer instance `:peer` hosts an agency that sees the joined case (a
    local one: never a mirror) in full, as sees_case_in_full() says for an
    agency: a participant, or under TLP:AMBER a sub-agency of one. Exactly
    these peers hold a mirror of the case."""
    participant = PARTICIPANTS.alias()
    hosted = AGENCIES.alias()
    takes_part = sa.exists().where(
        participant.c.case_id == CASES.c.id,
        participant.c.agency_id == hosted.c.id,
        hosted.c.home_instance == sa.bindparam("peer"),
    )
    sub = AGENCIES.alias()
    parent_takes_part = sa.exists().where(
        participant.c.case_id == CASES.c.id,
        sub.c.parent_id == participant.c.agency_id,
        sub.c.home_instance == sa.bindparam("peer"),
    )
    return sa.and_(
        CASES.c.home_instance.is_(None),
        sa.or_(takes_part, sa.and_(CASES.c.handling_code == HandlingCode.amber, parent_takes_part)),
    )


# The case `:case_id` (its personal-data sharing) when the peer `:peer` holds a mirror of it.
PEER_HOLDS_CASE = sa.select(CASES.c.share_personal_data).where(
    CASES.c.id == sa.bindparam("case_id"), peer_sees_case_in_full()
)


async def peer_holds_case(db: Statements, peer: str, case_id: uuid.UUID) -> bool:
    return await db.first(PEER_HOLDS_CASE, {"peer": peer, "case_id": case_id}) is not None


def peer_is_party(requests: sa.Table) -> sa.ColumnElement[bool]:
    """The peer `:peer` hosts one of the two agencies of the request rows: as
    sees_request() says for an agency, only they hold a request and its records."""
    hosted = sa.select(AGENCIES.c.id).where(AGENCIES.c.home_instance == sa.bindparam("peer"))
    return sa.or_(requests.c.from_agency_id.in_(hosted), requests.c.to_agency_id.in_(hosted))
