"""Information requests between two agencies, and the messages they exchange.

Only the sending and the receiving agency ever see a request, its messages
and their events; to anyone else they do not exist (404). Status moves:
the recipient acknowledges, then answers or declines; the sender may
withdraw while the request is sent or acknowledged. Nothing else moves.

Journal records carry `request_parties` (the feed shows the event to the two
agencies only) and no `case_id`: the audit log shows a case's lead what was
done to its case, and a request between two other agencies that merely
mentions the case must not become visible to it that way.
"""

import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session

from app import access
from app.agencies.service import require_agencies_sync
from app.auth.service import Principal
from app.db import utcnow
from app.errors import AppError, conflict, forbidden, invalid, not_found
from app.journal import record
from app.pagination import PageParams, paginate_sync
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


def is_overdue(req: InformationRequest, now: datetime | None = None) -> bool:
    return req.status not in CLOSED and req.due_at < (now or utcnow())


def to_public(req: InformationRequest) -> InformationRequestPublic:
    return InformationRequestPublic.model_validate(req, update={"overdue": is_overdue(req)})


def _parties(req: InformationRequest) -> tuple[uuid.UUID, uuid.UUID]:
    return (req.from_agency_id, req.to_agency_id)


def _party(p: Principal) -> sa.ColumnElement[bool]:
    """The caller's agency sent or received the request."""
    return sa.or_(
        InformationRequest.from_agency_id == p.agency_id,
        InformationRequest.to_agency_id == p.agency_id,
    )


def _record(
    session: Session,
    p: Principal,
    req: InformationRequest,
    action: str,
    resource_type: str,
    resource_id: uuid.UUID,
) -> None:
    """Journal a change that only the request's two agencies may see (no case_id: see above)."""
    record(
        session,
        p.actor,
        action=action,
        resource_type=resource_type,
        resource_id=resource_id,
        case_id=None,
        request_parties=_parties(req),
    )


def get_request(
    session: Session, p: Principal, request_id: uuid.UUID, *, for_update: bool = False
) -> InformationRequest:
    """A request the caller's agency sent or received; 404 for anyone else.

    The parties are checked in the query: someone else's request comes back
    as no row, exactly like a missing one.
    """
    stmt = sa.select(InformationRequest).where(InformationRequest.id == request_id, _party(p))
    req = session.execute(stmt.with_for_update() if for_update else stmt).scalar_one_or_none()
    if req is None:
        raise not_found("information request")
    return req


def list_requests(
    session: Session,
    p: Principal,
    params: PageParams,
    *,
    box: str | None,
    status: RequestStatus | None,
) -> tuple[list[InformationRequest], str | None]:
    if box == "inbox":
        stmt = sa.select(InformationRequest).where(InformationRequest.to_agency_id == p.agency_id)
    elif box == "outbox":
        stmt = sa.select(InformationRequest).where(InformationRequest.from_agency_id == p.agency_id)
    else:
        stmt = sa.select(InformationRequest).where(_party(p))
    if status is not None:
        stmt = stmt.where(InformationRequest.status == status)
    # The cursor is bound to the list it came from: another box or filter refuses it.
    scope = f"requests:{box or 'all'}:{status.value if status else ''}"
    return paginate_sync(
        session, stmt, params, scope=scope, keys=(InformationRequest.created_at, InformationRequest.id)
    )


def _require_readable_case(session: Session, p: Principal, case_id: uuid.UUID | None) -> None:
    """The same answer for a case that does not exist and one the sender may not read."""
    if case_id is None:
        return
    try:
        access.readable_case_sync(session, p, case_id)
    except AppError as exc:
        raise invalid(["body", "case_id"], "No case with this id that you can read.") from exc


def create_request(session: Session, p: Principal, data: InformationRequestCreate) -> InformationRequest:
    require_agencies_sync(session, {"to_agency_id": data.to_agency_id})
    if data.to_agency_id == p.agency_id:
        raise invalid(["body", "to_agency_id"], "A request goes to another agency than the sender's.")
    _require_readable_case(session, p, data.case_id)
    now = utcnow()
    if data.due_at is not None and data.due_at <= now:
        raise invalid(["body", "due_at"], "due_at must be in the future.")
    req = InformationRequest(
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
    session.add(req)
    session.flush()
    _record(session, p, req, "request.created", RESOURCE, req.id)
    return req


def require_side(req: InformationRequest, p: Principal, target: RequestStatus) -> None:
    """403 when the caller's side of the request may never make this move."""
    side, _ = _MOVES.get(target, ("nobody", ()))
    if side == "recipient" and p.agency_id != req.to_agency_id:
        raise forbidden(f"Only the receiving agency sets a request to '{target.value}'.")
    if side == "sender" and p.agency_id != req.from_agency_id:
        raise forbidden("Only the sending agency withdraws a request.")


def change_status(
    session: Session, p: Principal, req: InformationRequest, target: RequestStatus
) -> InformationRequest:
    """Move the request (locked, If-Match checked by the caller) to `target`."""
    require_side(req, p, target)
    _, sources = _MOVES.get(target, ("nobody", ()))
    if req.status not in sources:
        raise conflict(f"A request cannot move from '{req.status.value}' to '{target.value}'.")
    req.status = target
    req.version += 1
    req.updated_at = utcnow()
    session.add(req)
    session.flush()
    _record(session, p, req, "request.updated", RESOURCE, req.id)
    return req


def add_message(
    session: Session, p: Principal, req: InformationRequest, data: RequestMessageCreate
) -> RequestMessage:
    if req.status == RequestStatus.withdrawn:
        raise conflict("The sender withdrew this request; it takes no more messages.")
    message = RequestMessage(
        request_id=req.id,
        from_agency_id=p.agency_id,
        body=data.body,
        source_evaluation=data.source_evaluation,
        information_evaluation=data.information_evaluation,
    )
    session.add(message)
    session.flush()
    _record(session, p, req, "request_message.created", MESSAGE_RESOURCE, message.id)
    return message


def list_messages(
    session: Session, request_id: uuid.UUID, params: PageParams
) -> tuple[list[RequestMessage], str | None]:
    scope = f"request-messages:{request_id}"
    return paginate_sync(
        session,
        sa.select(RequestMessage).where(RequestMessage.request_id == request_id),
        params,
        scope=scope,
        keys=(RequestMessage.created_at, RequestMessage.id),
    )


def get_message(session: Session, request_id: uuid.UUID, message_id: uuid.UUID) -> RequestMessage:
    message = session.execute(
        sa.select(RequestMessage).where(
            RequestMessage.id == message_id, RequestMessage.request_id == request_id
        )
    ).scalar_one_or_none()
    if message is None:
        raise not_found("message")
    return message
