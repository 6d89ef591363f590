"""Attachments' files travel with a mirror: before a peer applies a delivery it
fetches, signed, every file its attachments name that it does not hold yet,
streamed to staging and checked against the row's sha256 and size; the rows
commit, then the files move into place (as an upload's do, so a crash in
between leaves sealed staging files that `caseapi storage sweep` places).
The home serves a file only to a peer entitled to the attachment's row."""

import uuid
from typing import Any

import anyio.to_thread
import httpx
import sqlalchemy as sa
from fastapi.responses import StreamingResponse

from app import access
from app.attachments.service import claim_for_upload, place, receive_file
from app.attachments.storage import Staged, Storage, copy_chunks
from app.core.errors import AppError
from app.core.uow import Database, Row, Statements
from app.federation import mirror, signatures
from app.federation.identity import Identity

CONTENT_PATH = "/api/v1/federation/attachments/{attachment_id}/content"
FETCH_TIMEOUT = httpx.Timeout(30.0, read=300.0)
_READ_CHUNK = 256 * 1024

ATTACHMENTS, CASES, REQUESTS = mirror.ATTACHMENTS, mirror.CASES, mirror.REQUESTS


def _case_qualifies(case_id: sa.ColumnElement[uuid.UUID]) -> sa.Exists:
    return sa.exists().where(CASES.c.id == case_id, access.peer_sees_case_in_full())


# An attachment the peer `:peer` may hold: one of a case it qualifies for, or of a
# message of a request there that one of its agencies is a party to.
_SHARED = sa.select(ATTACHMENTS.c.sha256, ATTACHMENTS.c.size).where(
    ATTACHMENTS.c.id == sa.bindparam("attachment_id"),
    sa.or_(
        _case_qualifies(ATTACHMENTS.c.case_id),
        sa.exists().where(
            REQUESTS.c.id == ATTACHMENTS.c.request_id,
            access.peer_is_party(REQUESTS),
            _case_qualifies(REQUESTS.c.case_id),
        ),
    ),
)


async def serve(db: Statements, storage: Storage, peer: str, attachment_id: uuid.UUID) -> StreamingResponse:
    """The home's side: the file of an attachment `peer` may hold; 404 for any other."""
    shared = await db.first(_SHARED, {"attachment_id": attachment_id, "peer": peer})
    if shared is None:
        raise AppError(404, "No such attachment for this peer.", slug="not-found")
    try:
        source = await anyio.to_thread.run_sync(storage.open, shared.sha256)
    except FileNotFoundError:
        raise AppError(
            503, "The file is not available right now.", slug="file-unavailable", headers={"Retry-After": "5"}
        ) from None
    headers = {"Content-Length": str(shared.size), "Content-Type": "application/octet-stream"}
    return StreamingResponse(copy_chunks(source, _READ_CHUNK, 0, shared.size), headers=headers)


async def fetch(
    db: Database, me: Identity, home: Row, storage: Storage, cases: list[Any], max_bytes: int
) -> list[Staged]:
    """The peer's side: stage the files the delivery's snapshots and amendments name, each
    checked against its row; all or none (a failure removes what was staged).
    Only for cases `home` may send (mirror.may_send: 403 before any byte is
    fetched), no file over `max_bytes`, and every file a case's mirror does not
    name yet, even one this instance holds for another case: a home cannot
    name a file it does not have and have it served here. 502 when the home
    does not serve one."""
    wanted: dict[str, tuple[uuid.UUID, int]] = {}
    for case in cases:
        # As service.receive() reads it: an amendment's changes, or a snapshot's rows.
        rows = (
            (case["changes"] if "changes" in case else case.get("rows")) if isinstance(case, dict) else None
        )
        if rows is None:
            continue
        case_id = await mirror.may_send(db, home.instance_id, case)
        named = {row.sha256 for row in await db.all(mirror.held_files(), {"case_id": case_id})}
        for attachment_id, (sha256, size) in mirror.files_named(rows).items():
            if size > max_bytes:
                raise mirror.MalformedDelivery(
                    f"attachment {attachment_id} is larger than this instance takes"
                )
            if sha256 not in named:
                wanted.setdefault(sha256, (attachment_id, size))
    staged: list[Staged] = []
    if not wanted:
        return staged
    await claim_for_upload(db, storage)
    try:
        async with httpx.AsyncClient(timeout=FETCH_TIMEOUT, follow_redirects=False) as http:
            for sha256, (attachment_id, size) in wanted.items():
                staged.append(await _fetch_one(http, me, home, storage, attachment_id, sha256, size))
    except BaseException:
        discard(staged)
        raise
    return staged


async def _fetch_one(
    http: httpx.AsyncClient,
    me: Identity,
    home: Row,
    storage: Storage,
    attachment_id: uuid.UUID,
    sha256: str,
    size: int,
) -> Staged:
    url = home.url + CONTENT_PATH.format(attachment_id=attachment_id)
    try:
        async with http.stream("GET", url, headers=signatures.sign(me, "GET", url, b"")) as response:
            if response.status_code != 200:
                raise _unfetched(attachment_id, f"it answered {response.status_code}")
            try:
                got = await receive_file(response.aiter_bytes(), storage, max_bytes=size)
            except AppError:  # more bytes than the row says
                raise mirror.MalformedDelivery(
                    f"the file of attachment {attachment_id} is not its row's"
                ) from None
    except httpx.HTTPError as exc:
        raise _unfetched(attachment_id, type(exc).__name__) from None
    if (got.sha256, got.size) != (sha256, size):
        got.path.unlink(missing_ok=True)
        raise _not_its_rows(attachment_id)
    return got


def _not_its_rows(attachment_id: uuid.UUID) -> AppError:
    return mirror.MalformedDelivery(f"the file of attachment {attachment_id} is not the one its row names")


def _unfetched(attachment_id: uuid.UUID, why: str) -> AppError:
    return AppError(
        502, f"The file of attachment {attachment_id} could not be fetched from its home ({why})."
    )


async def place_all(storage: Storage, staged: list[Staged]) -> None:
    """Once the rows that name them committed."""
    for file in staged:
        await anyio.to_thread.run_sync(place, storage, file)


def discard(staged: list[Staged]) -> None:
    for file in staged:
        file.path.unlink(missing_ok=True)
