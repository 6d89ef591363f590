import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from app.errors import problem_response

router = APIRouter(tags=["health"])


@router.get("/health")
def health() -> dict[str, str]:
    """The process answers."""
    return {"status": "ok"}


@router.get("/health/ready", responses={503: {"description": "The database does not answer"}})
def ready(request: Request) -> JSONResponse:
    """The database answers."""
    try:
        with request.app.state.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception:
        return problem_response(503, "The database does not answer.", slug="database-unavailable")
    return JSONResponse({"status": "ready"})
