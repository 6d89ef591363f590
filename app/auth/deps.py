"""Request authentication: bearer key -> Principal, and scope checks.

Refusals (401/403) are written to the security log by the error handler.
Both dependencies run on the event loop; only a key missing from the
worker's short-lived cache costs a database round trip, a read on the
unit of work (app.core.uow).
"""

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from app.auth.models import Scope
from app.auth.service import Principal, PrincipalCache, hash_key, read_principal
from app.core.binder import lean_dependency
from app.core.errors import AppError

_bearer = HTTPBearer(auto_error=False, description="An API key from `caseapi client create`")


def _unauthorized(detail: str) -> AppError:
    return AppError(401, detail, slug="unauthorized", headers={"WWW-Authenticate": "Bearer"})


# The scope key under which a federating home answers a write a mirror forwarded
# (app.federation.forward), as the peer's agency: set only in process, never from the network.
FORWARDED_PRINCIPAL = "caseapi.forwarded_principal"


async def _authenticate(request: Request, credentials: HTTPAuthorizationCredentials | None) -> Principal:
    forwarded: Principal | None = request.scope.get(FORWARDED_PRINCIPAL)
    if forwarded is not None:
        request.state.principal = forwarded
        return forwarded
    if credentials is None:
        raise _unauthorized("An API key is required: Authorization: Bearer <key>.")
    key_hash = hash_key(credentials.credentials)
    state = request.app.state
    principals: PrincipalCache = state.principals
    principal = await principals.load(key_hash, lambda: read_principal(state.database, key_hash))
    if principal is None:
        raise _unauthorized("The API key is unknown or revoked.")
    request.state.principal = principal
    return principal


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


async def current_principal(request: Request, credentials: Credentials) -> Principal:
    return await _authenticate(request, credentials)


def require_scope(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    # Authenticates itself rather than depending on current_principal: one
    # level of dependencies fewer on every request.
    async def dependency(request: Request, credentials: Credentials) -> Principal:
        principal = await _authenticate(request, credentials)
        if not principal.has(scope):
            raise AppError(403, f"This action needs the '{scope.value}' scope.", slug="forbidden")
        return principal

    async def lean(request: Request) -> Principal:
        return await dependency(request, await _bearer(request))

    lean_dependency(dependency, lean)
    return dependency


Reader = Annotated[Principal, Depends(require_scope(Scope.read))]
Writer = Annotated[Principal, Depends(require_scope(Scope.write))]
Admin = Annotated[Principal, Depends(require_scope(Scope.admin))]
