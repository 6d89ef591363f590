from typing import Annotated

from fastapi import APIRouter, Query, Response

from app.auth.deps import Reader
from app.core.binder import HotRoute, hot
from app.core.deps import DatabaseDep
from app.core.errors import invalid
from app.core.http import listed, public_json
from app.core.pagination import Page, PageDep
from app.events import service
from app.events.models import EventPublic

router = APIRouter(prefix="/events", tags=["events"], route_class=HotRoute)


@router.get("", response_model=Page[EventPublic], summary="Follow the event feed")
@hot
async def list_events(
    reads: DatabaseDep,
    p: Reader,
    page: PageDep,
    after: Annotated[
        int | None,
        Query(
            ge=0, le=2**53, description="Resume after this `seq` (the last one you saw); not with `cursor`"
        ),
    ] = None,
) -> Response:
    """Scope `read`. The events of what the caller may see now, in `seq` order, each once.

    `next_cursor` is null at the end of the feed; to keep polling, come back with `after=<the last seq you
    saw>`. Events of records the caller may not see are left out.
    """
    if after is not None and page.cursor is not None:
        raise invalid(["query", "after"], "Give either after or cursor, not both.")
    items, cursor = await service.list_events(reads, p, page, after=after)
    return listed([public_json(EventPublic, e) for e in items], cursor)
