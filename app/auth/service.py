"""API clients: keys are shown once and stored only as a hash."""

import asyncio
import collections
import hashlib
import secrets
import time
import uuid
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from app.agencies.models import Agency
from app.auth.models import ApiClient, Scope
from app.core.db import new_row, utcnow
from app.core.errors import AppError
from app.core.journal import CLI, Actor, record
from app.core.uow import Row, Statements, Tx
from app.webhooks.lifecycle import disable_if_keyless

KEY_PREFIX = "cak_"
# The tables themselves: app.access (whose table_of() other services use) imports this module.
CLIENTS: sa.Table = ApiClient.__table__  # type: ignore[attr-defined]
AGENCIES: sa.Table = Agency.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Principal:
    """Who is calling: one API client of one agency, with its scopes."""

    client_id: uuid.UUID
    agency_id: uuid.UUID
    parent_agency_id: uuid.UUID | None
    scopes: frozenset[str]
    # A peer's agency, acting here through a write its instance forwarded
    # (app.federation.forward): it holds of a case only what its instance may.
    remote: bool = False

    @property
    def actor(self) -> Actor:
        return Actor(agency_id=self.agency_id, client_id=self.client_id)

    def has(self, scope: Scope) -> bool:
        return scope.value in self.scopes


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


_PRINCIPAL = (
    sa.select(CLIENTS.c.id, CLIENTS.c.agency_id, CLIENTS.c.scopes, AGENCIES.c.parent_id)
    .join(AGENCIES, AGENCIES.c.id == CLIENTS.c.agency_id)
    .where(CLIENTS.c.key_hash == sa.bindparam("key_hash"), CLIENTS.c.revoked_at.is_(None))
)


async def read_principal(reads: Statements, key_hash: str) -> Principal | None:
    """The active client whose key has this hash, or None."""
    row = await reads.first(_PRINCIPAL, {"key_hash": key_hash})
    if row is None:
        return None
    return Principal(row.id, row.agency_id, row.parent_id, frozenset(row.scopes))


class PrincipalCache:
    """Recently seen keys, per worker, trusted for at most `ttl` seconds.

    A revocation or a change of scopes, made by any worker or the CLI,
    takes effect once the entry expires (the default ttl is one second).
    Unknown keys are never cached. Requests that miss the same key at once
    share one lookup: when an entry expires under load, the database sees
    one query, not one per waiting request.
    """

    def __init__(self, ttl: float, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Principal]] = {}
        # Keyed by event loop too: a task belongs to the loop that runs it.
        self._loading: dict[tuple[asyncio.AbstractEventLoop, str], asyncio.Task[Principal | None]] = {}

    async def load(
        self, key_hash: str, fetch: Callable[[], Coroutine[Any, Any, Principal | None]]
    ) -> Principal | None:
        """The cached principal, or the one `fetch` finds (shared with concurrent misses)."""
        principal = self.get(key_hash)
        if principal is not None:
            return principal
        key = (asyncio.get_running_loop(), key_hash)
        task = self._loading.get(key)
        if task is None:
            task = self._loading[key] = asyncio.ensure_future(fetch())
            task.add_done_callback(lambda _: self._loading.pop(key, None))
        # Shielded: a waiter that goes away does not cancel the others' lookup.
        principal = await asyncio.shield(task)
        if principal is not None:
            self.put(key_hash, principal)
        return principal

    def get(self, key_hash: str) -> Principal | None:
        entry = self._entries.get(key_hash)
        if entry is None:
            return None
        expires, principal = entry
        if time.monotonic() >= expires:
            self._entries.pop(key_hash, None)
            return None
        return principal

    def put(self, key_hash: str, principal: Principal) -> None:
        if self.ttl <= 0:
            return
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[key_hash] = (time.monotonic() + self.ttl, principal)


_AGENCY_BY_CODE = sa.select(AGENCIES.c.id, AGENCIES.c.home_instance).where(
    AGENCIES.c.code == sa.bindparam("code")
)
ClientRow = collections.namedtuple("ClientRow", [c.key for c in CLIENTS.columns])  # type: ignore[misc]


async def create_client(
    tx: Tx,
    *,
    agency_code: str,
    name: str,
    scopes: Iterable[Scope],
    actor: Actor = CLI,
) -> tuple[Row, str]:
    """A new client of the agency (its row) and its key, which is stored only as a hash."""
    agency = await tx.first(_AGENCY_BY_CODE, {"code": agency_code})
    if agency is None:
        raise AppError(404, f"No agency with code {agency_code!r}.", slug="not-found")
    if agency.home_instance is not None:
        # Keys are made where the agency lives: a key here would let this
        # instance's operator act for an agency it does not host.
        raise AppError(
            409,
            f"Agency {agency_code} lives on {agency.home_instance}: its keys are made there.",
            slug="remote-agency",
        )
    if not name.strip() or len(name) > 200:
        raise AppError(422, "A client name is 1 to 200 characters.", slug="validation-error")
    key = new_key()
    row = new_row(
        ApiClient,
        agency_id=agency.id,
        name=name,
        key_hash=hash_key(key),
        scopes=sorted({s.value for s in scopes} or {Scope.read.value}),
    )
    await tx.insert([(CLIENTS, [row])])
    record(
        tx,
        actor,
        action="api_client.created",
        resource_type="api_client",
        resource_id=row["id"],
        case_id=None,
        emit_event=False,
    )
    return ClientRow(**row), key


_CLIENTS = (
    sa.select(CLIENTS, AGENCIES.c.code.label("agency_code"))
    .join(AGENCIES, AGENCIES.c.id == CLIENTS.c.agency_id)
    .order_by(CLIENTS.c.created_at, CLIENTS.c.id)
)


async def list_clients(db: Statements) -> list[Row]:
    """Every client (its columns) with its agency's code (`agency_code`), oldest first."""
    return await db.all(_CLIENTS)


_CLIENT_BY_ID = sa.select(CLIENTS).where(CLIENTS.c.id == sa.bindparam("client_id")).with_for_update()
_CLIENT_BY_KEY = sa.select(CLIENTS).where(CLIENTS.c.key_hash == sa.bindparam("key_hash")).with_for_update()
_REVOKE = (
    sa.update(CLIENTS)
    .where(CLIENTS.c.id == sa.bindparam("client_id"))
    .values(revoked_at=sa.bindparam("now", type_=CLIENTS.c.revoked_at.type))
)


async def revoke_client(tx: Tx, id_or_key: str, *, actor: Actor = CLI) -> Row:
    """Revoke a key (its client's row, locked: revoking twice is one change);
    revoking an agency's last live key also disables its webhooks."""
    try:
        client_id = uuid.UUID(id_or_key)
    except ValueError:
        client = await tx.first(_CLIENT_BY_KEY, {"key_hash": hash_key(id_or_key)})
    else:
        client = await tx.first(_CLIENT_BY_ID, {"client_id": client_id})
    if client is None:
        raise AppError(404, "No such API client.", slug="not-found")
    if client.revoked_at is None:
        now = utcnow()
        await tx.execute(_REVOKE, {"client_id": client.id, "now": now})
        client = client._replace(revoked_at=now)
        record(
            tx,
            actor,
            action="api_client.revoked",
            resource_type="api_client",
            resource_id=client.id,
            case_id=None,
            emit_event=False,
        )
        await disable_if_keyless(tx, actor, client.agency_id, now=now)
    return client
