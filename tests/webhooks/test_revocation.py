"""An agency whose API keys are all revoked receives no more webhooks, and a
key issued again does not silently resume them."""

import uuid
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.auth import service as auth
from app.auth.models import ApiClient, Scope
from app.core.config import Settings
from app.core.db import utcnow
from app.core.records import AuditEntry
from app.core.uow import Database
from app.webhooks import service
from app.webhooks.delivery import Deliverer
from tests.conftest import Caller, make_caller, new_case, run_unit
from tests.webhooks.conftest import API, Clock, claim, complete, deliver, events_of, subscribe
from tests.webhooks.receiver import receiving


def _revoke(engine: sa.Engine, caller: Caller) -> None:
    run_unit(engine, lambda tx: auth.revoke_client(tx, caller.key))


def _disabled_reasons(engine: sa.Engine, sub_id: str) -> list[Any]:
    with engine.connect() as conn:
        details = conn.execute(
            sa.select(AuditEntry.detail)
            .where(AuditEntry.action == "subscription.disabled", AuditEntry.resource_id == uuid.UUID(sub_id))
            .order_by(AuditEntry.seq)
        )
        return [d["reason"] for d in details.scalars()]


def test_revoking_the_agencys_last_key_stops_its_webhooks(
    hooks: TestClient,
    engine: sa.Engine,
    kz_admin: Caller,
    lead: Caller,
    partner: Caller,
    deliverer: Deliverer,
) -> None:
    """kz_admin and lead are two keys of one agency."""
    with receiving() as receiver:
        sub = subscribe(hooks, kz_admin, receiver.url())
        # One key of the agency is left: delivery goes on.
        _revoke(engine, kz_admin)
        new_case(hooks, lead)
        assert deliver(deliverer) == 3
        _revoke(engine, lead)
        # Events the agency would see (a GREEN case is shown to every agency).
        new_case(hooks, partner, handling_code="TLP:GREEN")
        assert deliver(deliverer) == 0
        # A key issued again sees the subscription disabled, and nothing resumes.
        again = make_caller(engine, kz_admin.agency_code, Scope.read, Scope.admin)
        state = hooks.get(f"{API}/subscriptions/{sub['id']}", headers=again.headers)
        assert state.json()["status"] == "disabled"
        assert state.json()["next_attempt_at"] is None
        assert state.headers["ETag"] == '"2"'
        new_case(hooks, partner, handling_code="TLP:GREEN")
        assert deliver(deliverer) == 0
        assert [e["type"] for e in events_of(receiver.bodies())] == [
            "subscription.created",
            "case.created",
            "participant.created",
        ]
        # Subscribing again delivers what happens from then on.
        subscribe(hooks, again, receiver.url("/again"))
        assert [e["type"] for e in events_of(receiver.bodies("/again"))] == []
        assert deliver(deliverer) == 1
        assert [e["type"] for e in events_of(receiver.bodies("/again"))] == ["subscription.created"]
    assert _disabled_reasons(engine, sub["id"]) == ["no_live_api_key"]
    feed = [
        (e["type"], e["resource_id"])
        for e in hooks.get(f"{API}/events", headers=again.headers).json()["items"]
    ]
    assert ("subscription.disabled", sub["id"]) in feed


def test_a_subscription_of_an_agency_without_a_live_key_is_not_delivered(
    hooks: TestClient,
    engine: sa.Engine,
    kz_admin: Caller,
    partner: Caller,
    deliverer: Deliverer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Keys that ended without revoke_client disabling the subscriptions (or a
    revoked key that a worker still trusted for a second subscribed): the
    deliverer disables the subscription instead of sending."""
    with receiving() as receiver:
        sub = subscribe(hooks, kz_admin, receiver.url())
        with engine.begin() as conn:
            conn.execute(
                sa.update(ApiClient)
                .where(ApiClient.agency_id == kz_admin.agency_id)
                .values(revoked_at=utcnow())
            )
        new_case(hooks, partner, handling_code="TLP:GREEN")
        assert deliver(deliverer) == 0
        assert receiver.received == []
    assert _disabled_reasons(engine, sub["id"]) == ["no_live_api_key"]
    assert f"webhook subscription {sub['id']} disabled: its agency has no live API key" in caplog.text


def test_a_batch_that_ends_after_the_revocation_leaves_it_disabled_once(
    hooks: TestClient,
    engine: sa.Engine,
    database: Database,
    kz_admin: Caller,
    private_settings: Settings,
    clock: Clock,
) -> None:
    sub = subscribe(hooks, kz_admin, "http://127.0.0.1:9/hook")
    [claimed] = claim(database, private_settings, clock.now)
    _revoke(engine, kz_admin)
    # The batch in flight failed for the last time: it would disable the subscription too.
    outcome = service.Outcome(
        claimed.last_seq, [], private_settings.webhook_max_attempts, clock.now, clock.now, True
    )
    assert complete(database, claimed, outcome, clock.now)
    again = make_caller(engine, kz_admin.agency_code, Scope.admin)
    state = hooks.get(f"{API}/subscriptions/{sub['id']}", headers=again.headers)
    assert state.json()["status"] == "disabled"
    assert state.headers["ETag"] == '"2"'
    assert _disabled_reasons(engine, sub["id"]) == ["no_live_api_key"]
