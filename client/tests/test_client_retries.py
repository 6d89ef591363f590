"""Retries: 429 and 503 after Retry-After, and a create whose answer was lost,
against a live server behind a transport that misbehaves on purpose."""

import asyncio
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx
import pytest
import sqlalchemy as sa
from caseapi_client import AsyncClient, Client, RateLimited, RetryPolicy, ServiceUnavailable
from caseapi_client._core import retry_after

from tests.conftest import Caller


class Flaky(httpx.BaseTransport):
    """Passes requests to the live server, except those `misbehave` handles
    (it returns an answer of its own, or raises, or returns None to pass)."""

    def __init__(self, misbehave: Callable[[httpx.Request, int], httpx.Response | None]) -> None:
        self.inner = httpx.HTTPTransport()
        self.misbehave = misbehave
        self.sent: list[httpx.Request] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        answer = self.misbehave(request, len(self.sent))
        return answer if answer is not None else self.inner.handle_request(request)


def problem(status: int, **headers: str) -> httpx.Response:
    return httpx.Response(
        status, headers=headers, json={"type": "about:blank", "title": "t", "status": status, "detail": "d"}
    )


def count_cases(engine: sa.Engine, reference: str) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text('SELECT count(*) FROM "case" WHERE reference = :r'), {"r": reference}
        ).scalar_one()


def test_a_429_is_retried_after_retry_after(live_server: str, kz: Caller, engine: sa.Engine) -> None:
    transport = Flaky(lambda _, n: problem(429, **{"Retry-After": "1"}) if n == 1 else None)
    reference = f"KZ-UA-{uuid.uuid4().hex[:8]}"
    with Client(live_server, kz.key, transport=transport) as client:
        started = time.monotonic()
        case = client.cases.create(reference=reference, title="Kyiv")
        waited = time.monotonic() - started
    assert waited >= 1.0  # Retry-After is a floor, not a hint
    assert case.reference == reference and count_cases(engine, reference) == 1
    assert len(transport.sent) == 2
    assert transport.sent[0].headers["idempotency-key"] == transport.sent[1].headers["idempotency-key"]


def test_a_503_without_retry_after_backs_off_and_gives_up(live_server: str, kz: Caller) -> None:
    transport = Flaky(lambda _, n: problem(503))
    policy = RetryPolicy(max_attempts=3, backoff=0.05)
    with (
        Client(live_server, kz.key, transport=transport, retry=policy) as client,
        pytest.raises(ServiceUnavailable),
    ):
        list(client.cases.list())
    assert len(transport.sent) == 3


def test_a_wait_longer_than_max_wait_is_not_waited(live_server: str, kz: Caller) -> None:
    transport = Flaky(lambda _, n: problem(429, **{"Retry-After": "3600"}))
    with Client(live_server, kz.key, transport=transport) as client, pytest.raises(RateLimited) as limited:
        client.cases.get(uuid.uuid4())
    assert len(transport.sent) == 1 and limited.value.headers["retry-after"] == "3600"


def test_a_create_whose_answer_was_lost_is_sent_again_and_creates_once(
    live_server: str, kz: Caller, engine: sa.Engine
) -> None:
    def lose_first_answer(request: httpx.Request, n: int) -> httpx.Response | None:
        if n == 1:
            transport.inner.handle_request(request).read()  # the server acts ...
            raise httpx.ReadError("connection reset", request=request)  # ... the answer is lost
        return None

    transport = Flaky(lose_first_answer)
    reference = f"KZ-UA-{uuid.uuid4().hex[:8]}"
    with Client(live_server, kz.key, transport=transport) as client:
        case = client.cases.create(reference=reference, title="Kyiv")
        again = client.cases.create(reference=f"{reference}-2", title="Kyiv")
    assert case.reference == reference and count_cases(engine, reference) == 1
    keys = [r.headers["idempotency-key"] for r in transport.sent]
    assert keys[0] == keys[1] != keys[2], "each logical create has a key of its own, kept across retries"
    assert again.id != case.id


def test_a_change_whose_answer_was_lost_is_not_sent_again(live_server: str, kz: Caller) -> None:
    with Client(live_server, kz.key) as setup:
        case = setup.cases.create(reference=f"KZ-UA-{uuid.uuid4().hex[:8]}", title="Kyiv")

    def lose_patch(request: httpx.Request, n: int) -> httpx.Response | None:
        if request.method == "PATCH":
            transport.inner.handle_request(request).read()
            raise httpx.ReadError("connection reset", request=request)
        return None

    transport = Flaky(lose_patch)
    with Client(live_server, kz.key, transport=transport) as client, pytest.raises(httpx.ReadError):
        client.cases.update(case, status="active")
    assert [r.method for r in transport.sent] == ["PATCH"]


def test_retry_after_is_read_as_seconds_or_as_a_date() -> None:
    assert retry_after("3") == 3.0
    assert retry_after(
        format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    ) == pytest.approx(30, abs=2)
    assert retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # already past
    assert retry_after("soon") is None
    assert retry_after(None) is None


def test_the_async_client_retries_as_the_sync_one_does(
    live_server: str, kz: Caller, engine: sa.Engine
) -> None:
    sent: list[httpx.Request] = []

    class AsyncFlaky(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.inner = httpx.AsyncHTTPTransport()

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            sent.append(request)
            if len(sent) == 1:
                return problem(503, **{"Retry-After": "1"})
            return await self.inner.handle_async_request(request)

    reference = f"KZ-UA-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        async with AsyncClient(live_server, kz.key, transport=AsyncFlaky()) as client:
            await client.cases.create(reference=reference, title="Kyiv")

    started = time.monotonic()
    asyncio.run(scenario())
    assert time.monotonic() - started >= 1.0
    assert count_cases(engine, reference) == 1
    assert len(sent) == 2 and sent[0].headers["idempotency-key"] == sent[1].headers["idempotency-key"]
