"""Rate limits: `N/second`, `N/minute`, `N/hour` per API client.

Both limiters implement GCRA (the generic cell rate algorithm, a token
bucket kept as one timestamp per client): a client may send `N` requests
at once, then one every `period / N`. A hit may count as several requests
(`cost`: the items of a search). Each answer (a Quota) says how long to
wait, if at all, how many requests are left and when all are back.

- LocalLimiter keeps the timestamps in the worker's memory: each worker
  limits on its own.
- RedisLimiter keeps them in Redis, updated by one Lua script (atomic, on
  Redis's own clock), so the limit holds across every worker and host.
  When Redis does not answer, it falls back to its worker's LocalLimiter
  for a few seconds and logs it: fairness degrades to per worker, the API
  stays up (fail open). The limit protects capacity, not confidentiality:
  authentication and access rules do not depend on it.
"""

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from app.core.ratelimit.rate import Rate

log = logging.getLogger("caseapi.ratelimit")


@dataclass(frozen=True)
class Quota:
    """One request's answer: `wait` is 0 if it was allowed, else the seconds
    until one would be; `remaining` the requests the client may still send
    at once; `reset` the seconds until its whole burst is back."""

    wait: float
    remaining: int
    reset: float

    @classmethod
    def of(cls, rate: Rate, wait: float, backlog: float) -> "Quota":
        """`backlog`: how far the client's theoretical arrival time lies ahead
        of now, after this request counted (GCRA's whole state)."""
        # The epsilon: interval is a float, and 2.9999999 requests are 3.
        remaining = max(0, math.floor((rate.period - backlog) / rate.interval + 1e-9))
        return cls(wait, remaining, backlog)


class Limiter(Protocol):
    rate: Rate

    async def acquire(self, key: str, cost: int = 1) -> Quota:
        """Count `cost` requests of `key` if the limit allows them."""
        ...

    async def hit(self, key: str, cost: int = 1) -> float:
        """Count `cost` requests of `key`: 0 if allowed, else the seconds to wait."""
        return (await self.acquire(key, cost)).wait

    async def close(self) -> None: ...


class LocalLimiter(Limiter):
    # A client whose timestamp has passed is as good as new: its entry is
    # dropped, so a flood of made-up keys cannot grow memory without bound.
    _SWEEP_EVERY = 10_000

    def __init__(self, rate: Rate) -> None:
        self.rate = rate
        self._tat: dict[str, float] = {}  # key -> theoretical arrival time
        self._since_sweep = 0

    def acquire_now(self, key: str, now: float, cost: int = 1) -> Quota:
        tat = max(self._tat.get(key, now), now)
        # Not interval * cost, and the clock's large values apart: a full burst
        # (cost = N) on a new key must come to a wait of exactly 0.
        increment = self.rate.period * cost / self.rate.requests
        wait = (tat - now) - (self.rate.period - increment)
        if wait > 0:
            return Quota.of(self.rate, wait, tat - now)
        self._tat[key] = tat + increment
        self._since_sweep += 1
        if self._since_sweep >= self._SWEEP_EVERY:
            self._since_sweep = 0
            self._tat = {k: t for k, t in self._tat.items() if t > now}
        return Quota.of(self.rate, 0.0, tat + increment - now)

    def hit_now(self, key: str, now: float, cost: int = 1) -> float:
        return self.acquire_now(key, now, cost).wait

    async def acquire(self, key: str, cost: int = 1) -> Quota:
        return self.acquire_now(key, time.monotonic(), cost)

    async def close(self) -> None:
        return None


# KEYS[1]: the client's key. ARGV: interval and period in microseconds, and the cost.
# Returns {the microseconds to wait (0: allowed), the backlog in microseconds}.
_GCRA = """
local increment = tonumber(ARGV[1]) * tonumber(ARGV[3])
local period = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local wait = tat + increment - period - now
if wait > 0 then return {wait, tat - now} end
local new_tat = tat + increment
-- %.0f: a plain number's string form keeps only 14 digits, a timestamp in microseconds has 16
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return {0, new_tat - now}
"""


class RedisLimiter(Limiter):
    # After a failure Redis is left alone this long: a Redis that is down
    # must not cost every request a timeout.
    RETRY_SECONDS = 5.0
    TIMEOUT_SECONDS = 0.25

    def __init__(self, rate: Rate, url: str, prefix: str) -> None:
        self.rate = rate
        self.url = url
        self.prefix = prefix
        self.fallback = LocalLimiter(rate)
        self._args = (round(rate.interval * 1e6), round(rate.period * 1e6))
        # Connections belong to the event loop that opened them (tests run apps on several).
        self._scripts: dict[asyncio.AbstractEventLoop, AsyncScript] = {}
        self._down_until = 0.0

    def _script(self) -> AsyncScript:
        loop = asyncio.get_running_loop()
        script = self._scripts.get(loop)
        if script is None:
            client = aioredis.Redis.from_url(
                self.url, socket_timeout=self.TIMEOUT_SECONDS, socket_connect_timeout=self.TIMEOUT_SECONDS
            )
            # EVALSHA: the script is sent once, then named by its hash.
            script = self._scripts[loop] = client.register_script(_GCRA)
        return script

    async def acquire(self, key: str, cost: int = 1) -> Quota:
        now = time.monotonic()
        if now >= self._down_until:
            try:
                wait, backlog = await self._script()(keys=[self.prefix + key], args=[*self._args, cost])
                return Quota.of(self.rate, int(wait) / 1e6, int(backlog) / 1e6)
            except (RedisError, OSError) as exc:
                self._down_until = now + self.RETRY_SECONDS
                log.warning(
                    "redis_unavailable",
                    extra={"error": str(exc), "fallback": "per-worker limit", "retry_in": self.RETRY_SECONDS},
                )
        return self.fallback.acquire_now(key, now, cost)

    async def close(self) -> None:
        script = self._scripts.pop(asyncio.get_running_loop(), None)
        if script is not None:
            await script.registered_client.aclose()


def create_limiter(rate: Rate, redis_url: str | None, prefix: str) -> Limiter:
    if redis_url:
        return RedisLimiter(rate, redis_url, prefix)
    return LocalLimiter(rate)
