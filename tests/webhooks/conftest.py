import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.auth.models import Scope
from app.config import Settings
from app.db import utcnow
from app.main import create_app
from app.webhooks.delivery import Deliverer
from tests.conftest import Caller, make_caller

API = "/api/v1"


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
    application.state.engine.dispose()


@pytest.fixture
def hooks(private_app: FastAPI) -> Iterator[TestClient]:
    """A client of the app that accepts local receivers."""
    with TestClient(private_app, raise_server_exceptions=False) as test_client:
        yield test_client


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def deliverer(engine: sa.Engine, private_settings: Settings, clock: Clock) -> Deliverer:
    return Deliverer(engine, private_settings, clock=clock)


def deliver(deliverer: Deliverer) -> int:
    return asyncio.run(deliverer.run_once())


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
