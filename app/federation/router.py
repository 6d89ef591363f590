"""What an instance shows its peers: who it is (open), and, to a signed
request of a peer only, the agencies it hosts."""

from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from app.agencies.models import AgencyPublic
from app.core.config import ConfigError, Settings
from app.core.deps import WriteUnitDep
from app.core.errors import AppError
from app.core.http import StrictJSONRoute, ok, public
from app.federation import service
from app.federation.identity import Identity, identity
from app.federation.models import AgencyDirectory, InstanceDocument

router = APIRouter(prefix="/federation", tags=["federation"], route_class=StrictJSONRoute)


def _identity(request: Request) -> Identity:
    settings: Settings = request.app.state.settings
    try:
        return identity(settings)
    except ConfigError:
        raise AppError(404, "This instance does not federate.", slug="not-found") from None


@dataclass(frozen=True)
class SignedRequest:
    method: str
    url: str
    headers: list[tuple[str, str]]
    body: bytes


async def _signed_request(request: Request) -> SignedRequest:
    """The parts of the request its signature covers."""
    return SignedRequest(
        method=request.method,
        url=str(request.url),
        headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw],
        body=await request.body(),
    )


Signed = Annotated[SignedRequest, Depends(_signed_request)]


@router.get(
    "/instance",
    response_model=InstanceDocument,
    summary="This instance's identity",
    operation_id="federation.instance",
)
def instance(request: Request) -> InstanceDocument:
    """No API key needed. The instance id and its Ed25519 public key: an operator compares the thumbprint
    (`caseapi instance show` on this host) before adding this instance as a peer. 404 when the instance
    does not federate (`CASEAPI_INSTANCE_ID` unset).
    """
    me = _identity(request)
    return InstanceDocument(instance_id=me.instance_id, public_key=me.jwk, thumbprint=me.thumbprint)


@router.get(
    "/agencies",
    response_model=AgencyDirectory,
    summary="The agencies this instance hosts (to peers)",
    operation_id="federation.agencies",
    # Between instances only: agency tools and their clients never call it.
    include_in_schema=False,
)
async def agencies(request: Request, tx: WriteUnitDep, signed: Signed) -> Response:
    """Only for a request signed by a peer (RFC 9421, `ed25519`): 401 otherwise, and the refusal is a
    security event. The agencies whose home is this instance, with their ids and codes.
    """
    me = _identity(request)
    # A transaction even for this read: the signature's nonce is recorded against replays.
    await service.authenticate(tx, signed.method, signed.url, signed.headers, signed.body)
    rows = await service.local_agencies(tx)
    return ok(AgencyDirectory(instance_id=me.instance_id, items=[public(AgencyPublic, row) for row in rows]))
