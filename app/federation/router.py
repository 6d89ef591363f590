"""What an instance shows its peers: who it is (open), and, to a signed
request of a peer only, the agencies it hosts."""

import uuid
from dataclasses import dataclass
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Request, Response
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from app.agencies.models import AgencyPublic
from app.auth.deps import Admin
from app.core.config import ConfigError, Settings
from app.core.deps import DatabaseDep, WriteUnitDep
from app.core.errors import AppError
from app.core.http import StrictJSONRoute, ok, public
from app.core.uow import Row
from app.federation import files, service, signatures
from app.federation import forward as forwarding
from app.federation.identity import Identity, identity
from app.federation.mirror import MalformedDelivery
from app.federation.models import AgencyDirectory, InstanceDocument, PeerList
from app.identifiers import service as identifiers
from app.identifiers.models import HitResults, HitSearch

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


async def _sender(request: Request, db: DatabaseDep, signed: Signed) -> Row:
    """The peer that signed the request (401 otherwise), its signature's nonce
    recorded in a transaction of its own: the route's work opens its own."""
    _identity(request)
    async with db.transaction() as tx:
        return await service.authenticate(tx, signed.method, signed.url, signed.headers, signed.body)


# The peer a request between instances comes from; 404 when this instance does not federate.
Sender = Annotated[Row, Depends(_sender)]


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


@router.post(
    "/deliveries",
    summary="A delivery of mirrored cases from their home (to peers)",
    operation_id="federation.deliveries",
    include_in_schema=False,
)
async def deliveries(request: Request, db: DatabaseDep, signed: Signed, sender: Sender) -> Response:
    """Only for a request signed by a peer: the cases it is the home of, as this instance's agencies may
    hold them, or their withdrawal. Applied whole or not at all (403 beyond the sender's authority, 422
    malformed, 502 when a file its attachments name cannot be fetched from the home); answered with a
    receipt signed by this instance's key.
    """
    me = _identity(request)
    delivery = service.parse_delivery(me, sender, signed.body)
    storage = request.app.state.storage
    staged = []
    if delivery.new_to(sender):
        staged = await files.fetch(
            db, me, sender, storage, delivery.cases, request.app.state.max_attachment_bytes
        )
    try:
        async with db.transaction() as tx:
            receipt = await service.receive(tx, me, sender, delivery)
    except BaseException:
        files.discard(staged)
        raise
    await files.place_all(storage, staged)
    return ok({"receipt": signatures.sign_receipt(me, receipt)})


@router.get(
    "/attachments/{attachment_id}/content",
    summary="The file of an attachment of a mirrored case (to peers)",
    operation_id="federation.attachment_content",
    include_in_schema=False,
)
async def attachment_content(
    request: Request, db: DatabaseDep, sender: Sender, attachment_id: uuid.UUID
) -> Response:
    """Only for a request signed by a peer entitled to the attachment's case (or request): its bytes.
    404 for anything else, exactly as for an attachment that does not exist.
    """
    return await files.serve(db, request.app.state.storage, sender.instance_id, attachment_id)


@router.get(
    "/peers",
    response_model=PeerList,
    summary="The peers and how delivery to each stands",
    operation_id="federation.peers",
)
async def peers(db: DatabaseDep, _: Admin) -> Response:
    """Scope `admin`. Every peer this instance trusts: `last_success_at` (its last acknowledged
    delivery), `last_error` (why the last one failed; null after a success) and `pending` (changes of
    cases it mirrors, or should, that it has not acknowledged yet).
    """
    return ok(PeerList(items=[await service.peer_status(db, peer) for peer in await service.list_peers(db)]))


@router.post(
    "/forward",
    summary="A write a peer's agency made through its mirror (to peers)",
    operation_id="federation.forward",
    include_in_schema=False,
)
async def forward(request: Request, db: DatabaseDep, signed: Signed, sender: Sender) -> Response:
    """Only for a request signed by a peer, for an agency it hosts that takes part in the case (403
    otherwise): the write, answered by this instance's own routes and rules as that agency's.
    """
    envelope = _envelope(signed.body)
    principal = await forwarding.principal_of(db, sender, envelope)
    return await forwarding.answer(request, principal, envelope)


@router.post(
    "/hits",
    response_model=HitResults,
    summary="A peer's federated hit/no-hit search (to peers)",
    operation_id="federation.hits",
    include_in_schema=False,
)
async def hits(request: Request, db: DatabaseDep, signed: Signed, sender: Sender) -> Response:
    """Only for a request signed by a peer, for an agency it hosts (403 otherwise): the search answered
    by this instance's rules for that agency, from the cases this instance is home of.
    """
    envelope = _envelope(signed.body)
    principal = await forwarding.remote_principal(db, sender, envelope)
    try:
        search = HitSearch.model_validate({"items": envelope.get("items")})
    except ValidationError as exc:
        raise RequestValidationError(exc.errors()) from None
    state = request.app.state
    keys = await identifiers.normalized_items(db, principal, search.items, sent_normalized=True)
    async with db.transaction() as tx:
        results = await identifiers.search_hits(
            tx, principal, keys, settings=state.settings, limits=state.hit_limits, own_cases_only=True
        )
    return ok(results)


def _envelope(body: bytes) -> dict[str, Any]:
    try:
        envelope = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise MalformedDelivery("not JSON") from None
    if not isinstance(envelope, dict):
        raise MalformedDelivery("not an object")
    return envelope
