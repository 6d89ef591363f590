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
from fastapi.security.utils import get_authorization_scheme_param

from app.auth.models import Scope
from app.auth.service import Principal, PrincipalCache, hash_key, read_principal
from app.core.binder import lean_dependency
from app.core.errors import AppError

_bearer = HTTPBearer(auto_error=False, description="An API key from `caseapi client create`")


def _unauthorized(detail: str) -> AppError:
    return AppError(401, detail, slug="unauthorized", headers={"WWW-Authenticate": "Bearer"})


def _bearer_key(request: Request) -> str | None:
    """The key of `Authorization: Bearer <key>`, as _bearer reads it, without its model."""
    authorization = request.headers.get("Authorization")
    scheme, key = get_authorization_scheme_param(authorization)
    if not (authorization and scheme and key) or scheme.lower() != "bearer":
        return None
    return key


# The scope key under which a federating home answers a write a mirror forwarded
# (app.federation.forward), as the peer's agency: set only in process, never from the network.
FORWARDED_PRINCIPAL = "caseapi.forwarded_principal"


async def _authenticate(request: Request, key: str | None) -> Principal:
    forwarded: Principal | None = request.scope.get(FORWARDED_PRINCIPAL)
    if forwarded is not None:
        request.state.principal = forwarded
        return forwarded
    if key is None:
        raise _unauthorized("An API key is required: Authorization: Bearer <key>.")
    key_hash = hash_key(key)
    state = request.app.state
    principals: PrincipalCache = state.principals
    principal = await principals.load(key_hash, lambda: read_principal(state.database, key_hash))
    if principal is None:
        raise _unauthorized("The API key is unknown or revoked.")
    request.state.principal = principal
    return principal


Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def _key(credentials: HTTPAuthorizationCredentials | None) -> str | None:
    return None if credentials is None else credentials.credentials


async def current_principal(request: Request, credentials: Credentials) -> Principal:
    return await _authenticate(request, _key(credentials))


def require_scope(scope: Scope) -> Callable[..., Awaitable[Principal]]:
    # Authenticates itself rather than depending on current_principal: one
    # level of dependencies fewer on every request.
    async def authorized(request: Request, key: str | None) -> Principal:
        principal = await _authenticate(request, key)
        if not principal.has(scope):
            raise AppError(403, f"This action needs the '{scope.value}' scope.", slug="forbidden")
        return principal

    async def dependency(request: Request, credentials: Credentials) -> Principal:
        return await authorized(request, _key(credentials))

    async def lean(request: Request) -> Principal:
        return await authorized(request, _bearer_key(request))

    lean_dependency(dependency, lean)
    return dependency


Reader = Annotated[Principal, Depends(require_scope(Scope.read))]
Writer = Annotated[Principal, Depends(require_scope(Scope.write))]
Admin = Annotated[Principal, Depends(require_scope(Scope.admin))]
