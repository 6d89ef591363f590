"""The rate limit, before anything else reads the request (pure ASGI).

Keyed per API client by a hash of its bearer key, so no database lookup
comes before the limit and a flood of one key (known or not) is refused
as cheaply as possible. A request without a bearer key is keyed by its
address: it can only get a 401. Health probes, docs and metrics are not
under /api/ or are exempt.
"""

import hashlib

from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import problem_response
from app.observability.metrics import Metrics
from app.ratelimit.rate import retry_after
from app.ratelimit.service import Limiter

EXEMPT = frozenset({"/api/v1/health", "/api/v1/health/ready"})


def client_key(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.partition(b" ")
            token = token.strip()
            if scheme.lower() == b"bearer" and token:
                # Not the stored key hash (app.auth): what Redis holds names no key and matches no row.
                return "key:" + hashlib.sha256(b"caseapi-ratelimit:" + token).hexdigest()[:32]
            break
    client = scope.get("client")
    return "addr:" + (client[0] if client else "unknown")


class RateLimit:
    def __init__(self, app: ASGIApp, limiter: Limiter, metrics: Metrics, prefix: str = "/api/") -> None:
        self.app = app
        self.limiter = limiter
        self.metrics = metrics
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix) or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        wait = await self.limiter.hit(client_key(scope))
        if wait <= 0:
            await self.app(scope, receive, send)
            return
        self.metrics.rate_limited.inc()
        seconds = retry_after(wait)
        response = problem_response(
            429,
            f"Too many requests from this API client; retry after {seconds} s.",
            slug="rate-limited",
            headers={"Retry-After": str(seconds)},
        )
        await response(scope, receive, send)
