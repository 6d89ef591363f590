"""Keeping the agencies of peers up to date: every
`CASEAPI_FEDERATION_DIRECTORY_SECONDS` a worker asks each peer for the
agencies it hosts (a signed request, as `caseapi peer add` does) and holds
them, so that an agency made or changed at its home reaches this instance
without its operator adding the peer again. A peer that does not trust this
instance yet answers nothing to hold; a directory refused (an agency of
another's) is logged and held no part of. An agency is placed under another
instance's agency only at `caseapi peer add` (app.federation.service.sync_agencies).
"""

import asyncio
import contextlib
import logging

import sqlalchemy as sa

from app.core.config import Settings
from app.core.errors import database_reason
from app.core.uow import Database
from app.federation import service
from app.federation.identity import Identity

log = logging.getLogger("caseapi.federation")

_PEERS = sa.select(service.PEERS).order_by(service.PEERS.c.instance_id)


async def refresh(db: Database, me: Identity) -> int:
    """Hold every peer's agencies as it announces them now; how many records were added or changed."""
    changed = 0
    for peer in await db.all(_PEERS):
        try:
            directory = await service.fetch_agencies(me, peer)
            if directory is None:
                continue
            async with db.transaction() as tx:
                synced = await service.sync_agencies(tx, peer, directory, place=False)
        except service.PeerError as exc:
            log.warning("federation_directory_refused", extra={"peer": peer.instance_id, "reason": str(exc)})
            continue
        except sa.exc.SQLAlchemyError as exc:  # another worker holding the same agencies at once
            log.warning(
                "federation_directory_unheld",
                extra={"peer": peer.instance_id, "reason": database_reason(exc)},
            )
            continue
        if synced:
            log.info("federation_directory_held", extra={"peer": peer.instance_id, "changed": synced})
        changed += synced
    return changed


async def run(db: Database, me: Identity, settings: Settings, stop: asyncio.Event) -> None:
    """refresh() every period until `stop`; the first one period after the start."""
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.federation_directory_seconds)
        if stop.is_set():
            return
        try:
            await refresh(db, me)
        except Exception as exc:  # the loop outlives a database restart
            log.error("federation_directory_error: %s", type(exc).__name__, exc_info=exc)
