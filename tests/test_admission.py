"""At most `limit` requests at work at once; the rest wait, then get 503."""

import asyncio

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge

from app.core.admission import AdmissionLimit


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
    limited = AdmissionLimit(_slow_app(started, release), limit=2, wait_seconds=0.2, waiting=waiting)
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
