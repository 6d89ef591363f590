"""The rate limit of hit/no-hit searches, in searched items, per API client and per agency.

The request limit (app.core.ratelimit.middleware) counts requests; a search of
1 000 items is one request, so enumerating identifiers would go at the speed
of the server. Here each distinct item counts, on the same limiters (in
the worker or in Redis): a client's budget first, then its agency's, shared
by all its clients, so that one agency with many keys is no faster.
"""

from app.auth.service import Principal
from app.core.config import ConfigError, Settings
from app.core.errors import AppError
from app.core.ratelimit.rate import Rate, retry_after
from app.core.ratelimit.service import Limiter, create_limiter
from app.identifiers.models import MAX_HIT_ITEMS


def _limiter(settings: Settings, name: str, setting: str | None) -> Limiter | None:
    if setting is None:
        return None
    rate = Rate.parse(setting)
    if rate.requests < MAX_HIT_ITEMS:
        raise ConfigError(f"CASEAPI_{name.upper()}: at least {MAX_HIT_ITEMS} items, the size of one search")
    return create_limiter(rate, settings.redis_url, f"{settings.redis_prefix}{name}:")


class HitLimits:
    def __init__(self, settings: Settings) -> None:
        self.per_client = _limiter(settings, "hit_rate_limit", settings.hit_rate_limit)
        self.per_agency = _limiter(settings, "hit_agency_rate_limit", settings.hit_agency_rate_limit)

    async def charge(self, p: Principal, items: int) -> None:
        """Count `items` searched by `p`, or 429 with Retry-After."""
        for limiter, key, whose in (
            (self.per_client, str(p.client_id), "this API client"),
            (self.per_agency, str(p.agency_id), "this agency"),
        ):
            if limiter is None:
                continue
            wait = await limiter.hit(key, items)
            if wait > 0:
                seconds = retry_after(wait)
                raise AppError(
                    429,
                    f"Too many identifiers searched by {whose}; retry after {seconds} s.",
                    slug="rate-limited",
                    headers={"Retry-After": str(seconds)},
                )

    async def close(self) -> None:
        for limiter in (self.per_client, self.per_agency):
            if limiter is not None:
                await limiter.close()
