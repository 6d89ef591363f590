"""Delivering cases to the peers that mirror them: from the home's feed, per
peer, with a durable cursor (`peer.delivered_seq`), in order, at least once.

A deliverer leases a peer that is behind the feed (claim_due), reads the
events after its cursor, and sends, for each case they name in order of
first mention, what the peer may hold of it now (app.federation.mirror): the
records those events changed when the peer mirrors the case already and
they are all amendable, else the case whole; or, when the peer held it and
no longer qualifies, its withdrawal. The peer
applies the delivery in one transaction and answers with a receipt signed by
its key; only then does the cursor move, in the transaction that audits
`federation.delivered` with the receipt. A crash or a failure before that
sends the same events again later: the peer applies a snapshot twice to the
same effect, and acknowledges a delivery it already applied without applying
it again (`peer.received_seq`). Failures wait longer each time (as webhooks
do), are kept as the peer's `last_error` and write a log line.

`caseapi serve` runs a Deliverer in each worker of a federating instance;
leases keep two workers off one peer. A commit that writes to the feed wakes
the Deliverer of its worker (Database.on_feed); one that delivered looks
again at once, so a change waits for at most the delivery in flight.
"""

import asyncio
import base64
import contextlib
import functools
import hashlib
import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from prometheus_client.core import GaugeMetricFamily, Metric

from app import access
from app.core.config import Settings
from app.core.db import new_row, table_of, utcnow
from app.core.errors import database_reason
from app.core.http import dump_json
from app.core.journal import CLI, record
from app.core.observability.metrics import Metrics
from app.core.records import Event
from app.core.uow import Database, Row, Statements, Tx
from app.federation import answers, mirror, signatures
from app.federation.identity import Identity, key_of
from app.federation.models import Peer, PeerMirror

log = logging.getLogger("caseapi.federation")

DELIVERIES_PATH = "/api/v1/federation/deliveries"
PEERS = table_of(Peer)
MIRRORS = table_of(PeerMirror)
EVENTS = table_of(Event)
CASES = mirror.CASES
AGENCIES = mirror.AGENCIES
REQUESTS = mirror.REQUESTS
BATCH = 500  # events read per delivery
# Rows one delivery holds at most, unless its first case alone holds more.
ROWS_PER_DELIVERY = 20_000
LEASE = timedelta(minutes=5)
SEND_TIMEOUT = httpx.Timeout(30.0, read=300.0)
RETRY_DELAYS = (
    timedelta(seconds=1),
    timedelta(seconds=5),
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
)


def retry_delay(failures: int) -> timedelta:
    """The wait after `failures` (>= 1) consecutive failures, within ±10%."""
    return RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1] * random.uniform(0.9, 1.1)


_HEAD = sa.select(sa.func.coalesce(sa.func.max(EVENTS.c.seq), 0)).scalar_subquery()
# A peer behind the feed whose lease is free, or held by the asking deliverer
# (one that could not give it back, its database gone for a moment).
_DUE = sa.and_(
    PEERS.c.delivered_seq < _HEAD,
    sa.or_(
        PEERS.c.lease_until.is_(None),
        PEERS.c.lease_until < sa.bindparam("now"),
        PEERS.c.lease_token == sa.bindparam("token"),
    ),
    sa.or_(PEERS.c.next_attempt_at.is_(None), PEERS.c.next_attempt_at <= sa.bindparam("now")),
)
_ALL_DUE = sa.select(PEERS.c.instance_id).where(_DUE)
_CLAIM = sa.select(PEERS).where(_DUE).order_by(PEERS.c.instance_id).with_for_update(skip_locked=True)
_LEASE = (
    sa.update(PEERS)
    .where(PEERS.c.instance_id == sa.bindparam("peer"))
    .values(lease_token=sa.bindparam("token"), lease_until=sa.bindparam("until"))
)


@dataclass(frozen=True)
class Claim:
    peer: Row
    token: uuid.UUID


async def claim_due(db: Database, now: datetime, token: uuid.UUID, busy: Collection[str] = ()) -> list[Claim]:
    """Lease to the deliverer `token` every peer that is behind the feed and
    due, but those it is delivering to already (`busy`): their leases are its
    own. PostgreSQL: SKIP LOCKED keeps two workers off one peer; SQLite: the
    write lock does."""
    if not {row.instance_id for row in await db.all(_ALL_DUE, {"now": now, "token": token})} - set(busy):
        return []
    async with db.transaction() as tx:
        peers = [
            peer
            for peer in await tx.all(_CLAIM, {"now": now, "token": token})
            if peer.instance_id not in busy
        ]
        for peer in peers:
            await tx.execute(_LEASE, {"peer": peer.instance_id, "token": token, "until": now + LEASE})
    return [Claim(peer, token) for peer in peers]


@dataclass
class Delivery:
    """What one request to a peer carries: the events from `from_seq` (after
    the cursor) to `to_seq`, as the cases they changed."""

    from_seq: int
    to_seq: int
    cases: list[dict[str, Any]] = field(default_factory=list)

    @property
    def sent(self) -> list[uuid.UUID]:
        """The cases sent whole (the peer mirrors them from now on)."""
        return [case["id"] for case in self.cases if "rows" in case]

    @property
    def amended(self) -> list[uuid.UUID]:
        return [case["id"] for case in self.cases if "changes" in case]

    @property
    def withdrawn(self) -> list[uuid.UUID]:
        return [case["id"] for case in self.cases if case.get("withdrawn")]


_PEER_AGENCIES = sa.select(AGENCIES.c.id).where(AGENCIES.c.home_instance == sa.bindparam("peer"))
_CASE_OF_REQUEST = sa.select(REQUESTS.c.case_id).where(REQUESTS.c.id == EVENTS.c.request_id).scalar_subquery()
_PARTY_OF_PEER = sa.or_(
    EVENTS.c.request_from_agency_id.in_(_PEER_AGENCIES), EVENTS.c.request_to_agency_id.in_(_PEER_AGENCIES)
)
# The case an event changes for the peer `:peer`. The events of an information
# request, its messages and their attachments carry no case_id (only its two
# agencies see them) but their request's id: their case is the request's (a
# request is never deleted, so a deleted message's attachment still finds it),
# and only for a peer hosting one of the two (no other holds it).
CASE_OF_EVENT = sa.case(
    (EVENTS.c.case_id.is_not(None), EVENTS.c.case_id),
    (sa.and_(EVENTS.c.request_id.is_not(None), _PARTY_OF_PEER), _CASE_OF_REQUEST),
    else_=sa.null(),
)
_EVENTS_AFTER = (
    sa.select(EVENTS.c.seq, CASE_OF_EVENT.label("case_id"), EVENTS.c.resource_type, EVENTS.c.resource_id)
    .where(EVENTS.c.seq > sa.bindparam("after"))
    .order_by(EVENTS.c.seq)
    .limit(BATCH)
)
_MIRRORED = sa.select(MIRRORS.c.case_id).where(
    MIRRORS.c.instance_id == sa.bindparam("peer"), MIRRORS.c.case_id == sa.bindparam("case_id")
)
_REPEATABLE_READ = sa.text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")


async def build(db: Database, me: str, peer: Row) -> Delivery:
    """The next delivery to `peer`, from the events after its cursor. Its
    cases are read in one repeatable-read transaction (SQLite's transactions
    always are): each snapshot is the state after every event it covers."""
    events = await db.all(_EVENTS_AFTER, {"after": peer.delivered_seq, "peer": peer.instance_id})
    if not events:
        return Delivery(peer.delivered_seq + 1, peer.delivered_seq)
    first_seen: dict[uuid.UUID, int] = {}
    named: dict[uuid.UUID, list[tuple[str, uuid.UUID]]] = {}
    for event in events:
        if event.case_id is not None:
            first_seen.setdefault(event.case_id, event.seq)
            named.setdefault(event.case_id, []).append((event.resource_type, event.resource_id))
    delivery = Delivery(peer.delivered_seq + 1, events[-1].seq)
    rows = 0
    async with db.transaction() as tx:
        if tx.dialect_name == "postgresql":
            await tx.execute(_REPEATABLE_READ)
        for case_id, seq in first_seen.items():
            if rows >= ROWS_PER_DELIVERY:
                # The rest next time: every event before this case's first is delivered.
                delivery.to_seq = seq - 1
                break
            mirrored = await tx.first(_MIRRORED, {"peer": peer.instance_id, "case_id": case_id}) is not None
            changes = named[case_id]
            if mirrored and mirror.amendable(resource_type for resource_type, _ in changes):
                case = await mirror.amendment(tx, me, peer.instance_id, case_id, changes)
            else:
                case = await mirror.snapshot(tx, me, peer.instance_id, case_id)
            if case is not None:
                delivery.cases.append(case)
                rows += sum(
                    len(table_rows) for table_rows in case.get("rows", case.get("changes", {})).values()
                )
            elif mirrored:
                delivery.cases.append({"id": case_id, "withdrawn": True})
    return delivery


def body_of(me: str, peer: str, delivery: Delivery) -> bytes:
    return dump_json(
        {
            "instance_id": me,
            "to": peer,
            "from_seq": delivery.from_seq,
            "to_seq": delivery.to_seq,
            "cases": delivery.cases,
        }
    )


def content_digest(body: bytes) -> str:
    """The body's RFC 9530 Content-Digest value, as the signature covers it."""
    return f"sha-256=:{base64.b64encode(hashlib.sha256(body).digest()).decode()}:"


class DeliveryFailed(Exception):
    """Why a peer did not acknowledge a delivery, in one line for its `last_error`."""


class MirrorLost(Exception):
    """The peer holds no mirror of a case the delivery amends: it gets the case whole next."""

    def __init__(self, case_id: uuid.UUID) -> None:
        super().__init__(f"no mirror of case {case_id}")
        self.case_id = case_id


async def send(http: httpx.AsyncClient, me: Identity, peer: Row, delivery: Delivery) -> dict[str, Any]:
    """POST the delivery, signed; the peer's receipt, once its signature and content are checked."""
    body = body_of(me.instance_id, peer.instance_id, delivery)
    url = peer.url + DELIVERIES_PATH
    headers = signatures.sign(me, "POST", url, body) | {"Content-Type": "application/json"}
    try:
        response = await answers.request(
            http, "POST", url, limit=answers.RECEIPT_BYTES, content=body, headers=headers
        )
    except httpx.HTTPError as exc:
        raise DeliveryFailed(f"cannot reach {peer.url}: {type(exc).__name__}") from None
    if response.status_code == 409 and (lost := _lost_mirror(response, delivery)) is not None:
        raise MirrorLost(lost)
    if response.status_code != 200:
        raise DeliveryFailed(f"{peer.url} answered {response.status_code}: {_problem(response)}")
    try:
        token = response.json()["receipt"]
        receipt = signatures.open_receipt(token, key_of(peer.public_key)[0])
    except (ValueError, KeyError, TypeError, signatures.BadSignature) as exc:
        raise DeliveryFailed(f"{peer.url} sent no valid receipt: {exc}") from None
    expected = {
        "instance_id": peer.instance_id,
        "home_instance": me.instance_id,
        "from_seq": delivery.from_seq,
        "to_seq": delivery.to_seq,
        "content_digest": content_digest(body),
    }
    if any(receipt.get(name) != value for name, value in expected.items()):
        raise DeliveryFailed(f"{peer.url} sent a receipt for another delivery")
    return receipt | {"token": token}


def _lost_mirror(response: httpx.Response, delivery: Delivery) -> uuid.UUID | None:
    """The case of the delivery's amendments that the peer says it holds no mirror of, if it says so."""
    try:
        problem = response.json()
        if problem["type"] == f"urn:caseapi:problem:{mirror.NOT_HELD}":
            case_id = uuid.UUID(problem["case_id"])
            return case_id if case_id in delivery.amended else None
    except (ValueError, KeyError, TypeError, AttributeError):
        pass
    return None


def _problem(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    return str(detail)[:300] if detail else response.reason_phrase


_RELEASE = sa.and_(PEERS.c.instance_id == sa.bindparam("peer"), PEERS.c.lease_token == sa.bindparam("token"))
_DELIVERED = (
    sa.update(PEERS)
    .where(_RELEASE)
    .values(
        delivered_seq=sa.bindparam("to_seq"),
        last_success_at=sa.bindparam("now"),
        last_error=None,
        failures=0,
        next_attempt_at=None,
        lease_token=None,
        lease_until=None,
    )
)
_FAILED = (
    sa.update(PEERS)
    .where(_RELEASE)
    .values(
        last_error=sa.bindparam("error"),
        failures=PEERS.c.failures + 1,
        next_attempt_at=sa.bindparam("retry_at"),
        lease_token=None,
        lease_until=None,
    )
)
_FORGET_MIRROR = sa.delete(MIRRORS).where(
    MIRRORS.c.instance_id == sa.bindparam("peer"), MIRRORS.c.case_id == sa.bindparam("case_id")
)


async def delivered(
    tx: Tx, claim: Claim, delivery: Delivery, receipt: dict[str, Any] | None, now: datetime
) -> bool:
    """Move the cursor past `delivery`, note which cases the peer now mirrors,
    and audit it with the receipt (None: nothing needed sending). False when
    the lease was lost meanwhile (the peer was removed) and nothing was stored."""
    peer = claim.peer.instance_id
    stored = await tx.execute(
        _DELIVERED, {"peer": peer, "token": claim.token, "to_seq": delivery.to_seq, "now": now}
    )
    if not stored:
        return False
    for case_id in delivery.withdrawn + delivery.sent:
        await tx.execute(_FORGET_MIRROR, {"peer": peer, "case_id": case_id})
    await tx.insert_many(
        MIRRORS,
        [
            new_row(PeerMirror, instance_id=peer, case_id=case_id, delivered_at=now)
            for case_id in delivery.sent
        ],
    )
    if receipt is not None:
        record(
            tx,
            CLI,
            action="federation.delivered",
            resource_type="peer",
            resource_id=None,
            case_id=None,
            emit_event=False,
            detail={
                "peer": peer,
                "cases": [str(case_id) for case_id in delivery.sent],
                "amended": [str(case_id) for case_id in delivery.amended],
                "withdrawn": [str(case_id) for case_id in delivery.withdrawn],
                "receipt": receipt,
            },
        )
    return True


_RELEASED = (
    sa.update(PEERS)
    .where(_RELEASE)
    .values(next_attempt_at=sa.bindparam("retry_at"), lease_token=None, lease_until=None)
)


async def release(
    db: Database, claim: Claim, retry_at: datetime | None, lost: uuid.UUID | None = None
) -> None:
    """Give the lease back without counting a failure against the peer; with
    `lost`, forget that the peer mirrors that case (it gets it whole next)."""
    async with db.transaction() as tx:
        if lost is not None:
            await tx.execute(_FORGET_MIRROR, {"peer": claim.peer.instance_id, "case_id": lost})
        await tx.execute(
            _RELEASED, {"peer": claim.peer.instance_id, "token": claim.token, "retry_at": retry_at}
        )


async def failed(db: Database, claim: Claim, error: str, now: datetime) -> None:
    failures = claim.peer.failures + 1
    async with db.transaction() as tx:
        await tx.execute(
            _FAILED,
            {
                "peer": claim.peer.instance_id,
                "token": claim.token,
                "error": error[:500],
                "retry_at": now + retry_delay(failures),
            },
        )


class Deliverer:
    """Delivers to every peer that is behind, each on its own task."""

    def __init__(
        self, db: Database, me: Identity, settings: Settings, metrics: Metrics | None = None
    ) -> None:
        self.db = db
        self.me = me
        self.poll = settings.federation_poll_seconds
        self.metrics = metrics
        self.token = uuid.uuid4()  # its leases'

    async def start_due(
        self,
        http: httpx.AsyncClient,
        sending: dict[str, asyncio.Task[bool]],
        done: Callable[[str, asyncio.Task[bool]], None],
    ) -> None:
        """Start a delivery to every due peer that has none under way (`sending`, by peer): each
        on a task of its own, so that a peer slow to answer, or that never does, holds back
        only its own mirrors, never another peer's. `done` is called with each as it ends."""
        for claim in await claim_due(self.db, utcnow(), self.token, busy=sending.keys()):
            peer = claim.peer.instance_id
            sending[peer] = asyncio.create_task(self.deliver(http, claim))
            sending[peer].add_done_callback(functools.partial(done, peer))

    async def deliver(self, http: httpx.AsyncClient, claim: Claim) -> bool:
        """One delivery to the claimed peer; whether its cursor moved, or it
        should be tried again at once (a mirror it lost, sent whole next)."""
        peer = claim.peer.instance_id
        try:
            delivery = await build(self.db, self.me.instance_id, claim.peer)
            receipt = await send(http, self.me, claim.peer, delivery) if delivery.cases else None
        except MirrorLost as exc:
            log.warning("federation_mirror_lost", extra={"peer": peer, "case_id": str(exc.case_id)})
            await release(self.db, claim, None, lost=exc.case_id)
            return True
        except DeliveryFailed as exc:
            log.warning("federation_delivery_failed", extra={"peer": peer, "reason": str(exc)})
            if self.metrics is not None:
                self.metrics.federation_delivered(peer, ok=False)
            await failed(self.db, claim, str(exc), utcnow())
            return False
        except Exception as exc:  # this instance's trouble (its database), not the peer's
            log.error("federation_delivery_unbuilt", extra={"peer": peer, "reason": _local_reason(exc)})
            await release(self.db, claim, utcnow() + timedelta(seconds=self.poll))
            return False
        async with self.db.transaction() as tx:
            stored = await delivered(tx, claim, delivery, receipt, utcnow())
        if stored and receipt is not None and self.metrics is not None:
            self.metrics.federation_delivered(peer, ok=True)
        return stored

    async def run(self, stop: asyncio.Event) -> None:
        wake = asyncio.Event()
        self.db.on_feed.append(wake.set)
        sending: dict[str, asyncio.Task[bool]] = {}

        def done(peer: str, task: asyncio.Task[bool]) -> None:
            del sending[peer]
            if task.cancelled():
                return
            if (exc := task.exception()) is not None:
                log.error("federation_deliverer_error: %s", type(exc).__name__, exc_info=exc)
            elif task.result():
                wake.set()  # A peer catching up takes its next batch at once.

        try:
            async with self._client() as http:
                while not stop.is_set():
                    wake.clear()
                    try:
                        await self.start_due(http, sending, done)
                    except Exception as exc:  # the loop outlives a database restart
                        log.error("federation_deliverer_error: %s", _local_reason(exc))
                    await _first_of(stop, wake, self.poll)
        finally:
            self.db.on_feed.remove(wake.set)
            for task in list(sending.values()):
                task.cancel()
            await asyncio.gather(*sending.values(), return_exceptions=True)

    @contextlib.asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        async with httpx.AsyncClient(timeout=SEND_TIMEOUT, follow_redirects=False) as http:
            yield http


def _local_reason(exc: Exception) -> str:
    if isinstance(exc, sa.exc.SQLAlchemyError):
        return database_reason(exc)
    log.exception("federation_delivery_error")
    return f"internal error ({type(exc).__name__})"


async def _first_of(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    """Wait until `stop` or `wake` is set, for at most `seconds`."""
    waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())]
    try:
        await asyncio.wait(waits, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiting in waits:
            waiting.cancel()


# ---- watching it --------------------------------------------------------------------------------

# Counted per case first, then summed over the cases the peer mirrors or
# should: the peer's share is checked once a case, not once an event.
_PENDING_PER_CASE = (
    sa.select(CASE_OF_EVENT.label("case_id"), sa.func.count().label("events"))
    .where(EVENTS.c.seq > sa.bindparam("after"))
    .group_by(CASE_OF_EVENT)
    .subquery()
)
_PENDING = sa.select(sa.func.coalesce(sa.func.sum(_PENDING_PER_CASE.c.events), 0)).where(
    sa.or_(
        _PENDING_PER_CASE.c.case_id.in_(
            sa.select(MIRRORS.c.case_id).where(MIRRORS.c.instance_id == sa.bindparam("peer"))
        ),
        sa.exists().where(CASES.c.id == _PENDING_PER_CASE.c.case_id, access.peer_sees_case_in_full()),
    )
)


async def pending(db: Statements, peer: Row) -> int:
    """Changes of cases `peer` mirrors, or should, that it has not acknowledged."""
    return int(await db.scalar(_PENDING, {"after": peer.delivered_seq, "peer": peer.instance_id}) or 0)


_ALL_PEERS = sa.select(PEERS).order_by(PEERS.c.instance_id)


async def pending_gauge(db: Statements) -> list[Metric]:
    """`caseapi_federation_pending{peer}`, read at each scrape of /metrics."""
    gauge = GaugeMetricFamily(
        "caseapi_federation_pending",
        "Changes of cases a peer mirrors, or should, that it has not acknowledged",
        labels=["peer"],
    )
    for peer in await db.all(_ALL_PEERS):
        gauge.add_metric([peer.instance_id], await pending(db, peer))
    return [gauge]
