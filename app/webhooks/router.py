import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from app.access import AdminEditor
from app.auth.deps import Admin
from app.config import Settings
from app.db import SessionDep
from app.http import StrictJSONRoute, api_path, check_if_match, created, with_etag
from app.idempotency.service import IdempotencyDep, create_once_sync
from app.pagination import Page, PageDep
from app.webhooks import service
from app.webhooks.models import (
    DeliveryPublic,
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionPublic,
    WebhookSubscription,
)

router = APIRouter(prefix="/subscriptions", tags=["webhooks"], route_class=StrictJSONRoute)


async def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(_settings)]


@router.get(
    "",
    response_model=Page[SubscriptionPublic],
    operation_id="subscriptions.list",
    summary="List the agency's webhook subscriptions",
)
def list_subscriptions(session: SessionDep, p: Admin, page: PageDep) -> Page[SubscriptionPublic]:
    """Scope `admin`. The webhook subscriptions of the caller's own agency, never another's."""
    items, cursor = service.list_subscriptions(session, p, page)
    return Page(items=[service.to_public(s) for s in items], next_cursor=cursor)


@router.post(
    "",
    status_code=201,
    response_model=SubscriptionCreated,
    operation_id="subscriptions.create",
    summary="Subscribe a URL to the agency's events",
)
def create_subscription(
    session: SessionDep, p: Admin, body: SubscriptionCreate, idem: IdempotencyDep, settings: SettingsDep
) -> Response:
    """Scope `admin`. Subscribes a URL to the events the agency may see when each is delivered; the answer
    holds the signing `secret`, shown this once (and again only to a replay of this request with its
    `Idempotency-Key`, whose first answer may have been lost). The URL must be https on a public address.
    """

    def respond(sub: WebhookSubscription, secret: str) -> Response:
        return created(
            SubscriptionCreated(**service.to_public(sub).model_dump(), secret=secret),
            location=api_path("subscriptions", sub.id),
            version=sub.version,
        )

    def replay(subscription_id: uuid.UUID) -> Response:
        sub = service.get_subscription(session, p, subscription_id)
        return respond(sub, service.unseal(settings, sub.id, sub.secret_sealed))

    return create_once_sync(
        session, p, idem, lambda: respond(*service.create_subscription(session, p, body, settings)), replay
    )


@router.get(
    "/{subscription_id}",
    response_model=SubscriptionPublic,
    operation_id="subscriptions.get",
    summary="Read a webhook subscription",
)
def get_subscription(
    session: SessionDep, p: Admin, subscription_id: uuid.UUID, response: Response
) -> SubscriptionPublic:
    """Scope `admin`. One subscription of the caller's agency: its state, cursor and next attempt (never its
    secret). Another agency's subscription answers 404, exactly as one that does not exist.
    """
    sub = service.get_subscription(session, p, subscription_id)
    with_etag(response, sub.version)
    return service.to_public(sub)


@router.delete(
    "/{subscription_id}",
    status_code=204,
    operation_id="subscriptions.delete",
    summary="Delete a webhook subscription",
)
def delete_subscription(
    request: Request, session: SessionDep, p: AdminEditor, subscription_id: uuid.UUID
) -> Response:
    """Scope `admin` and scope `read`. Stops delivering to this subscription; its delivery log goes with
    it. Needs `If-Match`. Another agency's subscription answers 404, exactly as one that does not exist.
    """
    sub = service.get_subscription(session, p, subscription_id, for_update=True)
    check_if_match(request, sub.version)
    service.delete_subscription(session, p, sub)
    return Response(status_code=204)


@router.get(
    "/{subscription_id}/deliveries",
    response_model=Page[DeliveryPublic],
    operation_id="deliveries.list",
    summary="List a subscription's delivery attempts",
)
def list_deliveries(
    session: SessionDep, p: Admin, subscription_id: uuid.UUID, page: PageDep
) -> Page[DeliveryPublic]:
    """Scope `admin`. Every delivery attempt, oldest first: event, status code, error class, next retry
    (never the receiver's answer). Another agency's subscription answers 404, exactly as one that does not
    exist.
    """
    sub = service.get_subscription(session, p, subscription_id)
    items, cursor = service.list_deliveries(session, sub, page)
    return Page(items=[DeliveryPublic.model_validate(d) for d in items], next_cursor=cursor)
