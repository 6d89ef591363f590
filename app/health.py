import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.errors import problem_response

router = APIRouter(tags=["health"])


@router.get("/health", summary="Is the process up", operation_id="health.live")
def health() -> dict[str, str]:
    """No API key needed. Answers 200 while the process runs."""
    return {"status": "ok"}


@router.get(
    "/health/ready",
    responses={503: {"description": "The database does not answer"}},
    summary="Is the database reachable",
    operation_id="health.ready",
)
def ready(request: Request) -> JSONResponse:
    """No API key needed. 200 when the database answers, 503 when it does not."""
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception:
        return problem_response(503, "The database does not answer.", slug="database-unavailable")
    return JSONResponse({"status": "ready"})
