"""Searches are limited in distinct searched items, per API client and per agency (on by default):
enumerating identifiers goes at the limit's pace, not the server's."""

import asyncio
import os
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.auth.models import Scope
from app.core.config import ConfigError, Settings
from app.core.ratelimit.rate import Rate
from app.core.ratelimit.service import Limiter, LocalLimiter, RedisLimiter
from app.main import create_app
from tests.conftest import make_caller
from tests.hits.test_hits import search

REDIS_URL = os.environ.get("CASEAPI_TEST_REDIS_URL")
AppWith = Callable[..., AbstractContextManager[TestClient]]


def addresses(prefix: str, n: int) -> list[tuple[str, str]]:
    return [("ip", f"{prefix}.{k // 256}.{k % 256}") for k in range(n)]


def written(engine: sa.Engine) -> tuple[int, ...]:
    with engine.connect() as conn:
        return tuple(
            conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
            for table in ("hit_search_term", "hit_notice_pending", "audit_entry")
        )


def assert_limited(response: Any) -> None:
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["Retry-After"]) >= 1
    assert response.json()["status"] == 429


def test_distinct_items_count_per_client(app_with: AppWith, engine: sa.Engine) -> None:
    searcher = make_caller(engine, "EU-SEARCH", Scope.read)
    other = make_caller(engine, "EU-OTHER", Scope.read)
    with app_with(hit_rate_limit="1000/hour", hit_agency_rate_limit=None) as client:
        # 1 000 copies of one number, in three spellings: one item.
        copies = [("phone", "+7 701 000 00 01"), ("phone", "87010000001"), ("phone", "+77010000001")] * 333
        assert search(client, searcher, *copies).status_code == 200
        assert search(client, searcher, *addresses("10.0", 999)).status_code == 200
        before = written(engine)
        # Twenty more (the bucket refills one item per 3.6 s while the test runs).
        assert_limited(search(client, searcher, *addresses("10.9", 20)))
        assert written(engine) == before, "a refused search writes nothing"
        # Another client's budget is its own.
        answer = search(client, other, *addresses("10.0", 1000))
        assert answer.status_code == 200, answer.text


def test_an_agency_shares_one_budget_among_its_clients(app_with: AppWith, engine: sa.Engine) -> None:
    first = make_caller(engine, "EU-SEARCH", Scope.read)
    second = make_caller(engine, "EU-SEARCH", Scope.read)
    with app_with(hit_rate_limit="1000/hour", hit_agency_rate_limit="1500/hour") as client:
        assert search(client, first, *addresses("10.0", 1000)).status_code == 200
        assert search(client, second, *addresses("10.1", 500)).status_code == 200
        # The second client has used half its own budget, but the agency's is spent.
        assert_limited(search(client, second, *addresses("10.9", 20)))
        assert (
            search(client, make_caller(engine, "EU-OTHER", Scope.read), ("ip", "10.9.9.9")).status_code == 200
        )


@pytest.mark.skipif(not REDIS_URL, reason="CASEAPI_TEST_REDIS_URL is not set")
def test_workers_share_the_limit_through_redis(app_with: AppWith, engine: sa.Engine) -> None:
    searcher = make_caller(engine, "EU-SEARCH", Scope.read)
    shared = {
        "hit_rate_limit": "1000/hour",
        "redis_url": REDIS_URL,
        "redis_prefix": f"caseapi-test-{uuid.uuid4().hex}:",
    }
    with app_with(**shared) as one, app_with(**shared) as two:
        assert search(one, searcher, *addresses("10.0", 1000)).status_code == 200
        assert_limited(search(two, searcher, *addresses("10.9", 20)))


def test_the_limit_is_on_by_default(client: TestClient, engine: sa.Engine) -> None:
    searcher = make_caller(engine, "EU-SEARCH", Scope.read)
    default = Rate.parse(Settings().hit_rate_limit or "")
    searches = default.requests // 1000
    for n in range(searches):
        assert search(client, searcher, *addresses(f"10.{n}", 1000)).status_code == 200
    assert_limited(search(client, searcher, *addresses("10.255", 100)))


@pytest.mark.parametrize("setting", ["hit_rate_limit", "hit_agency_rate_limit"])
def test_a_limit_below_one_search_is_refused(settings: Settings, setting: str) -> None:
    with pytest.raises(ConfigError, match=f"CASEAPI_{setting.upper()}"):
        create_app(settings.model_copy(update={setting: "999/hour"}))
    with pytest.raises(ValueError, match="N/second"):
        Settings.model_validate({setting: "lots"})


def _limiters() -> list[Any]:
    local = pytest.param(lambda rate: LocalLimiter(rate), id="local")
    redis = pytest.param(
        lambda rate: RedisLimiter(rate, REDIS_URL or "", f"caseapi-test-{uuid.uuid4().hex}:"),
        id="redis",
        marks=pytest.mark.skipif(not REDIS_URL, reason="CASEAPI_TEST_REDIS_URL is not set"),
    )
    return [local, redis]


@pytest.mark.parametrize("make", _limiters())
def test_a_hit_may_cost_several_requests(make: Callable[[Rate], Limiter]) -> None:
    async def scenario() -> None:
        limiter = make(Rate(1000, 3600.0))
        try:
            assert await limiter.hit("a", 600) == 0
            assert await limiter.hit("a", 400) == 0
            wait = await limiter.hit("a", 10)
            assert 30 < wait <= 36.1  # ten items at one every 3.6 s
            assert await limiter.hit("b", 1001) > 0  # more than the burst never passes
            assert await limiter.hit("b", 1) == 0
        finally:
            await limiter.close()

    asyncio.run(scenario())


def test_a_full_burst_passes_at_any_clock_value() -> None:
    """A search of the whole budget on a fresh key passes, whatever the monotonic clock reads."""
    rate = Rate(1000, 3600.0)
    clocks = [1e4 + n * 7919.123457 for n in range(2000)]
    assert all(LocalLimiter(rate).hit_now("k", now, 1000) == 0 for now in clocks)
