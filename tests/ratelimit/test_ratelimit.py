"""CASEAPI_RATE_LIMIT (contract §6): per API client, 429 with Retry-After, in the
worker or shared through Redis (CASEAPI_TEST_REDIS_URL; skipped when unset)."""

import asyncio
import logging
import os
import re
import socket
import uuid

import pytest
import sqlalchemy as sa
from pydantic import SecretStr

from app.auth.models import Scope
from app.core.ratelimit.rate import Rate, retry_after
from app.core.ratelimit.service import LocalLimiter, RedisLimiter
from tests.conftest import Caller, make_caller

API = "/api/v1"
REDIS_URL = os.environ.get("CASEAPI_TEST_REDIS_URL")
needs_redis = pytest.mark.skipif(not REDIS_URL, reason="CASEAPI_TEST_REDIS_URL is not set")


def _prefix() -> str:
    # Unique per test and run: parallel runs on one Redis never share a key.
    return f"caseapi-test:{uuid.uuid4().hex}:"


@pytest.mark.parametrize(
    ("text", "rate"),
    [("20/second", Rate(20, 1.0)), ("600/minute", Rate(600, 60.0)), (" 5 / hour ", Rate(5, 3600.0))],
)
def test_rates_parse(text: str, rate: Rate) -> None:
    assert Rate.parse(text) == rate


@pytest.mark.parametrize("text", ["", "20", "0/second", "-1/second", "20/day", "20/sec", "x/second"])
def test_bad_rates_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="N/second"):
        Rate.parse(text)


def test_the_bucket_allows_a_burst_then_one_request_per_interval() -> None:
    limiter = LocalLimiter(Rate(4, 1.0))
    assert [limiter.hit_now("a", 100.0) for _ in range(4)] == [0.0] * 4
    assert limiter.hit_now("a", 100.0) == pytest.approx(0.25)
    assert limiter.hit_now("b", 100.0) == 0.0  # another client, another bucket
    assert limiter.hit_now("a", 100.2) == pytest.approx(0.05)
    assert limiter.hit_now("a", 100.25) == 0.0
    assert limiter.hit_now("a", 100.25) > 0
    # After a full period of silence the whole burst is back.
    assert [limiter.hit_now("a", 102.0) for _ in range(4)] == [0.0] * 4


def test_each_answer_says_what_is_left_of_the_burst_and_when_it_is_whole_again() -> None:
    limiter = LocalLimiter(Rate(4, 1.0))
    quotas = [limiter.acquire_now("a", 100.0) for _ in range(5)]
    assert [(q.wait, q.remaining) for q in quotas[:4]] == [(0.0, 3), (0.0, 2), (0.0, 1), (0.0, 0)]
    assert [q.reset for q in quotas[:4]] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    refused = quotas[4]
    assert (refused.wait, refused.remaining, refused.reset) == pytest.approx((0.25, 0, 1.0))
    # Half a period later, two of the four are back.
    half = limiter.acquire_now("a", 100.5)
    assert (half.wait, half.remaining, half.reset) == pytest.approx((0.0, 1, 0.75))
    # 3 per second: an interval of 1/3 s, still three whole requests.
    assert LocalLimiter(Rate(3, 1.0)).acquire_now("b", 0.0).remaining == 2


def test_forgotten_clients_do_not_pile_up_in_memory() -> None:
    limiter = LocalLimiter(Rate(1, 1.0))
    for n in range(LocalLimiter._SWEEP_EVERY - 1):
        limiter.hit_now(f"made-up-{n}", 0.0)
    limiter.hit_now("late", 5.0)  # the sweep: every earlier key has expired
    assert list(limiter._tat) == ["late"]


@pytest.mark.parametrize(("wait", "seconds"), [(0.001, 1), (0.999, 1), (1.0, 1), (1.01, 2), (59.5, 60)])
def test_retry_after_is_a_whole_number_of_seconds_at_least_one(wait: float, seconds: int) -> None:
    assert retry_after(wait) == seconds


def _quota(response, policy: str) -> tuple[int, int]:  # type: ignore[no-untyped-def]
    """The RateLimit field's r and t, after checking the policy the answer names."""
    assert response.headers["ratelimit-policy"] == policy
    match = re.fullmatch(r'"default";r=(\d+);t=(\d+)', response.headers["ratelimit"])
    assert match, response.headers["ratelimit"]
    return int(match[1]), int(match[2])


def _assert_429(response, retry: range, policy: str = '"default";q=3;w=60') -> None:  # type: ignore[no-untyped-def]
    assert response.status_code == 429, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert int(response.headers["retry-after"]) in retry
    remaining, reset = _quota(response, policy)
    assert remaining == 0 and reset >= int(response.headers["retry-after"])
    body = response.json()
    assert body["status"] == 429 and body["title"] == "Too Many Requests"
    assert body["type"] == "urn:caseapi:problem:rate-limited"
    assert body["request_id"] == response.headers["x-request-id"]


def test_a_client_past_its_limit_gets_429_and_others_do_not(
    app_with, engine: sa.Engine, lead: Caller
) -> None:  # type: ignore[no-untyped-def]
    other = make_caller(engine, "UA-OTHER", Scope.read)
    scrape = {"Authorization": "Bearer scrape-secret-0123456789"}
    with app_with(rate_limit="3/minute", metrics_token=SecretStr("scrape-secret-0123456789")) as client:
        answers = [client.get(f"{API}/cases", headers=lead.headers) for _ in range(3)]
        assert [r.status_code for r in answers] == [200, 200, 200]
        # Each success says how many requests are left and when all three are back (20 s each).
        quotas = [_quota(r, '"default";q=3;w=60') for r in answers]
        assert [r for r, _ in quotas] == [2, 1, 0]
        assert quotas[0][1] == 20 and quotas[1][1] in (39, 40) and quotas[2][1] in range(55, 61)
        # About one interval (20 s), less the time the requests took on a loaded machine.
        _assert_429(client.get(f"{API}/cases", headers=lead.headers), range(10, 21))
        # The same key written differently is the same client.
        _assert_429(
            client.get(f"{API}/cases", headers={"Authorization": f"bearer   {lead.key}"}), range(1, 21)
        )
        # The hostile flood of one agency leaves another's requests alone.
        assert _quota(client.get(f"{API}/cases", headers=other.headers), '"default";q=3;w=60') == (2, 20)
        # Probes, docs and metrics are never limited (and say nothing of a limit).
        for path in (
            "/health",
            "/health/ready",
            f"{API}/health",
            f"{API}/health/ready",
            "/docs",
            "/openapi.json",
        ):
            probe = client.get(path, headers=lead.headers)
            assert probe.status_code == 200 and "ratelimit" not in probe.headers, path
        scraped = client.get("/metrics", headers=scrape)
        assert scraped.status_code == 200
    assert "caseapi_rate_limited_total 2.0" in scraped.text
    assert 'route="unmatched",status="429"' in scraped.text


def test_an_unknown_key_cannot_flood_either(app_with) -> None:  # type: ignore[no-untyped-def]
    made_up = {"Authorization": "Bearer cak_made_up_by_an_attacker"}
    with app_with(rate_limit="2/minute") as client:
        refused = [client.get(f"{API}/cases", headers=made_up) for _ in range(2)]
        assert [r.status_code for r in refused] == [401, 401]
        # A 401 under the limit counts, and says so, as any answer does.
        assert [_quota(r, '"default";q=2;w=60')[0] for r in refused] == [1, 0]
        _assert_429(client.get(f"{API}/cases", headers=made_up), range(1, 31), '"default";q=2;w=60')
        # Without any key: limited by address, and only ever a 401 below the limit.
        assert [client.get(f"{API}/cases").status_code for _ in range(3)] == [401, 401, 429]


def test_no_limit_unless_configured(client, lead: Caller) -> None:  # type: ignore[no-untyped-def]
    answers = [client.get(f"{API}/cases", headers=lead.headers) for _ in range(30)]
    assert {r.status_code for r in answers} == {200}
    assert not any("ratelimit" in r.headers or "ratelimit-policy" in r.headers for r in answers)


@needs_redis
def test_two_instances_share_one_limit_through_redis(app_with, engine: sa.Engine, lead: Caller) -> None:  # type: ignore[no-untyped-def]
    other = make_caller(engine, "UA-OTHER", Scope.read)
    prefix = _prefix()
    shared = {"rate_limit": "4/minute", "redis_url": REDIS_URL, "redis_prefix": prefix}
    with app_with(**shared) as first, app_with(**shared) as second:
        answers = [(first if n % 2 else second).get(f"{API}/cases", headers=lead.headers) for n in range(6)]
        assert [r.status_code for r in answers] == [200, 200, 200, 200, 429, 429]
        # The count the headers give is the shared one, whichever instance answers.
        policy = '"default";q=4;w=60'
        assert [_quota(r, policy)[0] for r in answers] == [3, 2, 1, 0, 0, 0]
        assert [_quota(r, policy)[1] for r in answers[:4]] == [15, 30, 45, 60]
        _assert_429(first.get(f"{API}/cases", headers=lead.headers), range(5, 16), policy)
        assert second.get(f"{API}/cases", headers=other.headers).status_code == 200
    import redis

    keys = redis.Redis.from_url(REDIS_URL).keys(prefix + "*")
    assert len(keys) == 2  # one per client, named by a hash: no key reaches Redis
    assert not any(lead.key.encode() in k or other.key.encode() in k for k in keys)
    redis.Redis.from_url(REDIS_URL).delete(*keys)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_redis_down_falls_back_to_the_worker_limit_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    limiter = RedisLimiter(Rate(2, 60.0), f"redis://127.0.0.1:{_closed_port()}/0", _prefix())

    async def hits() -> list[float]:
        try:
            return [await limiter.hit("client") for _ in range(3)]
        finally:
            await limiter.close()

    with caplog.at_level(logging.WARNING, logger="caseapi.ratelimit"):
        waits = asyncio.run(hits())
    assert waits[:2] == [0.0, 0.0] and waits[2] > 0  # still limited, per worker
    [record] = [r for r in caplog.records if r.getMessage() == "redis_unavailable"]
    assert record.__dict__["fallback"] == "per-worker limit"  # one line, not one per request


@needs_redis
def test_the_redis_limiter_counts_on_redis_time() -> None:
    limiter = RedisLimiter(Rate(3, 1.0), REDIS_URL or "", _prefix())

    async def run() -> list[float]:
        try:
            burst = [await limiter.hit("c") for _ in range(4)]
            await asyncio.sleep(burst[-1] + 0.02)
            return [*burst, await limiter.hit("c")]
        finally:
            await limiter.close()

    waits = asyncio.run(run())
    assert waits[:3] == [0.0, 0.0, 0.0]
    assert 0 < waits[3] <= 1 / 3 + 0.01
    assert waits[4] == 0.0  # allowed again once the interval has passed
