import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Request, Response

from app.auth.deps import Admin
from app.config import Settings
from app.db import SessionDep
from app.http import api_path, check_if_match, created, with_etag
from app.idempotency.service import IdempotencyDep, create_once
from app.pagination import Page, PageDep
from app.webhooks import service
from app.webhooks.models import DeliveryPublic, SubscriptionCreate, SubscriptionCreated, SubscriptionPublic

router = APIRouter(prefix="/subscriptions", tags=["webhooks"])


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(_settings)]
IfMatch = Annotated[
    str | None, Header(alias="If-Match", description="The ETag you last read; required (428 without it)")
]


@router.get("", response_model=Page[SubscriptionPublic], operation_id="subscriptions.list")
def list_subscriptions(session: SessionDep, p: Admin, page: PageDep) -> Page[SubscriptionPublic]:
    """The webhook subscriptions of the caller's agency (admin scope)."""
    items, cursor = service.list_subscriptions(session, p, page)
    return Page(items=[service.to_public(s) for s in items], next_cursor=cursor)


@router.post("", status_code=201, response_model=SubscriptionCreated, operation_id="subscriptions.create")
def create_subscription(
    session: SessionDep, p: Admin, body: SubscriptionCreate, idem: IdempotencyDep, settings: SettingsDep
) -> Response:
    """Subscribe a URL to the events the agency may see; the answer holds the
    signing `secret`, shown this once. The URL must be https on a public address."""

    def create() -> Response:
        sub, secret = service.create_subscription(session, p, body, settings)
        return created(
            SubscriptionCreated(**service.to_public(sub).model_dump(), secret=secret),
            location=api_path("subscriptions", sub.id),
            version=sub.version,
        )

    return create_once(session, p, idem, create)


@router.get("/{subscription_id}", response_model=SubscriptionPublic, operation_id="subscriptions.get")
def get_subscription(
    session: SessionDep, p: Admin, subscription_id: uuid.UUID, response: Response
) -> SubscriptionPublic:
    """One subscription of the caller's agency: its state, cursor and next attempt (never its secret)."""
    sub = service.get_subscription(session, p, subscription_id)
    with_etag(response, sub.version)
    return service.to_public(sub)


@router.delete("/{subscription_id}", status_code=204, operation_id="subscriptions.delete")
def delete_subscription(
    request: Request, session: SessionDep, p: Admin, subscription_id: uuid.UUID, _if_match: IfMatch = None
) -> Response:
    """Stop delivering to this subscription; its delivery log goes with it."""
    sub = service.get_subscription(session, p, subscription_id, for_update=True)
    check_if_match(request, sub.version)
    service.delete_subscription(session, p, sub)
    return Response(status_code=204)


@router.get(
    "/{subscription_id}/deliveries", response_model=Page[DeliveryPublic], operation_id="deliveries.list"
)
def list_deliveries(
    session: SessionDep, p: Admin, subscription_id: uuid.UUID, page: PageDep
) -> Page[DeliveryPublic]:
    """Every delivery attempt, oldest first: event, status code, error class, next retry."""
    sub = service.get_subscription(session, p, subscription_id)
    items, cursor = service.list_deliveries(session, sub, page)
    return Page(items=[DeliveryPublic.model_validate(d) for d in items], next_cursor=cursor)
