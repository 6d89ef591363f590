from fastapi import APIRouter

from app.auth.deps import Reader
from app.db import SessionDep
from app.events import service
from app.events.models import EventPublic
from app.pagination import Page, PageDep

router = APIRouter(prefix="/events", tags=["events"])


@router.get("", response_model=Page[EventPublic])
def list_events(session: SessionDep, p: Reader, page: PageDep) -> Page[EventPublic]:
    """The events of what the caller may see now, in `seq` order, each once."""
    items, cursor = service.list_events(session, p, page)
    return Page(items=[EventPublic.model_validate(e) for e in items], next_cursor=cursor)
