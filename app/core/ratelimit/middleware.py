"""The rate limit, before anything else reads the request (pure ASGI).

Keyed per API client by a hash of its bearer key, so no database lookup
comes before the limit and a flood of one key (known or not) is refused
as cheaply as possible. A request without a bearer key is keyed by its
address: it can only get a 401. Health probes, docs and metrics are not
under /api/ or are exempt.

Every limited answer, success or 429, tells the client where it stands
(the IETF RateLimit header fields, draft-ietf-httpapi-ratelimit-headers):
`RateLimit-Policy: "default";q=<requests>;w=<seconds>` and
`RateLimit: "default";r=<requests left now>;t=<seconds until all are back>`.
A 429 also carries Retry-After, the seconds until the next request is let through.
"""

import hashlib
import math

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.errors import problem_response
from app.core.observability.metrics import Metrics
from app.core.ratelimit.rate import retry_after
from app.core.ratelimit.service import Limiter, Quota

EXEMPT = frozenset({"/api/v1/health", "/api/v1/health/ready"})
POLICY = "default"  # the one policy's name, as both fields give it


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


def _quota_field(quota: Quota) -> str:
    return f'"{POLICY}";r={quota.remaining};t={math.ceil(quota.reset)}'


class RateLimit:
    def __init__(self, app: ASGIApp, limiter: Limiter, metrics: Metrics, prefix: str = "/api/") -> None:
        self.app = app
        self.limiter = limiter
        self.metrics = metrics
        self.prefix = prefix
        rate = limiter.rate
        self.policy = f'"{POLICY}";q={rate.requests};w={math.ceil(rate.period)}'
        self.policy_header = (b"ratelimit-policy", self.policy.encode("ascii"))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix) or scope["path"] in EXEMPT:
            await self.app(scope, receive, send)
            return
        quota = await self.limiter.acquire(client_key(scope))
        state = _quota_field(quota)
        if quota.wait <= 0:
            headers = (self.policy_header, (b"ratelimit", state.encode("ascii")))

            async def send_with_quota(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", ()), *headers]
                await send(message)

            await self.app(scope, receive, send_with_quota)
            return
        self.metrics.rate_limited.inc()
        seconds = retry_after(quota.wait)
        response = problem_response(
            429,
            f"Too many requests from this API client; retry after {seconds} s.",
            slug="rate-limited",
            headers={"Retry-After": str(seconds), "RateLimit-Policy": self.policy, "RateLimit": state},
        )
        await response(scope, receive, send)
