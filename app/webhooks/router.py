import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from app.access import AdminEditor
from app.auth.deps import Admin
from app.core.config import Settings
from app.core.deps import UnitDep
from app.core.http import StrictJSONRoute, api_path, check_if_match, created, deleted, listed, ok, public
from app.core.pagination import Page, PageDep
from app.core.uow import Row
from app.idempotency.http import IdempotencyDep, create_once
from app.webhooks import service
from app.webhooks.models import (
    DeliveryPublic,
    SubscriptionCreate,
    SubscriptionCreated,
    SubscriptionPublic,
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
async def list_subscriptions(tx: UnitDep, p: Admin, page: PageDep) -> Response:
    """Scope `admin`. The webhook subscriptions of the caller's own agency, never another's."""
    items, cursor = await service.list_subscriptions(tx, p, page)
    return listed([service.to_public(s) for s in items], cursor)


@router.post(
    "",
    status_code=201,
    response_model=SubscriptionCreated,
    operation_id="subscriptions.create",
    summary="Subscribe a URL to the agency's events",
)
async def create_subscription(
    tx: UnitDep, p: Admin, body: SubscriptionCreate, idem: IdempotencyDep, settings: SettingsDep
) -> Response:
    """Scope `admin`. Subscribes a URL to the events the agency may see when each is delivered; the answer
    holds the signing `secret`, shown this once (and again only to a replay of this request with its
    `Idempotency-Key`, whose first answer may have been lost). The URL must be https on a public address.
    """

    def respond(sub: Row, secret: str) -> Response:
        return created(
            service.to_created(sub, secret), location=api_path("subscriptions", sub.id), version=sub.version
        )

    async def create() -> Response:
        return respond(*await service.create_subscription(tx, p, body, settings))

    async def replay(subscription_id: uuid.UUID) -> Response:
        sub = await service.get_subscription(tx, p, subscription_id)
        return respond(sub, service.unseal(settings, sub.id, sub.secret_sealed))

    return await create_once(tx, p, idem, create, replay)


@router.get(
    "/{subscription_id}",
    response_model=SubscriptionPublic,
    operation_id="subscriptions.get",
    summary="Read a webhook subscription",
)
async def get_subscription(tx: UnitDep, p: Admin, subscription_id: uuid.UUID) -> Response:
    """Scope `admin`. One subscription of the caller's agency: its state, cursor and next attempt (never its
    secret). Another agency's subscription answers 404, exactly as one that does not exist.
    """
    sub = await service.get_subscription(tx, p, subscription_id)
    return ok(service.to_public(sub), version=sub.version)


@router.delete(
    "/{subscription_id}",
    status_code=204,
    operation_id="subscriptions.delete",
    summary="Delete a webhook subscription",
)
async def delete_subscription(
    request: Request, tx: UnitDep, p: AdminEditor, subscription_id: uuid.UUID
) -> Response:
    """Scope `admin` and scope `read`. Stops delivering to this subscription; its delivery log goes with
    it. Needs `If-Match`. Another agency's subscription answers 404, exactly as one that does not exist.
    """
    sub = await service.get_subscription(tx, p, subscription_id, for_update=True)
    check_if_match(request, sub.version)
    await service.delete_subscription(tx, p, sub)
    return deleted()


@router.get(
    "/{subscription_id}/deliveries",
    response_model=Page[DeliveryPublic],
    operation_id="deliveries.list",
    summary="List a subscription's delivery attempts",
)
async def list_deliveries(tx: UnitDep, p: Admin, subscription_id: uuid.UUID, page: PageDep) -> Response:
    """Scope `admin`. Every delivery attempt, oldest first: event, status code, error class, next retry
    (never the receiver's answer). Another agency's subscription answers 404, exactly as one that does not
    exist.
    """
    sub = await service.get_subscription(tx, p, subscription_id)
    items, cursor = await service.list_deliveries(tx, sub, page)
    return listed([public(DeliveryPublic, d) for d in items], cursor)
