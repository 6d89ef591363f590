"""Request authentication: bearer key -> Principal, and scope checks.

Refusals (401/403) are written to the security log by the error handler.
Both dependencies run on the event loop; only a key missing from the
worker's short-lived cache costs a database round trip, on a connection of
its own, so that the route's connection is taken and given back in the
route's own worker thread.
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.models import Scope
from app.auth.service import Principal, hash_key, principal_for
from app.errors import AppError

_bearer = HTTPBearer(auto_error=False, description="An API key from `caseapi client create`")


def _unauthorized(detail: str) -> AppError:
    return AppError(401, detail, slug="unauthorized", headers={"WWW-Authenticate": "Bearer"})


def _lookup(request: Request, key_hash: str) -> Principal | None:
    with request.app.state.read_engine.connect() as conn:
        return principal_for(conn, key_hash)


async def current_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None:
        raise _unauthorized("An API key is required: Authorization: Bearer <key>.")
    key_hash = hash_key(credentials.credentials)
    cache = request.app.state.principals
    principal = cache.get(key_hash)
    if principal is None:
        principal = await run_in_threadpool(_lookup, request, key_hash)
        if principal is None:
            raise _unauthorized("The API key is unknown or revoked.")
        cache.put(key_hash, principal)
    request.state.principal = principal
    return principal


def require_scope(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    async def dependency(principal: Annotated[Principal, Depends(current_principal)]) -> Principal:
        if not principal.has(scope):
            raise AppError(403, f"This action needs the '{scope.value}' scope.", slug="forbidden")
        return principal

    return dependency


Reader = Annotated[Principal, Depends(require_scope(Scope.read))]
Writer = Annotated[Principal, Depends(require_scope(Scope.write))]
Admin = Annotated[Principal, Depends(require_scope(Scope.admin))]
