"""Peers: adding one after checking its key's thumbprint, and authenticating
the signed requests peers send."""

import functools
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import sqlalchemy as sa
from pydantic import ValidationError
from sqlalchemy.exc import IntegrityError

from app.agencies.models import Agency, AgencyPublic
from app.core.crud import insert_recorded, row_type
from app.core.db import new_row, table_of, utcnow
from app.core.errors import AppError
from app.core.journal import CLI, Change, record
from app.core.uow import Row, Statements, Tx, one_of_params
from app.federation import answers, mirror, signatures
from app.federation.delivery import content_digest, pending
from app.federation.identity import Identity, key_of
from app.federation.models import AgencyDirectory, InstanceDocument, Peer, PeerNonce, PeerStatus

INSTANCE_PATH = "/api/v1/federation/instance"
AGENCIES_PATH = "/api/v1/federation/agencies"
# How long fetching a peer's document may take, all told.
FETCH_TIMEOUT = httpx.Timeout(10.0)
# A nonce is kept while a signature carrying it could still be accepted.
NONCE_KEPT = 2 * signatures.CLOCK_SKEW

PEERS = table_of(Peer)
NONCES = table_of(PeerNonce)
AGENCIES = table_of(Agency)


class PeerError(Exception):
    """Why a peer could not be added, in one line for the operator."""


async def fetch_document(url: str, *, transport: httpx.AsyncBaseTransport | None = None) -> InstanceDocument:
    """The instance document a peer serves at `url` (its base URL)."""
    try:
        async with httpx.AsyncClient(
            timeout=FETCH_TIMEOUT, transport=transport, follow_redirects=False
        ) as http:
            response = await http.get(url.rstrip("/") + INSTANCE_PATH)
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


_PEER_FOR_UPDATE = (
    sa.select(PEERS).where(PEERS.c.instance_id == sa.bindparam("instance_id")).with_for_update()
)
_SET_PEER_URL = (
    sa.update(PEERS)
    .where(PEERS.c.instance_id == sa.bindparam("peer_id"))
    .values(url=sa.bindparam("url", type_=PEERS.c.url.type))
)


async def add_peer(
    tx: Tx, me: Identity, url: str, expected_thumbprint: str, document: InstanceDocument
) -> Row:
    """Trust the instance at `url` whose document the operator confirmed by
    its thumbprint; the peer's row. The thumbprint is computed here from the
    key it sent, never taken from the document's own claim."""
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
    url = url.rstrip("/")
    peer = await tx.first(_PEER_FOR_UPDATE, {"instance_id": document.instance_id})
    if peer is not None and peer.thumbprint != actual:
        raise PeerError(
            f"peer {document.instance_id} is known with another key ({peer.thumbprint}): remove it first"
        )
    if peer is None:
        row = new_row(
            Peer, instance_id=document.instance_id, url=url, public_key=document.public_key, thumbprint=actual
        )
        await tx.insert([(PEERS, [row])])
        return row_type(PEERS)(**row)
    if peer.url != url:
        await tx.execute(_SET_PEER_URL, {"peer_id": peer.instance_id, "url": url})
    return peer._replace(url=url)


_PEERS = sa.select(PEERS).order_by(PEERS.c.instance_id)


async def list_peers(db: Statements) -> list[Row]:
    return await db.all(_PEERS)


async def peer_status(db: Statements, peer: Row) -> PeerStatus:
    return PeerStatus(
        instance_id=peer.instance_id,
        url=peer.url,
        thumbprint=peer.thumbprint,
        last_success_at=peer.last_success_at,
        last_error=peer.last_error,
        pending=await pending(db, peer),
    )


_REMOVE_PEER = sa.delete(PEERS).where(PEERS.c.instance_id == sa.bindparam("instance_id"))


_MIRRORS_OF = sa.select(mirror.CASES.c.id).where(mirror.CASES.c.home_instance == sa.bindparam("home"))


async def remove_peer(tx: Tx, instance_id: str) -> int:
    """Forget a peer; its nonces and the record of what it mirrors go with it
    (ON DELETE CASCADE), and so do the mirrors of its cases held here: they
    could no longer be kept up to date nor written through. How many went."""
    if not await tx.execute(_REMOVE_PEER, {"instance_id": instance_id}):
        raise PeerError(f"no peer {instance_id}")
    mirrors = await tx.all(_MIRRORS_OF, {"home": instance_id})
    for case in mirrors:
        await mirror.withdraw(tx, case.id)
    if mirrors:
        record(
            tx,
            CLI,
            action="federation.withdrawn",
            resource_type="peer",
            resource_id=None,
            case_id=None,
            emit_event=False,
            detail={"peer": instance_id, "cases": [str(case.id) for case in mirrors]},
        )
    return len(mirrors)


async def authenticate(tx: Tx, method: str, url: str, headers: Iterable[tuple[str, str]], body: bytes) -> Row:
    """The peer that signed this request, once; else 401, logged as a security event.

    The nonce is recorded in the request's transaction: of two workers
    receiving the same signed request, one commits it and the other fails.
    """
    peers = {peer.instance_id: peer for peer in await list_peers(tx)}
    keys = {instance_id: key_of(peer.public_key)[0] for instance_id, peer in peers.items()}
    try:
        signed = signatures.verify(method, url, headers, body, keys)
        await _record_nonce(tx, signed)
    except signatures.BadSignature as exc:
        # Logged as a security event by the error handler, with the reason.
        raise AppError(
            401,
            f"The request is not signed by a known peer: {exc}.",
            slug="bad-signature",
            headers={"WWW-Authenticate": 'Signature tag="caseapi-federation"'},
        ) from None
    return peers[signed.instance_id]


_EXPIRE_NONCES = sa.delete(NONCES).where(NONCES.c.created_at < sa.bindparam("before"))


async def _record_nonce(tx: Tx, signed: signatures.Signed) -> None:
    now = utcnow()
    await tx.execute(_EXPIRE_NONCES, {"before": now - NONCE_KEPT})
    row = new_row(PeerNonce, instance_id=signed.instance_id, nonce=signed.nonce, created_at=now)
    try:
        await tx.insert([(NONCES, [row])])
    except IntegrityError:
        # The refusal ends the request's transaction, which PostgreSQL has aborted.
        raise signatures.BadSignature("replayed: this signature was used before") from None


_LOCAL_AGENCIES = sa.select(AGENCIES).where(AGENCIES.c.home_instance.is_(None)).order_by(AGENCIES.c.code)


async def local_agencies(db: Statements) -> list[Row]:
    """The agencies this instance hosts, as it announces them to its peers."""
    return await db.all(_LOCAL_AGENCIES)


async def fetch_agencies(
    me: Identity, peer: Row, *, transport: httpx.AsyncBaseTransport | None = None
) -> AgencyDirectory | None:
    """The agencies `peer` hosts, asked by a signed request; None while the
    peer does not trust this instance yet (it answers 401)."""
    url = peer.url + AGENCIES_PATH
    try:
        async with httpx.AsyncClient(
            timeout=FETCH_TIMEOUT, transport=transport, follow_redirects=False
        ) as http:
            response = await answers.request(
                http, "GET", url, limit=answers.DIRECTORY_BYTES, headers=signatures.sign(me, "GET", url, b"")
            )
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


@functools.cache
def _taken(ids: int, codes: int) -> sa.Select[Any]:
    """The agencies held here with one of `ids` ids or `codes` codes (one_of_params()
    "id" and "code"), locked. Compared one by one, so that each value is bound
    as its column's type (a UUID on SQLite)."""
    return (
        sa.select(AGENCIES)
        .where(
            sa.or_(
                *(AGENCIES.c.id == sa.bindparam(f"id_{i}") for i in range(ids)),
                *(AGENCIES.c.code == sa.bindparam(f"code_{i}") for i in range(codes)),
            )
        )
        .with_for_update()
    )


_AGENCY_ID = sa.select(AGENCIES.c.id).where(AGENCIES.c.id == sa.bindparam("agency_id"))

# What a held agency shows is the home's: its fields, version and instants.
_HELD_FIELDS = ("code", "name", "country", "kind", "parent_id")
_HOME_FIELDS = ("version", "created_at", "updated_at")
_HOLD = (
    sa.update(AGENCIES)
    .where(AGENCIES.c.id == sa.bindparam("agency_id"))
    .values(
        {name: sa.bindparam(f"v_{name}", type_=AGENCIES.c[name].type) for name in _HELD_FIELDS + _HOME_FIELDS}
    )
)


async def sync_agencies(tx: Tx, peer: Row, directory: AgencyDirectory, *, place: bool = True) -> int:
    """Hold the agencies `peer` hosts, with their ids and codes, as read-only
    records whose home is the peer. An id or a code that is this instance's,
    or another peer's, is refused whole: a peer never takes over an agency.
    `place`: an agency goes under another instance's agency as announced (at
    `caseapi peer add`, which names each); without it (the periodic refresh,
    app.federation.directory) only under the parent held for it already.
    Returns how many records were added or changed (each is audited)."""
    announced = {agency.id: agency for agency in directory.items}
    if not announced:
        return 0
    ids, codes = sorted(announced), sorted({agency.code for agency in directory.items})
    taken = await tx.all(
        _taken(len(ids), len(codes)), one_of_params("id", ids) | one_of_params("code", codes)
    )
    by_code = {agency.code: agency.id for agency in directory.items}
    for row in taken:
        if row.home_instance != peer.instance_id:
            home = row.home_instance or "this instance"
            raise PeerError(f"peer {peer.instance_id} announces agency {row.code}, which belongs to {home}")
        if by_code.get(row.code, row.id) != row.id:
            # Held as the peer's before it was added: named so by another home's mirrored case.
            raise PeerError(
                f"peer {peer.instance_id} announces agency {row.code} under another id than the one "
                f"held here for it (named by a case another peer mirrors here)"
            )
    # Kept up to date: a directory that names an agency twice holds its last entry.
    held_rows = {row.id: row for row in taken}
    changed = 0
    # A parent the peer does not announce is kept only if this instance holds it
    # (a sub-agency of one of its agencies, say); otherwise it stays unknown here.
    parents = {a.parent_id for a in directory.items if a.parent_id not in announced} - {None}
    held_parents = {p for p in parents if await tx.first(_AGENCY_ID, {"agency_id": p}) is not None}
    # Parents before their sub-agencies.
    for agency in sorted(directory.items, key=lambda a: _depth(a, announced)):
        held = held_rows.get(agency.id)
        parent = agency.parent_id if agency.parent_id in announced.keys() | held_parents else None
        if not place and parent not in announced and parent != (held.parent_id if held else None):
            parent = None
        fields: dict[str, Any] = {
            "code": agency.code,
            "name": agency.name,
            "country": agency.country,
            "kind": agency.kind,
            "parent_id": parent,
        }
        home = {"version": agency.version, "created_at": agency.created_at, "updated_at": agency.updated_at}
        if held is None:
            values = {"id": agency.id, "home_instance": peer.instance_id, **fields, **home}
            held_rows[agency.id] = await insert_recorded(
                tx, Agency, values, CLI, resource_type="agency", case_id=None
            )
            changed += 1
            continue
        differs = any(getattr(held, name) != value for name, value in fields.items())
        if differs or any(getattr(held, name) != value for name, value in home.items()):
            values = {f"v_{name}": value for name, value in (fields | home).items()}
            await tx.execute(_HOLD, values | {"agency_id": agency.id})
            held_rows[agency.id] = held._replace(**fields, **home)
        if differs:
            tx.changes.append(Change(CLI, "agency.updated", "agency", agency.id, None))
            changed += 1
    return changed


_PARENT = AGENCIES.alias("parent")
_PLACED_ELSEWHERE = (
    sa.select(
        AGENCIES.c.code, _PARENT.c.code.label("parent_code"), _PARENT.c.home_instance.label("parent_home")
    )
    .join(_PARENT, _PARENT.c.id == AGENCIES.c.parent_id)
    .where(
        AGENCIES.c.home_instance == sa.bindparam("peer"),
        sa.or_(_PARENT.c.home_instance.is_(None), _PARENT.c.home_instance != sa.bindparam("peer")),
    )
    .order_by(AGENCIES.c.code)
)


async def placed_elsewhere(db: Statements, peer_id: str) -> list[Row]:
    """The peer's agencies held under an agency of another instance (this
    one's or a third's): under TLP:AMBER each sees that agency's cases in
    full, so the peer mirrors them. `peer add` names them to the operator."""
    return await db.all(_PLACED_ELSEWHERE, {"peer": peer_id})


def _depth(agency: AgencyPublic, announced: dict[uuid.UUID, AgencyPublic]) -> int:
    depth, parent, seen = 0, agency.parent_id, set()
    while parent in announced and parent not in seen:
        seen.add(parent)
        depth += 1
        parent = announced[parent].parent_id
    return depth


_SET_RECEIVED = (
    sa.update(PEERS)
    .where(PEERS.c.instance_id == sa.bindparam("peer_id"))
    .values(received_seq=sa.bindparam("to_seq"))
)


@dataclass(frozen=True)
class Received:
    """A delivery as its sender signed it, checked for shape and addressing."""

    body: bytes
    from_seq: int
    to_seq: int
    cases: list[Any]

    def new_to(self, sender: Row) -> bool:
        """Not applied yet, as far as `sender`'s row (read outside the applying transaction) says."""
        return bool(self.to_seq > sender.received_seq)


def parse_delivery(me: Identity, sender: Row, body: bytes) -> Received:
    try:
        delivery = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise mirror.MalformedDelivery("not JSON") from None
    if not isinstance(delivery, dict):
        raise mirror.MalformedDelivery("not an object")
    from_seq, to_seq = _seq(delivery.get("from_seq")), _seq(delivery.get("to_seq"))
    cases = mirror.listed(delivery.get("cases"), "the delivery's cases")
    if from_seq > to_seq + 1:
        raise mirror.MalformedDelivery("from_seq lies after to_seq")
    if delivery.get("instance_id") != sender.instance_id or delivery.get("to") != me.instance_id:
        raise mirror.beyond_authority("the delivery names other instances than its signer and this one")
    return Received(body, from_seq, to_seq, cases)


_RECEIVED_SEQ = (
    sa.select(PEERS.c.received_seq).where(PEERS.c.instance_id == sa.bindparam("peer_id")).with_for_update()
)


async def receive(tx: Tx, me: Identity, sender: Row, delivery: Received) -> dict[str, Any]:
    """Apply a delivery `sender` signed (authenticate() checked it), once, in
    `tx`; the content of its receipt. A delivery already applied (the sender
    did not get the receipt) is acknowledged again without being applied."""
    from_seq, to_seq = delivery.from_seq, delivery.to_seq
    applied = to_seq > (await tx.scalar(_RECEIVED_SEQ, {"peer_id": sender.instance_id}) or 0)
    held, amended, withdrawn = [], [], []
    if applied:
        for case in delivery.cases:
            case_id = _case_id(case)
            if case.get("withdrawn") is True:
                if await mirror.held_case(tx, sender.instance_id, case_id):
                    await mirror.withdraw(tx, case_id)
                withdrawn.append(str(case_id))
                continue
            agencies = mirror.listed(case.get("agencies"), "a case's agencies")
            await mirror.hold_agencies(tx, me.instance_id, sender.instance_id, agencies)
            if "changes" in case:
                await mirror.amend(tx, sender.instance_id, case_id, case["changes"], case.get("removed", {}))
                amended.append(str(case_id))
            else:
                await mirror.hold(tx, sender.instance_id, case_id, case.get("rows"))
                held.append(str(case_id))
        await tx.execute(_SET_RECEIVED, {"peer_id": sender.instance_id, "to_seq": to_seq})
    receipt = {
        "instance_id": me.instance_id,
        "home_instance": sender.instance_id,
        "from_seq": from_seq,
        "to_seq": to_seq,
        "content_digest": content_digest(delivery.body),
        "applied": applied,
        "received_at": utcnow().isoformat(),
    }
    if applied:
        record(
            tx,
            CLI,
            action="federation.received",
            resource_type="peer",
            resource_id=None,
            case_id=None,
            emit_event=False,
            detail={
                "peer": sender.instance_id,
                "cases": held,
                "amended": amended,
                "withdrawn": withdrawn,
                "receipt": receipt,
            },
        )
    return receipt


def _seq(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise mirror.MalformedDelivery("a delivery needs its from_seq and to_seq")
    return value


def _case_id(case: Any) -> uuid.UUID:
    try:
        return uuid.UUID(case["id"])
    except (TypeError, KeyError, ValueError, AttributeError):
        raise mirror.MalformedDelivery("a case without its id") from None
