"""Request authentication: bearer key -> Principal, and scope checks.

Refusals (401/403) are written to the security log by the error handler.
"""

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.models import Scope
from app.auth.service import Principal, authenticate
from app.db import SessionDep
from app.errors import AppError

_bearer = HTTPBearer(auto_error=False, description="An API key from `caseapi client create`")


def _unauthorized(detail: str) -> AppError:
    return AppError(401, detail, slug="unauthorized", headers={"WWW-Authenticate": "Bearer"})


def current_principal(
    request: Request,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise _unauthorized("An API key is required: Authorization: Bearer <key>.")
    principal = authenticate(session, credentials.credentials)
    if principal is None:
        raise _unauthorized("The API key is unknown or revoked.")
    request.state.principal = principal
    return principal


def require_scope(scope: Scope) -> Callable[..., Principal]:
    def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.has(scope):
            raise AppError(403, f"This action needs the '{scope.value}' scope.", slug="forbidden")
        return principal

    return dependency


Reader = Annotated[Principal, Depends(require_scope(Scope.read))]
Writer = Annotated[Principal, Depends(require_scope(Scope.write))]
Admin = Annotated[Principal, Depends(require_scope(Scope.admin))]
