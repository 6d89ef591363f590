"""Peers: adding one after checking its key's thumbprint, and authenticating
the signed requests peers send."""

import uuid
from collections.abc import Iterable
from typing import Any

import httpx
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from app.agencies.models import Agency, AgencyPublic
from app.crud import add_recorded_sync, update_recorded_sync
from app.db import utcnow
from app.errors import AppError
from app.federation import signatures
from app.federation.identity import Identity, key_of
from app.federation.models import AgencyDirectory, InstanceDocument, Peer, PeerNonce
from app.journal import CLI

INSTANCE_PATH = "/api/v1/federation/instance"
# How long fetching a peer's document may take, all told.
FETCH_TIMEOUT = httpx.Timeout(10.0)
# A nonce is kept while a signature carrying it could still be accepted.
NONCE_KEPT = 2 * signatures.CLOCK_SKEW


class PeerError(Exception):
    """Why a peer could not be added, in one line for the operator."""


def fetch_document(url: str, *, transport: httpx.BaseTransport | None = None) -> InstanceDocument:
    """The instance document a peer serves at `url` (its base URL)."""
    try:
        with httpx.Client(timeout=FETCH_TIMEOUT, transport=transport, follow_redirects=False) as http:
            response = http.get(url.rstrip("/") + INSTANCE_PATH)
    except httpx.HTTPError as exc:
        raise PeerError(f"cannot reach {url}: {type(exc).__name__}") from None
    if response.status_code != 200:
        raise PeerError(
            f"{url} answered {response.status_code} for its instance document: is it a federating caseapi?"
        )
    try:
        return InstanceDocument.model_validate_json(response.content)
    except ValidationError:
        raise PeerError(f"{url} sent no valid instance document") from None


def add_peer(
    session: Session, me: Identity, url: str, expected_thumbprint: str, document: InstanceDocument
) -> Peer:
    """Trust the instance at `url` whose document the operator confirmed by
    its thumbprint. The thumbprint is computed here from the key it sent, never
    taken from the document's own claim."""
    try:
        _, actual = key_of(document.public_key)
    except ValueError:
        raise PeerError(f"{url} sent a key that is not a public Ed25519 JWK") from None
    if actual != expected_thumbprint.strip():
        raise PeerError(
            f"thumbprint mismatch: {url} presents key {actual}, not {expected_thumbprint.strip()}"
        )
    if document.instance_id == me.instance_id:
        raise PeerError(f"{url} is this instance ({me.instance_id})")
    peer = session.get(Peer, document.instance_id, with_for_update=True)
    if peer is not None and peer.thumbprint != actual:
        raise PeerError(
            f"peer {document.instance_id} is known with another key ({peer.thumbprint}): remove it first"
        )
    if peer is None:
        peer = Peer(
            instance_id=document.instance_id, url=url, public_key=document.public_key, thumbprint=actual
        )
        session.add(peer)
    peer.url = url.rstrip("/")
    session.flush()
    return peer


def list_peers(session: Session) -> list[Peer]:
    return list(session.scalars(sa.select(Peer).order_by(Peer.instance_id)))


def remove_peer(session: Session, instance_id: str) -> None:
    peer = session.get(Peer, instance_id)
    if peer is None:
        raise PeerError(f"no peer {instance_id}")
    session.delete(peer)
    session.flush()


def authenticate(
    session: Session, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes
) -> Peer:
    """The peer that signed this request, once; else 401, logged as a security event.

    The nonce is recorded in the request's transaction: of two workers
    receiving the same signed request, one commits it and the other fails.
    """
    peers = {peer.instance_id: peer for peer in list_peers(session)}
    keys = {instance_id: key_of(peer.public_key)[0] for instance_id, peer in peers.items()}
    try:
        signed = signatures.verify(method, url, headers, body, keys)
        _record_nonce(session, signed)
    except signatures.BadSignature as exc:
        # Logged as a security event by the error handler, with the reason.
        raise AppError(
            401,
            f"The request is not signed by a known peer: {exc}.",
            slug="bad-signature",
            headers={"WWW-Authenticate": 'Signature tag="caseapi-federation"'},
        ) from None
    return peers[signed.instance_id]


def _record_nonce(session: Session, signed: signatures.Signed) -> None:
    now = utcnow()
    session.execute(sa.delete(PeerNonce).where(col(PeerNonce.created_at) < now - NONCE_KEPT))
    try:
        with session.begin_nested():
            session.add(PeerNonce(instance_id=signed.instance_id, nonce=signed.nonce, created_at=now))
    except IntegrityError:
        raise signatures.BadSignature("replayed: this signature was used before") from None


def local_agencies(session: Session) -> list[Agency]:
    """The agencies this instance hosts, as it announces them to its peers."""
    return list(
        session.scalars(sa.select(Agency).where(col(Agency.home_instance).is_(None)).order_by(Agency.code))
    )


AGENCIES_PATH = "/api/v1/federation/agencies"


def fetch_agencies(
    me: Identity, peer: Peer, *, transport: httpx.BaseTransport | None = None
) -> AgencyDirectory | None:
    """The agencies `peer` hosts, asked by a signed request; None while the
    peer does not trust this instance yet (it answers 401)."""
    url = peer.url + AGENCIES_PATH
    try:
        with httpx.Client(timeout=FETCH_TIMEOUT, transport=transport, follow_redirects=False) as http:
            response = http.get(url, headers=signatures.sign(me, "GET", url, b""))
    except httpx.HTTPError as exc:
        raise PeerError(f"cannot reach {peer.url}: {type(exc).__name__}") from None
    if response.status_code == 401:
        return None
    if response.status_code != 200:
        raise PeerError(f"{peer.url} answered {response.status_code} for its agencies")
    try:
        directory = AgencyDirectory.model_validate_json(response.content)
    except ValidationError:
        raise PeerError(f"{peer.url} sent no valid list of agencies") from None
    if directory.instance_id != peer.instance_id:
        raise PeerError(f"{peer.url} answered as {directory.instance_id}, not {peer.instance_id}")
    return directory


def sync_agencies(session: Session, peer: Peer, directory: AgencyDirectory) -> int:
    """Hold the agencies `peer` hosts, with their ids and codes, as read-only
    records whose home is the peer. An id or a code that is this instance's,
    or another peer's, is refused whole: a peer never takes over an agency.
    Returns how many records were added or changed (each is audited)."""
    announced = {agency.id: agency for agency in directory.items}
    ids, codes = set(announced), {agency.code for agency in directory.items}
    for taken in session.scalars(
        sa.select(Agency).where(sa.or_(col(Agency.id).in_(ids), col(Agency.code).in_(codes)))
    ):
        if taken.home_instance != peer.instance_id:
            home = taken.home_instance or "this instance"
            raise PeerError(f"peer {peer.instance_id} announces agency {taken.code}, which belongs to {home}")
    changed = 0
    # Parents before their sub-agencies: a parent the peer does not announce stays unknown here.
    for agency in sorted(directory.items, key=lambda a: _depth(a, announced)):
        fields: dict[str, Any] = {
            "code": agency.code,
            "name": agency.name,
            "country": agency.country,
            "kind": agency.kind,
            "parent_id": agency.parent_id if agency.parent_id in announced else None,
        }
        held = session.get(Agency, agency.id, with_for_update=True)
        if held is None:
            held = Agency(id=agency.id, home_instance=peer.instance_id, version=agency.version, **fields)
            add_recorded_sync(session, held, CLI, resource_type="agency", case_id=None)
            changed += 1
        elif update_recorded_sync(session, held, fields, CLI, resource_type="agency", case_id=None):
            changed += 1
        # The home's version and instants: the record is the home's, held here.
        held.version, held.created_at, held.updated_at = agency.version, agency.created_at, agency.updated_at
    session.flush()
    return changed


def _depth(agency: AgencyPublic, announced: dict[uuid.UUID, AgencyPublic]) -> int:
    depth, parent, seen = 0, agency.parent_id, set()
    while parent in announced and parent not in seen:
        seen.add(parent)
        depth += 1
        parent = announced[parent].parent_id
    return depth
