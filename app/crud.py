"""The versioned-write pattern every changeable resource shares."""

import uuid
from typing import Any, Protocol

from sqlalchemy.orm import Session

from app.db import utcnow
from app.journal import Actor, record


class Versioned(Protocol):
    id: Any
    version: int
    updated_at: Any


def add_recorded(
    session: Session,
    obj: Any,
    actor: Actor,
    *,
    resource_type: str,
    case_id: uuid.UUID | None,
    resource_id: uuid.UUID | None = None,
) -> None:
    """Insert a new row and record its creation."""
    session.add(obj)
    session.flush()
    record(
        session,
        actor,
        action=f"{resource_type}.created",
        resource_type=resource_type,
        resource_id=resource_id or obj.id,
        case_id=case_id,
    )


def update_recorded(
    session: Session,
    obj: Versioned,
    changes: dict[str, Any],
    actor: Actor,
    *,
    resource_type: str,
    case_id: uuid.UUID | None,
    resource_id: uuid.UUID | None = None,
    blind: frozenset[str] = frozenset(),
) -> bool:
    """Apply changes to a row the caller has locked and whose If-Match it
    checked. Values equal to the stored ones are no change: when nothing is
    left, the row keeps its version and nothing is recorded (False).

    A `blind` field sent is a change even when it equals the stored value:
    an unchanged ETag would confirm a guess of a value the caller may not
    read (personal data without X-Purpose)."""
    changed = {name: value for name, value in changes.items() if name in blind or getattr(obj, name) != value}
    if not changed:
        return False
    for name, value in changed.items():
        setattr(obj, name, value)
    obj.version += 1
    obj.updated_at = utcnow()
    session.add(obj)
    session.flush()
    record(
        session,
        actor,
        action=f"{resource_type}.updated",
        resource_type=resource_type,
        resource_id=resource_id or obj.id,
        case_id=case_id,
    )
    return True


def delete_recorded(
    session: Session,
    obj: Any,
    actor: Actor,
    *,
    resource_type: str,
    case_id: uuid.UUID | None,
    resource_id: uuid.UUID | None = None,
) -> None:
    rid = resource_id or obj.id
    session.delete(obj)
    session.flush()
    record(
        session,
        actor,
        action=f"{resource_type}.deleted",
        resource_type=resource_type,
        resource_id=rid,
        case_id=case_id,
    )
