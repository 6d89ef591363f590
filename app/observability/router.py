"""GET /metrics: Prometheus text exposition, outside /api/v1 and the OpenAPI document."""

import hmac
import logging

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import exc as sa_exc

from app.errors import AppError
from app.observability.metrics import JournalHeads, read_journal_heads

log = logging.getLogger("caseapi")

router = APIRouter(include_in_schema=False)


def _check_token(request: Request) -> None:
    token = request.app.state.settings.metrics_token
    if token is None:
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
    _check_token(request)
    state = request.app.state
    heads: JournalHeads | None
    try:
        heads = await read_journal_heads(state.reads)
    except (sa_exc.OperationalError, sa_exc.TimeoutError) as exc:
        log.warning("metrics_without_database", extra={"error": str(exc).splitlines()[0]})
        heads = None
    return Response(state.metrics.exposition(state.engine.pool, heads), media_type=CONTENT_TYPE_LATEST)
