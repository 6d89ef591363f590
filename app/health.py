import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app import migrate
from app.errors import problem_response

router = APIRouter(tags=["health"])


@router.get("/health", summary="Is the process up", operation_id="health.live")
def health() -> dict[str, str]:
    """No API key needed. Answers 200 while the process runs."""
    return {"status": "ok"}


@router.get(
    "/health/ready",
    responses={503: {"description": "The database does not answer, or its schema is not the newest"}},
    summary="Is the database reachable and migrated",
    operation_id="health.ready",
)
def ready(request: Request) -> JSONResponse:
    """No API key needed. 200 when the database answers and its schema is at the revision this code
    expects; 503 otherwise."""
    try:
        with request.app.state.engine.connect() as conn:
            try:
                found = conn.execute(migrate.REVISION_QUERY).scalars().all()
            except sa.exc.DBAPIError:
                found = []  # no alembic_version table: never migrated
    except Exception:
        return problem_response(503, "The database does not answer.", slug="database-unavailable")
    if found != [request.app.state.schema_head]:
        return problem_response(
            503,
            "The database schema is not at the newest revision: run `caseapi migrate`.",
            slug="schema-not-migrated",
        )
    return JSONResponse({"status": "ready"})
