"""Information requests between two agencies, and the messages they exchange.

Only the sending and the receiving agency ever see a request, its messages
and their events (access.sees_request); to anyone else they do not exist
(404). Status moves: the recipient acknowledges, then answers or declines;
the sender may withdraw while the request is sent or acknowledged. Nothing
else moves.

Journal records carry `request_parties` (the feed shows the event to the two
agencies only) and no `case_id`: the audit log shows a case's lead what was
done to its case, and a request between two other agencies that merely
mentions the case must not become visible to it that way.
"""

import functools
import uuid
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from app import access
from app.agencies.service import get_agency, require_agencies
from app.auth.service import Principal
from app.core.crud import row_type
from app.core.db import new_row, table_of, utcnow
from app.core.errors import AppError, conflict, forbidden, invalid, not_found
from app.core.http import public
from app.core.journal import record
from app.core.pagination import PageParams, keyset, read_page, rows_under
from app.core.uow import Row, Statements, Tx
from app.requests.models import (
    InformationRequest,
    InformationRequestCreate,
    InformationRequestPublic,
    Priority,
    RequestMessage,
    RequestMessageCreate,
    RequestStatus,
)

RESOURCE = "information_request"
MESSAGE_RESOURCE = "request_message"

DEFAULT_DUE = {Priority.urgent: timedelta(hours=8), Priority.normal: timedelta(days=7)}
CLOSED = (RequestStatus.answered, RequestStatus.declined, RequestStatus.withdrawn)

# target status -> (the side that may move there, the statuses it may be reached from)
_MOVES: dict[RequestStatus, tuple[str, tuple[RequestStatus, ...]]] = {
    RequestStatus.acknowledged: ("recipient", (RequestStatus.sent,)),
    RequestStatus.answered: ("recipient", (RequestStatus.acknowledged,)),
    RequestStatus.declined: ("recipient", (RequestStatus.acknowledged,)),
    RequestStatus.withdrawn: ("sender", (RequestStatus.sent, RequestStatus.acknowledged)),
}

REQUESTS = table_of(InformationRequest)
MESSAGES = table_of(RequestMessage)
REQUEST_KEYS = (REQUESTS.c.created_at, REQUESTS.c.id)
MESSAGE_KEYS = (MESSAGES.c.created_at, MESSAGES.c.id)


def is_overdue(req: Row, now: datetime | None = None) -> bool:
    return req.status not in CLOSED and req.due_at < (now or utcnow())


def to_public(req: Row) -> InformationRequestPublic:
    return public(InformationRequestPublic, req, overdue=is_overdue(req))


def parties(req: Row) -> tuple[uuid.UUID, uuid.UUID]:
    """The request's two agencies, the only ones its records reach."""
    return (req.from_agency_id, req.to_agency_id)


def _record(tx: Tx, p: Principal, req: Row, action: str, resource_type: str, resource_id: uuid.UUID) -> None:
    """Journal a change that only the request's two agencies may see (no case_id: see above)."""
    record(
        tx,
        p.actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        case_id=None,
        request_parties=parties(req),
        request_id=req.id,
    )


def _visible() -> sa.ColumnElement[bool]:
    return access.sees_request(REQUESTS.c.from_agency_id, REQUESTS.c.to_agency_id)


@functools.cache
def _request_statement(*, for_update: bool) -> sa.Select[Any]:
    stmt = sa.select(REQUESTS).where(REQUESTS.c.id == sa.bindparam("request_id"), _visible())
    return stmt.with_for_update() if for_update else stmt


async def get_request(
    db: Statements, p: Principal, request_id: uuid.UUID, *, for_update: bool = False
) -> Row:
    """A request the caller's agency sent or received; 404 for anyone else.

    The parties are checked in the query: someone else's request comes back
    as no row, exactly like a missing one.
    """
    values = access.principal_params(p) | {"request_id": request_id}
    req = await db.first(_request_statement(for_update=for_update), values)
    if req is None:
        raise not_found("information request")
    if for_update:
        # Changed where its case lives, before anything is compared with this instance's copy.
        await access.require_home(db, p, req.case_id)
    return req


@functools.cache
def _list_statement(*, box: str | None, status: bool, after: bool) -> sa.Select[Any]:
    agency_id: sa.BindParameter[uuid.UUID] = sa.bindparam("agency_id")
    if box == "inbox":
        stmt = sa.select(REQUESTS).where(REQUESTS.c.to_agency_id == agency_id)
    elif box == "outbox":
        stmt = sa.select(REQUESTS).where(REQUESTS.c.from_agency_id == agency_id)
    else:
        stmt = sa.select(REQUESTS).where(_visible())
    if status:
        stmt = stmt.where(REQUESTS.c.status == sa.bindparam("status"))
    return keyset(stmt, keys=REQUEST_KEYS, after=after)


async def list_requests(
    db: Statements,
    p: Principal,
    params: PageParams,
    *,
    box: str | None,
    status: RequestStatus | None,
) -> tuple[list[Row], str | None]:
    stmt = _list_statement(box=box, status=status is not None, after=bool(params.cursor))
    values = access.principal_params(p) | {"status": status}
    # The cursor is bound to the list it came from: another box or filter refuses it.
    scope = f"requests:{box or 'all'}:{status.value if status else ''}"
    return await read_page(db, stmt, values, params, scope=scope, keys=REQUEST_KEYS)


async def _require_readable_case(db: Statements, p: Principal, case_id: uuid.UUID | None) -> None:
    """The same answer for a case that does not exist and one the sender may not read."""
    if case_id is None:
        return
    try:
        await access.readable_case(db, p, case_id)
    except AppError as exc:
        raise invalid(["body", "case_id"], "No case with this id that you can read.") from exc
    await access.require_home(db, p, case_id)


async def _require_reachable(db: Statements, data: InformationRequestCreate) -> None:
    """422 for a request its recipient would never see: one to an agency of a
    peer instance, outside a case or in one that instance holds no mirror of
    (a request reaches a peer only with the mirror of its case)."""
    home = (await get_agency(db, data.to_agency_id)).home_instance
    if home is None:
        return
    if data.case_id is not None and await access.peer_holds_case(db, home, data.case_id):
        return
    where = "outside a case" if data.case_id is None else "in a case it holds no mirror of"
    raise invalid(
        ["body", "to_agency_id"],
        f"This agency lives on the instance {home}, which would never receive a request {where}: "
        "send it in a case the agency takes part in.",
    )


async def create_request(tx: Tx, p: Principal, data: InformationRequestCreate) -> Row:
    await require_agencies(tx, {"to_agency_id": data.to_agency_id}, known=p.agency_id)
    if data.to_agency_id == p.agency_id:
        raise invalid(["body", "to_agency_id"], "A request goes to another agency than the sender's.")
    await _require_readable_case(tx, p, data.case_id)
    await _require_reachable(tx, data)
    now = utcnow()
    if data.due_at is not None and data.due_at <= now:
        raise invalid(["body", "due_at"], "due_at must be in the future.")
    row = new_row(
        InformationRequest,
        from_agency_id=p.agency_id,
        to_agency_id=data.to_agency_id,
        case_id=data.case_id,
        subject=data.subject,
        body=data.body,
        priority=data.priority,
        status=RequestStatus.sent,
        due_at=data.due_at or now + DEFAULT_DUE[data.priority],
        created_at=now,
        updated_at=now,
    )
    await tx.insert([(REQUESTS, [row])])
    req = row_type(REQUESTS)(**row)
    _record(tx, p, req, "request.created", RESOURCE, req.id)
    return req


def require_side(req: Row, p: Principal, target: RequestStatus) -> None:
    """403 when the caller's side of the request may never make this move."""
    side, _ = _MOVES.get(target, ("nobody", ()))
    if side == "recipient" and p.agency_id != req.to_agency_id:
        raise forbidden(f"Only the receiving agency sets a request to '{target.value}'.")
    if side == "sender" and p.agency_id != req.from_agency_id:
        raise forbidden("Only the sending agency withdraws a request.")


_MOVE = (
    sa.update(REQUESTS)
    .where(REQUESTS.c.id == sa.bindparam("request_id"))
    .values(
        status=sa.bindparam("new_status", type_=REQUESTS.c.status.type),
        version=REQUESTS.c.version + 1,
        updated_at=sa.bindparam("at", type_=REQUESTS.c.updated_at.type),
    )
)


async def change_status(tx: Tx, p: Principal, req: Row, target: RequestStatus) -> Row:
    """Move the request (locked, If-Match checked by the caller) to `target`; the request as it is now."""
    require_side(req, p, target)
    _, sources = _MOVES.get(target, ("nobody", ()))
    if req.status not in sources:
        raise conflict(f"A request cannot move from '{req.status.value}' to '{target.value}'.")
    at = utcnow()
    await tx.execute(_MOVE, {"request_id": req.id, "new_status": target, "at": at})
    _record(tx, p, req, "request.updated", RESOURCE, req.id)
    return req._replace(status=target, version=req.version + 1, updated_at=at)


async def add_message(tx: Tx, p: Principal, req: Row, data: RequestMessageCreate) -> Row:
    if req.status == RequestStatus.withdrawn:
        raise conflict("The sender withdrew this request; it takes no more messages.")
    row = new_row(
        RequestMessage,
        request_id=req.id,
        from_agency_id=p.agency_id,
        body=data.body,
        source_evaluation=data.source_evaluation,
        information_evaluation=data.information_evaluation,
    )
    await tx.insert([(MESSAGES, [row])])
    _record(tx, p, req, "request_message.created", MESSAGE_RESOURCE, row["id"])
    return row_type(MESSAGES)(**row)


async def list_messages(
    db: Statements, request_id: uuid.UUID, params: PageParams
) -> tuple[list[Row], str | None]:
    """A page of the request's messages (the caller's sight of the request checked by get_request())."""
    scope = f"request-messages:{request_id}"
    return await rows_under(db, MESSAGES.c.request_id, request_id, params, scope=scope, keys=MESSAGE_KEYS)


_MESSAGE = sa.select(MESSAGES).where(
    MESSAGES.c.id == sa.bindparam("message_id"), MESSAGES.c.request_id == sa.bindparam("request_id")
)


async def get_message(db: Statements, request_id: uuid.UUID, message_id: uuid.UUID) -> Row:
    message = await db.first(_MESSAGE, {"request_id": request_id, "message_id": message_id})
    if message is None:
        raise not_found("message")
    return message
