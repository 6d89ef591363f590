"""Delivering the event feed to webhooks: at least once, in feed order per subscription.

The feed is the outbox. Each subscription keeps its cursor (`last_seq`);
a deliverer leases a subscription (service.claim_due), reads the events
after the cursor that the agency may see now, POSTs them one by one, and
stores the new cursor with a log row per attempt (service.complete). The
cursor moves only past a 2xx (or an event not visible or not wanted):
after a failure the same event is tried again later, with growing delays,
and the batch stops so that order holds. A crash before `complete` sends
the batch again (at least once); a lease keeps two deliverers from sending
to one subscription at the same time.

A deliverer's slots (CASEAPI_WEBHOOK_CONCURRENCY) are shared between
agencies: one agency's subscriptions take at most
CASEAPI_WEBHOOK_AGENCY_CONCURRENCY of them, and a claim takes each agency's
most overdue subscription before any agency's second. Receivers that answer
slowly hold their own agency's slots, not everyone's.

`caseapi serve` runs a Deliverer in each worker (CASEAPI_WEBHOOK_DELIVERY),
on the worker's Database; `caseapi deliver` runs one alone.
"""

import asyncio
import contextlib
import logging
import random
import signal
import ssl
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from standardwebhooks import Webhook

from app.core.config import Settings
from app.core.db import utcnow
from app.core.errors import database_reason
from app.core.observability.metrics import Metrics
from app.core.uow import Database
from app.events.models import EventPublic
from app.webhooks import service
from app.webhooks.client import Client, ReceiverError
from app.webhooks.models import DeliveryError, matches
from app.webhooks.targets import RefusedTarget, Target, resolve_async

log = logging.getLogger("caseapi.webhooks")

# The wait after the n-th consecutive failure; the last one repeats. With the
# default CASEAPI_WEBHOOK_MAX_ATTEMPTS (16) a subscription is disabled about
# three days after its first failure.
RETRY_DELAYS = (
    timedelta(seconds=5),
    timedelta(seconds=30),
    timedelta(minutes=2),
    timedelta(minutes=10),
    timedelta(hours=1),
    timedelta(hours=2),
    timedelta(hours=4),
    timedelta(hours=8),
)
# Each delay is drawn within ±10%: receivers that failed together do not all retry at once.
JITTER = 0.1
BATCH = 200  # events read and sent per lease
LEASE = timedelta(minutes=5)
USER_AGENT = "caseapi-webhooks/1"
# Database connections a deliverer uses at once. In `caseapi serve` it shares
# the worker's pool with the admitted requests, which count on theirs; its
# statements are short (a claim, then a read and a write a batch), so two
# serve every subscription it delivers to at once.
DB_CONNECTIONS = 2


def retry_delay(failures: int, rng: random.Random) -> timedelta:
    """The wait after `failures` (>= 1) consecutive failed attempts."""
    base = RETRY_DELAYS[min(failures, len(RETRY_DELAYS)) - 1]
    return base * rng.uniform(1 - JITTER, 1 + JITTER)


def _log_failure(exc: Exception, what: str) -> None:
    """A database error as its one-line reason (its statement and parameters stay out of the
    log, app.core.errors.database_reason); anything else with its traceback."""
    if isinstance(exc, sa.exc.SQLAlchemyError):
        log.error("%s: %s", what, database_reason(exc))
    else:
        log.exception(what)


def _log_failed_attempt(claim: service.Claim, attempt: dict[str, Any]) -> None:
    """One line an operator can alert on. Never the secret, the event or the
    URL (its path or query may hold a receiver's token)."""
    log.warning(
        "webhook_attempt_failed",
        extra={
            "subscription_id": str(claim.id),
            "agency_id": str(claim.agency_id),
            "attempt": attempt["attempt"],
            "reason": str(attempt["error"]),
            "status_code": attempt["status_code"],
            "event_seq": attempt["event_seq"],
            "duration_ms": attempt["duration_ms"],
        },
    )


class Deliverer:
    def __init__(
        self,
        database: Database,
        settings: Settings,
        *,
        clock: Callable[[], datetime] = utcnow,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.database = database
        self.settings = settings
        # The serving worker's counters; `caseapi deliver` alone has none to show.
        self.metrics = metrics
        self.clock = clock
        self.rng = rng or random.Random()
        # One attempt in all: connecting, sending, the whole answer (app.webhooks.client).
        self.timeout = settings.webhook_timeout_seconds
        # Loading the CA certificates takes longer than many deliveries: once per deliverer.
        self.tls = ssl.create_default_context()
        self.client: Client | None = None
        self.db_slots: asyncio.Semaphore | None = None
        # Nothing is sent past this point of a lease, so that its last
        # attempt ends before the lease does.
        self.budget = LEASE.total_seconds() - 2 * self.timeout

    @contextlib.asynccontextmanager
    async def _db(self) -> AsyncIterator[Database]:
        """The database, for one statement or unit of work at a time within DB_CONNECTIONS."""
        assert self.db_slots is not None, "delivering outside run() or run_once()"
        async with self.db_slots:
            yield self.database

    async def _claim(self, limit: int, held: Counter[uuid.UUID] | None = None) -> list[service.Claim]:
        async with self._db() as db:
            return await service.claim_due(
                db, self.settings, now=self.clock(), limit=limit, lease=LEASE, held=held
            )

    async def run_once(self) -> int:
        """Deliver until nothing is due (caught up, or waiting for a retry);
        the number of attempts made."""
        attempts = 0
        async with self._serving():
            while claims := await self._claim(self.settings.webhook_concurrency):
                attempts += sum(await asyncio.gather(*(self.deliver(c) for c in claims)))
        return attempts

    @contextlib.asynccontextmanager
    async def _serving(self) -> AsyncIterator[None]:
        """The HTTP client and the database slots, for as long as the deliverer
        runs (they belong to this event loop)."""
        self.client = Client(self.tls, self.timeout)
        self.db_slots = asyncio.Semaphore(DB_CONNECTIONS)
        try:
            yield
        finally:
            await self.client.close()
            self.client = None
            self.db_slots = None

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; up to CASEAPI_WEBHOOK_CONCURRENCY subscriptions at once."""
        # Each batch in flight, and the agency it delivers for.
        active: dict[asyncio.Task[int], uuid.UUID] = {}
        stopping = asyncio.ensure_future(stop.wait())
        async with self._serving():
            try:
                while not stop.is_set():
                    free = self.settings.webhook_concurrency - len(active)
                    if free > 0:
                        try:
                            claims = await self._claim(free, Counter(active.values()))
                        except Exception as exc:
                            _log_failure(exc, "webhook delivery: claiming subscriptions failed")
                            claims = []
                        active.update((asyncio.ensure_future(self.deliver(c)), c.agency_id) for c in claims)
                    done, _ = await asyncio.wait(
                        {*active, stopping},
                        timeout=self.settings.webhook_poll_seconds,
                        return_when=asyncio.FIRST_COMPLETED,
                    )
                    active = {task: agency for task, agency in active.items() if task not in done}
            finally:
                stopping.cancel()
                # Batches in flight end within one attempt, as a lease expects.
                if active:
                    await asyncio.wait(active, timeout=self.timeout + 5)
                    for task in active:
                        task.cancel()

    async def deliver(self, claim: service.Claim) -> int:
        """One batch of one subscription; the number of attempts made. Never raises."""
        try:
            return await self._deliver(claim)
        except Exception as exc:
            _log_failure(exc, f"webhook delivery to subscription {claim.id} failed")
            return 0

    async def _deliver(self, claim: service.Claim) -> int:
        started = time.monotonic()
        async with self._db() as db:
            events, head = await service.pending_events(db, claim, limit=BATCH)
        last_seq = claim.last_seq
        attempts: list[dict[str, Any]] = []
        failure: tuple[EventPublic, dict[str, Any]] | None = None
        target: Target | RefusedTarget | None = None
        if any(matches(claim.event_types, e.type) for e in events):
            try:
                # A name server that never answers must not hold the slot either.
                async with asyncio.timeout(self.timeout):
                    target = await resolve_async(claim.url, allow_private=self.settings.webhook_allow_private)
            except RefusedTarget as exc:
                target = exc
            except TimeoutError:
                target = RefusedTarget("the host did not resolve in time", unresolvable=True)
        signer = Webhook(claim.secret)
        for event in events:
            if time.monotonic() - started > self.budget:
                break
            if matches(claim.event_types, event.type):
                assert target is not None
                attempt = await self._attempt(signer, target, event)
                if self.metrics is not None:
                    self.metrics.webhook_attempted(attempt["error"])
                attempt["subscription_id"] = claim.id
                attempt["attempt"] = (claim.failures if not attempts else 0) + 1
                attempts.append(attempt)
                if attempt["error"] is not None:
                    _log_failed_attempt(claim, attempt)
                    failure = (event, attempt)
                    break
            last_seq = event.seq
        else:
            last_seq = max(last_seq, head)
        outcome = self._outcome(claim, last_seq, attempts, failure)
        async with self._db() as db:
            stored = await db.run(lambda tx: service.complete(tx, claim, outcome, now=self.clock()))
        if not stored:
            log.info("webhook subscription %s went away during delivery", claim.id)
        return len(attempts)

    def _outcome(
        self,
        claim: service.Claim,
        last_seq: int,
        attempts: list[dict[str, Any]],
        failure: tuple[EventPublic, dict[str, Any]] | None,
    ) -> service.Outcome:
        now = self.clock()
        if failure is None:
            failed_before = claim.failures if not attempts else 0
            return service.Outcome(
                last_seq, attempts, failed_before, claim.failing_since if failed_before else None, now, False
            )
        _, attempt = failure
        failures = attempt["attempt"]
        disable = failures >= self.settings.webhook_max_attempts
        next_at = now + retry_delay(failures, self.rng)
        attempt["next_attempt_at"] = None if disable else next_at
        return service.Outcome(
            last_seq,
            attempts,
            failures,
            claim.failing_since if failures > 1 else attempt["attempted_at"],
            next_at,
            disable,
        )

    async def _attempt(
        self, signer: Webhook, target: Target | RefusedTarget, event: EventPublic
    ) -> dict[str, Any]:
        attempted_at = self.clock()
        started = time.monotonic()
        status, error = await self._post(signer, target, event)
        return {
            "id": uuid.uuid4(),
            "event_seq": event.seq,
            "event_type": event.type,
            "attempted_at": attempted_at,
            "status_code": status,
            "error": error,
            "duration_ms": round((time.monotonic() - started) * 1000),
            "next_attempt_at": None,
        }

    async def _post(
        self, signer: Webhook, target: Target | RefusedTarget, event: EventPublic
    ) -> tuple[int | None, DeliveryError | None]:
        if isinstance(target, RefusedTarget):
            return None, DeliveryError.unresolvable if target.unresolvable else DeliveryError.address_refused
        assert self.client is not None, "delivering outside run() or run_once()"
        body = event.model_dump_json()
        message_id = f"evt_{event.seq}"
        signed_at = utcnow()
        headers = [
            ("Content-Type", "application/json"),
            ("User-Agent", USER_AGENT),
            ("webhook-id", message_id),
            ("webhook-timestamp", str(int(signed_at.timestamp()))),
            ("webhook-signature", signer.sign(message_id, signed_at, body)),
        ]
        try:
            status = await self.client.post(target, headers, body.encode())
        except TimeoutError:
            return None, DeliveryError.timeout
        except ReceiverError:
            return None, DeliveryError.connection
        if 200 <= status < 300:
            return status, None
        return status, DeliveryError.http_status


async def deliver(
    database: Database,
    settings: Settings,
    *,
    once: bool = False,
    stop: asyncio.Event | None = None,
    metrics: Metrics | None = None,
) -> None:
    """Deliver until `stop` is set (by default: until SIGINT or SIGTERM), or what is due with `once`."""
    deliverer = Deliverer(database, settings, metrics=metrics)
    if once:
        await deliverer.run_once()
        return
    if stop is None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
    await deliverer.run(stop)
