"""A worker trusts a key it looked up for at most auth_cache_seconds."""

import time

import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.auth import service as auth
from app.auth.service import Principal, PrincipalCache
from app.core.config import Settings
from app.main import create_app
from tests.conftest import Caller, run_unit


def test_revocation_is_honoured_within_the_cache_ttl(
    settings: Settings, engine: sa.Engine, lead: Caller
) -> None:
    cached = create_app(Settings(database_url=settings.database_url, auth_cache_seconds=0.5))
    with TestClient(cached) as client:
        assert client.get("/api/v1/cases", headers=lead.headers).status_code == 200
        run_unit(engine, lambda tx: auth.revoke_client(tx, lead.key))
        deadline = time.monotonic() + 5
        status = 200
        while status == 200 and time.monotonic() < deadline:
            status = client.get("/api/v1/cases", headers=lead.headers).status_code
            if status == 200:
                time.sleep(0.05)
        revoked_after = time.monotonic() - (deadline - 5)
        assert status == 401
        assert revoked_after < 1.0


def test_cache_expires_and_is_bounded() -> None:
    import uuid

    cache = PrincipalCache(ttl=0.05, max_entries=2)
    principal = Principal(uuid.uuid4(), uuid.uuid4(), None, frozenset({"read"}))
    cache.put("a", principal)
    assert cache.get("a") is principal
    time.sleep(0.06)
    assert cache.get("a") is None
    for key in ("a", "b", "c"):
        cache.put(key, principal)
    assert cache.get("a") is None and cache.get("c") is principal
    off = PrincipalCache(ttl=0)
    off.put("a", principal)
    assert off.get("a") is None


def test_concurrent_misses_share_one_lookup_and_failures_are_not_cached() -> None:
    import asyncio
    import uuid

    principal = Principal(uuid.uuid4(), uuid.uuid4(), None, frozenset({"read"}))
    calls = 0

    async def fetch() -> Principal:
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.01)
        if calls == 1:
            raise ConnectionError("database down")
        return principal

    async def scenario() -> None:
        cache = PrincipalCache(ttl=10)
        failed = await asyncio.gather(*(cache.load("k", fetch) for _ in range(10)), return_exceptions=True)
        assert calls == 1 and all(isinstance(r, ConnectionError) for r in failed)
        found = await asyncio.gather(*(cache.load("k", fetch) for _ in range(10)))
        assert calls == 2 and all(r is principal for r in found)
        assert await cache.load("k", fetch) is principal and calls == 2  # now cached

    asyncio.run(scenario())
