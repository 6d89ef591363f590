"""GET /metrics: Prometheus text exposition, outside /api/v1 and the OpenAPI document.

Per-route counts, refusals and the journal heads are not for everyone who
reaches the port. With `CASEAPI_METRICS_TOKEN` set, a scrape needs that
bearer token; without it, only a client on this host is answered.
"""

import hmac
import ipaddress
import logging

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client.core import Metric
from sqlalchemy import exc as sa_exc

from app.core.errors import AppError
from app.core.observability.metrics import JournalHeads, read_journal_heads

log = logging.getLogger("caseapi")

router = APIRouter(include_in_schema=False)


def _is_loopback(client: tuple[str, int] | None) -> bool:
    """Whether the ASGI peer is this host. The server sets the peer: uvicorn
    replaces it with X-Forwarded-For only from the proxies it trusts
    (CASEAPI_FORWARDED_ALLOW_IPS), so a client cannot claim to be local."""
    if client is None:
        return False
    try:
        address = ipaddress.ip_address(client[0])
    except ValueError:  # a name, not an address
        return False
    # A dual-stack socket shows an IPv4 peer as ::ffff:a.b.c.d.
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def _check_access(request: Request) -> None:
    token = request.app.state.settings.metrics_token
    if token is None:
        if not _is_loopback(request.scope.get("client")):
            raise AppError(
                403,
                "GET /metrics answers clients on this host only, unless CASEAPI_METRICS_TOKEN is set.",
                slug="forbidden",
            )
        return
    given = request.headers.get("authorization", "")
    expected = f"Bearer {token.get_secret_value()}"
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise AppError(
            401,
            "GET /metrics needs its bearer token.",
            slug="unauthorized",
            headers={"WWW-Authenticate": "Bearer"},
        )


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    _check_access(request)
    state = request.app.state
    heads: JournalHeads | None
    read: list[Metric] = []
    try:
        heads = await read_journal_heads(state.database)
        read = await state.metrics.read_at_scrape(state.database)
    except (sa_exc.OperationalError, sa_exc.TimeoutError) as exc:
        log.warning("metrics_without_database", extra={"error": str(exc).splitlines()[0]})
        heads = None
    return Response(
        state.metrics.exposition(state.database.pool_stats(), heads, read), media_type=CONTENT_TYPE_LATEST
    )
