"""A file transfer lasts as long as the client's link: it takes no admission
slot (app.core.admission) from the API's other requests."""

import asyncio

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge

from app.attachments.router import ATTACHMENT_TRANSFERS
from app.core.admission import Admission
from tests.test_admission import admitted


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.mark.anyio
async def test_slow_transfers_do_not_hold_the_api_back() -> None:
    release = asyncio.Event()
    started: list[str] = []

    async def slow(scope, receive, send):  # type: ignore[no-untyped-def]
        started.append(f"{scope['method']} {scope['path']}")
        if scope["path"] != "/api/v1/cases":
            await release.wait()  # a client on a slow link
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    waiting = Gauge("waiting", "requests waiting", registry=CollectorRegistry())
    admission = Admission(limit=1, wait_seconds=0.2, waiting=waiting, exempt=ATTACHMENT_TRANSFERS)
    limited = admitted(slow, admission)
    transport = httpx.ASGITransport(app=limited)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        transfers = [
            asyncio.create_task(client.get("/api/v1/attachments/a1/content")),
            asyncio.create_task(client.post("/api/v1/cases/c1/attachments", content=b"x")),
            asyncio.create_task(client.post("/api/v1/requests/r1/messages/m1/attachments", content=b"x")),
        ]
        await asyncio.sleep(0.05)
        assert len(started) == 3
        assert (await client.get("/api/v1/cases")).status_code == 200, "a transfer took the only slot"
        # Other requests on those paths are admitted as usual: the list takes the slot and holds it.
        held = asyncio.create_task(client.get("/api/v1/cases/c1/attachments"))
        await asyncio.sleep(0.05)
        assert (await client.get("/api/v1/cases")).status_code == 503
        release.set()
        assert [(await t).status_code for t in [*transfers, held]] == [200] * 4
