import asyncio
import json
import uuid
from collections.abc import Coroutine, Iterator
from datetime import datetime, timedelta
from typing import Any, TypeVar

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.auth.models import Scope
from app.core.config import Settings
from app.core.db import utcnow
from app.core.secrets import audit_key
from app.core.uow import Database, create_database
from app.main import create_app
from app.webhooks import service
from app.webhooks.delivery import LEASE, Deliverer
from tests.conftest import Caller, make_caller

API = "/api/v1"
T = TypeVar("T")


class Clock:
    """The deliverer's time, stopped, and moved by the test: retries become due
    without waiting, and only when the test says. It starts an hour ahead, so
    that subscriptions the test creates (at the real time) are due at once."""

    def __init__(self) -> None:
        self.now = utcnow() + timedelta(hours=1)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture(scope="module")
def private_settings(settings: Settings) -> Settings:
    """Receivers in these tests listen on 127.0.0.1 over plain http."""
    return settings.model_copy(
        update={"webhook_allow_private": True, "webhook_timeout_seconds": 0.5, "webhook_max_attempts": 4}
    )


@pytest.fixture(scope="module")
def private_app(private_settings: Settings, engine: sa.Engine) -> Iterator[FastAPI]:
    application = create_app(private_settings)
    yield application


@pytest.fixture
def hooks(private_app: FastAPI) -> Iterator[TestClient]:
    """A client of the app that accepts local receivers."""
    with TestClient(private_app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def database(engine: sa.Engine, settings: Settings) -> Database:
    """The deliverers' database (the served app has its own, app.state.database)."""
    return create_database(
        engine, size=4, timeout=settings.pool_timeout_seconds, audit_key=audit_key(settings)
    )


@pytest.fixture
def deliverer(database: Database, private_settings: Settings, clock: Clock) -> Deliverer:
    return Deliverer(database, private_settings, clock=clock)


def run(database: Database, work: Coroutine[Any, Any, T]) -> T:
    """`await work` in an event loop of its own, then close the database's
    connections of that loop (asyncpg's belong to the loop that opened them)."""

    async def main() -> T:
        try:
            return await work
        finally:
            await database.close()

    return asyncio.run(main())


def deliver(deliverer: Deliverer) -> int:
    return run(deliverer.database, deliverer.run_once())


def claim(database: Database, settings: Settings, now: datetime) -> list[service.Claim]:
    return run(database, service.claim_due(database, settings, now=now, limit=10, lease=LEASE))


def complete(database: Database, claimed: service.Claim, outcome: service.Outcome, now: datetime) -> bool:
    return run(database, database.run(lambda tx: service.complete(tx, claimed, outcome, now=now)))


@pytest.fixture
def kz_admin(engine: sa.Engine) -> Caller:
    return make_caller(engine, "KZ-LEAD", Scope.read, Scope.write, Scope.admin)


def subscribe(client: TestClient, caller: Caller, url: str, **fields: Any) -> dict[str, Any]:
    response = client.post(f"{API}/subscriptions", json={"url": url, **fields}, headers=caller.headers)
    assert response.status_code == 201, response.text
    return response.json()


def events_of(bodies: list[bytes]) -> list[dict[str, Any]]:
    return [json.loads(b) for b in bodies]


def random_id() -> str:
    return str(uuid.uuid4())
