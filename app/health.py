import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.core import migrate
from app.core.errors import problem_response
from app.core.uow import Database

router = APIRouter(tags=["health"])

# What the probe asks on every poll (migrate.REVISION_QUERY, its column typed
# for a statement of the unit of work); the ping only when that fails.
_REVISION = migrate.REVISION_QUERY.columns(version_num=sa.String)
_PING = sa.select(sa.literal_column("1", sa.Integer))


@router.get("/health", summary="Is the process up", operation_id="health.live")
def health() -> dict[str, str]:
    """No API key needed. Answers 200 while the process runs."""
    return {"status": "ok"}


async def _revisions(db: Database) -> list[str] | None:
    """The revisions alembic_version records ([] when never migrated), or None
    when the database does not answer.

    On SQLite a missing table and an unusable file are the same kind of
    error: a ping after a failed read tells them apart.
    """
    try:
        return [row.version_num for row in await db.all(_REVISION)]
    except sa.exc.DBAPIError:
        pass
    except Exception:
        return None
    try:
        await db.all(_PING)
    except Exception:
        return None
    return []  # no alembic_version table: never migrated


@router.get(
    "/health/ready",
    responses={503: {"description": "The database does not answer, or its schema is not the newest"}},
    summary="Is the database reachable and migrated",
    operation_id="health.ready",
)
async def ready(request: Request) -> JSONResponse:
    """No API key needed. 200 when the database answers and its schema is at the revision this code
    expects; 503 otherwise."""
    found = await _revisions(request.app.state.database)
    if found is None:
        return problem_response(503, "The database does not answer.", slug="database-unavailable")
    if found != [request.app.state.schema_head]:
        return problem_response(
            503,
            "The database schema is not at the newest revision: run `caseapi migrate`.",
            slug="schema-not-migrated",
        )
    return JSONResponse({"status": "ready"})
