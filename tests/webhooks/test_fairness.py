"""Slow receivers: an attempt has one bound in all, and one agency's slow
receivers hold its own share of the delivery slots, not everyone's."""

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.auth.models import Scope
from app.core.config import Settings
from app.core.uow import Database
from app.webhooks.delivery import Deliverer
from tests.conftest import Caller, make_caller, new_case, walk
from tests.webhooks.conftest import API, Clock, subscribe
from tests.webhooks.receiver import dribbling


async def _until(condition: Callable[[], bool], seconds: float) -> float:
    """How long `condition` took to hold; fails after `seconds`."""
    started = time.monotonic()
    while not condition():
        assert time.monotonic() - started < seconds, "waited in vain"
        await asyncio.sleep(0.01)
    return time.monotonic() - started


def test_an_attempt_ends_at_its_total_bound(
    hooks: TestClient,
    kz_admin: Caller,
    deliverer: Deliverer,
    private_settings: Settings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every read is quick (a `100 Continue` each 0.2 s); the answer comes after
    more than the bound: the attempt is a time-out, ended at the bound."""
    bound = private_settings.webhook_timeout_seconds

    async def run() -> tuple[int, float, dict[str, Any]]:
        async with dribbling(lambda _path: bound * 2.4, drip=bound * 0.4) as receiver:
            sub = await asyncio.to_thread(subscribe, hooks, kz_admin, receiver.url("/slow"))
            started = time.monotonic()
            try:
                attempts = await deliverer.run_once()
            finally:
                await deliverer.database.close()
            return attempts, time.monotonic() - started, sub

    attempts, took, sub = asyncio.run(run())
    assert attempts == 1
    assert took < bound * 1.8
    [delivery] = walk(hooks, f"{API}/subscriptions/{sub['id']}/deliveries", kz_admin.headers)
    assert (delivery["status_code"], delivery["error"]) == (None, "timeout")
    assert bound * 1000 <= delivery["duration_ms"] < bound * 1600
    [line] = [r for r in caplog.records if r.getMessage() == "webhook_attempt_failed"]
    assert (line.subscription_id, line.reason, line.attempt) == (sub["id"], "timeout", 1)  # type: ignore[attr-defined]


def test_a_slow_agency_does_not_starve_another(
    hooks: TestClient,
    engine: sa.Engine,
    database: Database,
    kz_admin: Caller,
    lead: Caller,
    partner: Caller,
    private_settings: Settings,
    clock: Clock,
) -> None:
    """KZ's four receivers answer successfully, each after 0.3 s of `100
    Continue`s, and KZ has many events; UA's receiver answers at once. With four
    slots, two per agency, KZ holds two and UA's event goes out at once."""
    settings = private_settings.model_copy(
        update={
            "webhook_timeout_seconds": 2.0,
            "webhook_concurrency": 4,
            "webhook_agency_concurrency": 2,
            "webhook_poll_seconds": 0.05,
        }
    )
    deliverer = Deliverer(database, settings, clock=clock)
    ua_admin = make_caller(engine, partner.agency_code, Scope.admin)

    async def run() -> tuple[float, int, dict[str, int]]:
        async with dribbling(lambda path: 0.3 if path.startswith("/slow") else 0.0, drip=0.1) as receiver:
            for n in range(4):
                await asyncio.to_thread(subscribe, hooks, kz_admin, receiver.url(f"/slow/{n}"))
            for _ in range(4):
                await asyncio.to_thread(new_case, hooks, lead)
            await asyncio.to_thread(subscribe, hooks, ua_admin, receiver.url("/ua"))
            stop = asyncio.Event()
            running = asyncio.ensure_future(deliverer.run(stop))
            try:
                # UA's first event is out, KZ's receivers are kept busy, and
                # the deliverer has had time to fill every slot it would.
                await _until(lambda: len(receiver.bodies("/ua")) == 1 and receiver.in_flight("/slow") >= 2, 5)
                await asyncio.sleep(0.25)
                await asyncio.to_thread(new_case, hooks, partner)
                waited = await _until(
                    lambda: "case.created" in [json.loads(b)["type"] for b in receiver.bodies("/ua")], 5
                )
                busy = receiver.in_flight("/slow")
            finally:
                stop.set()
                await running
                await database.close()
            return waited, busy, receiver.max_in_flight

    waited, busy, max_in_flight = asyncio.run(run())
    # Without sharing, UA waits until a KZ batch (9 to 12 events of 0.3 s) ends.
    assert waited < 1.0
    # KZ was still busy when UA's event went out (one of its slots may be
    # between two attempts at that instant), and never held more than its share.
    assert busy >= 1
    assert max_in_flight["/slow"] == 2
