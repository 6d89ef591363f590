"""At most `limit` requests at work at once; the rest wait, then get 503."""

import asyncio

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge
from starlette.routing import Router
from starlette.types import ASGIApp

from app.core.admission import Admission
from app.core.gate import Gate
from app.core.limits import BodyLimits
from app.core.observability.metrics import Metrics


def admitted(app: ASGIApp, admission: Admission) -> Gate:
    """`app` behind the app's one middleware, with `admission`'s slots."""
    return Gate(
        app,
        metrics=Metrics(),
        api_prefix="/api/v1",
        api_routes=[],
        admission=admission,
        body_limits=BodyLimits(max_bytes=1024 * 1024),
        router=Router(),
    )


def _slow_app(started: list[str], release: asyncio.Event):  # type: ignore[no-untyped-def]
    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        started.append(scope["path"])
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


@pytest.mark.anyio
async def test_excess_requests_wait_then_get_503() -> None:
    started: list[str] = []
    release = asyncio.Event()
    registry = CollectorRegistry()
    waiting = Gauge("waiting", "requests waiting", registry=registry)
    limited = admitted(_slow_app(started, release), Admission(limit=2, wait_seconds=0.2, waiting=waiting))
    transport = httpx.ASGITransport(app=limited)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        first = asyncio.create_task(client.get("/api/v1/a"))
        second = asyncio.create_task(client.get("/api/v1/b"))
        await asyncio.sleep(0.05)
        waits = asyncio.create_task(client.get("/api/v1/c"))
        await asyncio.sleep(0.05)
        assert registry.get_sample_value("waiting") == 1  # the metric sees it wait
        third = await waits
        assert third.status_code == 503  # both slots taken for longer than the wait
        assert registry.get_sample_value("waiting") == 0
        assert third.headers["retry-after"] == "1"
        assert third.headers["content-type"] == "application/problem+json"
        assert sorted(started) == ["/api/v1/a", "/api/v1/b"]
        # Outside the API (health, docs) nothing is held back.
        health = asyncio.create_task(client.get("/health"))
        await asyncio.sleep(0.05)
        assert "/health" in started
        release.set()
        assert (await first).status_code == (await second).status_code == (await health).status_code == 200
        # Slots are given back.
        assert (await client.get("/api/v1/d")).status_code == 200


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_slots_go_to_waiters_in_order_and_none_is_lost() -> None:
    waiting = Gauge("waiting", "requests waiting", registry=CollectorRegistry())
    slots = Admission(limit=1, wait_seconds=0.2, waiting=waiting)
    assert slots.enter_now()
    assert not slots.enter_now()  # taken
    order: list[str] = []

    async def wait(name: str) -> bool:
        taken = await slots.enter()
        order.append(name)
        return taken

    first, second = asyncio.create_task(wait("first")), asyncio.create_task(wait("second"))
    await asyncio.sleep(0.01)
    slots.leave()  # to the first waiter, not to a newcomer
    assert not slots.enter_now()
    assert await first and order == ["first"]
    slots.leave()
    assert await second and order == ["first", "second"]
    # A waiter that goes away (its client left) gives back a slot it was just given.
    third = asyncio.create_task(slots.enter())
    await asyncio.sleep(0.01)
    slots.leave()
    third.cancel()
    with pytest.raises(asyncio.CancelledError):
        await third
    assert slots.enter_now()  # the slot came back
    # One that waits in vain leaves the queue: the next slot freed is free again.
    assert not await slots.enter()
    slots.leave()
    assert slots.enter_now()
