"""Attachments of cases and of request messages: access, streaming, journal, storage.

Who sees an attachment is who sees its parent: a case's attachment those
who read the case in full; a message's attachment the request's two
agencies (access.sees_request). Adding or deleting one is a change of the
parent (lead or partner with `write` for a case; the message's author
agency for a message). Every download (200 or 206) writes an audit entry
(no feed event), like a disclosure of personal data.

Order of things for an upload: access (and the agency's storage quota,
for a declared size) is checked before a byte of the body is read; the
body is streamed to a staging file and hashed; the quota is checked again
on the size received, and the row and its journal commit; only then does
the file move into place (see app.attachments.storage). A deletion
commits first and removes the file after, when no row names its sha256
any more.

The storage lock (Storage.lock) is a file lock that may be held for a
while (a bundle import holds it until its commit): it is waited for in
threads of its own (storage_locked), never in the threads that run SQLite's
statements, which its holder may need.
"""

import base64
import binascii
import contextlib
import errno
import functools
import logging
import re
import unicodedata
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import anyio
import anyio.to_thread
import sqlalchemy as sa
from anyio.lowlevel import RunVar
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite

from app import access
from app.agencies.models import Agency
from app.attachments.models import Attachment, AttachmentPublic, DatabaseIdentity, control_free, media_type
from app.attachments.storage import Staged, Storage, StorageOfAnotherDatabase
from app.auth.service import Principal
from app.cases.models import Case
from app.core.crud import row_type
from app.core.db import create_db_engine, new_row, table_of, utcnow
from app.core.errors import AppError, conflict, forbidden, invalid, not_found
from app.core.http import public
from app.core.journal import record
from app.core.pagination import PageParams, rows_under
from app.core.uow import Database, Row, Statements, Tx, one_of, one_of_params
from app.requests import service as requests
from app.requests.models import RequestStatus

log = logging.getLogger("caseapi.attachments")

CASE_RESOURCE = "attachment"
# Its events reach the request's two agencies only, like the request's own (app.events).
MESSAGE_RESOURCE = "message_attachment"

ATTACHMENTS = table_of(Attachment)
AGENCIES = table_of(Agency)
CASES = table_of(Case)
IDENTITY = table_of(DatabaseIdentity)
KEYS = (ATTACHMENTS.c.created_at, ATTACHMENTS.c.id)

_WRITE_CHUNK = 1024 * 1024  # bytes gathered before one write to the staging file
_REPR_DIGEST_SHA256 = re.compile(r"(?:^|,)\s*sha-256\s*=\s*:([A-Za-z0-9+/=]*):")
DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Parent:
    """What an attachment hangs on: a case, or a message of a request (with the request's two agencies)."""

    case_id: uuid.UUID | None = None
    request_id: uuid.UUID | None = None
    message_id: uuid.UUID | None = None
    parties: tuple[uuid.UUID, uuid.UUID] | None = None

    @property
    def scope(self) -> str:
        return f"attachments:{self.case_id}" if self.case_id else f"message-attachments:{self.message_id}"


ParentLookup = Callable[[Statements, Principal], Awaitable[Parent]]


def case_for_reader(case_id: uuid.UUID) -> ParentLookup:
    async def lookup(db: Statements, p: Principal) -> Parent:
        await access.readable_case(db, p, case_id)
        return Parent(case_id=case_id)

    return lookup


def case_for_writer(case_id: uuid.UUID) -> ParentLookup:
    async def lookup(db: Statements, p: Principal) -> Parent:
        await access.writable_case(db, p, case_id)
        return Parent(case_id=case_id)

    return lookup


def _message_parent(req: Row, message_id: uuid.UUID) -> Parent:
    return Parent(request_id=req.id, message_id=message_id, parties=requests.parties(req))


def message_for_reader(request_id: uuid.UUID, message_id: uuid.UUID) -> ParentLookup:
    async def lookup(db: Statements, p: Principal) -> Parent:
        req = await requests.get_request(db, p, request_id)
        await requests.get_message(db, request_id, message_id)
        return _message_parent(req, message_id)

    return lookup


def message_for_writer(request_id: uuid.UUID, message_id: uuid.UUID) -> ParentLookup:
    """Only the agency that wrote the message attaches files to it."""

    async def lookup(db: Statements, p: Principal) -> Parent:
        req = await requests.get_request(db, p, request_id)
        message = await requests.get_message(db, request_id, message_id)
        if message.from_agency_id != p.agency_id:
            raise forbidden("Only the agency that wrote the message attaches files to it.")
        if req.status == RequestStatus.withdrawn:
            raise conflict("The sender withdrew this request; it takes no more files.")
        return _message_parent(req, message_id)

    return lookup


# --- reading and changing rows ------------------------------------------------


async def list_attachments(
    db: Statements, parent: Parent, params: PageParams
) -> tuple[list[Row], str | None]:
    """A page of the attachments of `parent` (which the caller's lookup found)."""
    column, parent_id = (
        (ATTACHMENTS.c.case_id, parent.case_id)
        if parent.case_id is not None
        else (ATTACHMENTS.c.message_id, parent.message_id)
    )
    return await rows_under(db, column, parent_id, params, scope=parent.scope, keys=KEYS)


def _seen(stmt: sa.Select[Any]) -> sa.Select[Any]:
    """Only the attachments whose case the caller sees in full, or whose request
    is between the caller's agency and another (bind `access.principal_params`)."""
    req = requests.REQUESTS
    return (
        stmt.outerjoin(CASES, CASES.c.id == ATTACHMENTS.c.case_id)
        .outerjoin(req, req.c.id == ATTACHMENTS.c.request_id)
        .where(
            sa.or_(
                sa.and_(ATTACHMENTS.c.case_id.is_not(None), access.sees_case_in_full()),
                sa.and_(
                    ATTACHMENTS.c.request_id.is_not(None),
                    access.sees_request(req.c.from_agency_id, req.c.to_agency_id),
                ),
            )
        )
    )


@functools.cache
def _visible_statement(*, for_update: bool) -> sa.Select[Any]:
    """The attachment (and its request's two agencies), only when the caller
    sees it: one statement, so that a hidden attachment answers as a missing
    one does, no row, at the same cost."""
    req = requests.REQUESTS
    stmt = sa.select(
        ATTACHMENTS,
        req.c.from_agency_id.label("request_from_agency_id"),
        req.c.to_agency_id.label("request_to_agency_id"),
    )
    stmt = _seen(stmt).where(ATTACHMENTS.c.id == sa.bindparam("attachment_id"))
    return stmt.with_for_update(of=ATTACHMENTS) if for_update else stmt


# Values per statement of an IN list: far below any driver's limit on parameters.
_IN_CHUNK = 500


def _chunks(values: Iterable[str]) -> Iterator[list[str]]:
    """The distinct `values` in lists of one or of _IN_CHUNK, a short list padded
    with its first value (a repeated value changes nothing in an IN list): two
    statement shapes in all, each prepared once."""
    wanted = sorted(set(values))
    for start in range(0, len(wanted), _IN_CHUNK):
        chunk = wanted[start : start + _IN_CHUNK]
        if len(chunk) > 1:
            chunk += chunk[:1] * (_IN_CHUNK - len(chunk))
        yield chunk


@functools.cache
def _visible_files_statement(count: int) -> sa.Select[Any]:
    stmt = sa.select(ATTACHMENTS.c.sha256, ATTACHMENTS.c.size).where(
        one_of(ATTACHMENTS.c.sha256, "sha", count)
    )
    return _seen(stmt).distinct()


async def visible_files(db: Statements, p: Principal, shas: Iterable[str]) -> dict[str, int]:
    """The size of each of these files that the caller can already download
    (an attachment of a case it sees in full or of one of its requests).

    Knowing a file's sha256 is not having the file: a digest is quoted in
    reports, requests and custody records. Only what the caller can already
    read is offered again under its sha256.
    """
    found: dict[str, int] = {}
    for chunk in _chunks(shas):
        values = access.principal_params(p) | one_of_params("sha", chunk)
        found.update(
            (row.sha256, row.size) for row in await db.all(_visible_files_statement(len(chunk)), values)
        )
    return found


def _parent_of(attachment: Row) -> Parent:
    """The parent of a row of _visible_statement(), whose access that statement checked."""
    if attachment.case_id is not None:
        return Parent(case_id=attachment.case_id)
    parties = (attachment.request_from_agency_id, attachment.request_to_agency_id)
    return Parent(request_id=attachment.request_id, message_id=attachment.message_id, parties=parties)


async def _visible(db: Statements, p: Principal, attachment_id: uuid.UUID, *, for_update: bool) -> Row:
    values = access.principal_params(p) | {"attachment_id": attachment_id}
    attachment = await db.first(_visible_statement(for_update=for_update), values)
    if attachment is None:
        raise not_found("attachment")
    return attachment


async def readable_attachment(db: Statements, p: Principal, attachment_id: uuid.UUID) -> tuple[Row, Parent]:
    """An attachment whose parent the caller reads; 404 (the same as a missing one) otherwise."""
    attachment = await _visible(db, p, attachment_id, for_update=False)
    return attachment, _parent_of(attachment)


async def writable_attachment(tx: Tx, p: Principal, attachment_id: uuid.UUID) -> tuple[Row, Parent]:
    """An attachment the caller may delete, locked until commit."""
    attachment = await _visible(tx, p, attachment_id, for_update=True)
    parent = _parent_of(attachment)
    if parent.case_id is not None:
        await access.writable_case(tx, p, parent.case_id)
    elif attachment.uploaded_by_agency_id != p.agency_id:
        raise forbidden("Only the agency that attached the file deletes it.")
    return attachment, parent


def _record(
    tx: Tx, p: Principal, attachment_id: uuid.UUID, parent: Parent, action: str, *, emit_event: bool = True
) -> None:
    """Journal an attachment's change (or, emit_event=False, its disclosure) as its parent's."""
    if parent.parties is not None:
        # No case_id: like the request's own records (app.requests.service).
        record(
            tx,
            p.actor,
            action=action,
            resource_type=MESSAGE_RESOURCE,
            resource_id=attachment_id,
            case_id=None,
            emit_event=emit_event,
            request_parties=parent.parties,
            request_id=parent.request_id,
        )
        return
    record(
        tx,
        p.actor,
        action=action,
        resource_type=CASE_RESOURCE,
        resource_id=attachment_id,
        case_id=parent.case_id,
        emit_event=emit_event,
    )


async def add_attachment(
    tx: Tx, p: Principal, parent: Parent, staged: Staged, *, filename: str, content_type: str
) -> Row:
    row = new_row(
        Attachment,
        case_id=parent.case_id,
        request_id=parent.request_id,
        message_id=parent.message_id,
        uploaded_by_agency_id=p.agency_id,
        filename=filename,
        content_type=content_type,
        size=staged.size,
        sha256=staged.sha256,
    )
    await tx.insert([(ATTACHMENTS, [row])])
    _record(tx, p, row["id"], parent, "attachment.created")
    return row_type(ATTACHMENTS)(**row)


_DELETE = sa.delete(ATTACHMENTS).where(ATTACHMENTS.c.id == sa.bindparam("attachment_id"))


async def delete_attachment(tx: Tx, p: Principal, attachment: Row, parent: Parent) -> None:
    await tx.execute(_DELETE, {"attachment_id": attachment.id})
    _record(tx, p, attachment.id, parent, "attachment.deleted")


def to_public(attachment: Row) -> AttachmentPublic:
    return public(AttachmentPublic, attachment)


# --- uploads ---------------------------------------------------------------------


@dataclass(frozen=True)
class UploadMeta:
    filename: str
    content_type: str
    expected_sha256: str | None
    idempotency_key: str | None


def upload_meta(
    filename: str,
    sha256: str | None,
    *,
    content_type: str | None,
    repr_digest: str | None,
    idempotency_key: str | None,
) -> UploadMeta:
    """Validate what comes with the body (the query's name and digest, and the
    Content-Type, Repr-Digest and Idempotency-Key headers), before the body is read."""
    try:
        control_free(filename)
    except ValueError as exc:
        raise invalid(["query", "filename"], str(exc)) from None
    try:
        stored_type = media_type(content_type if content_type is not None else DEFAULT_CONTENT_TYPE)
    except ValueError as exc:
        raise invalid(["header", "content-type"], str(exc)) from None
    expected = [sha256] if sha256 else []
    if repr_digest is not None:
        expected.append(_sha256_of_repr_digest(repr_digest))
    if len(set(expected)) > 1:
        raise invalid(["header", "repr-digest"], "Repr-Digest and ?sha256= name different digests.")
    if idempotency_key is not None and not 1 <= len(idempotency_key) <= 200:
        raise invalid(["header", "idempotency-key"], "Idempotency-Key must be 1 to 200 characters.")
    return UploadMeta(filename, stored_type, expected[0] if expected else None, idempotency_key)


def _sha256_of_repr_digest(header: str) -> str:
    """RFC 9530: `Repr-Digest: sha-256=:<base64>:`; other algorithms are not checked, so they are refused."""
    found = _REPR_DIGEST_SHA256.search(header)
    bad = invalid(["header", "repr-digest"], "Repr-Digest must carry sha-256=:<base64 of 32 bytes>:.")
    if found is None:
        raise bad
    try:
        raw = base64.b64decode(found.group(1), validate=True)
    except binascii.Error as exc:
        raise bad from exc
    if len(raw) != 32:
        raise bad
    return raw.hex()


def too_large(max_bytes: int) -> AppError:
    return AppError(
        413,
        f"The file is larger than {max_bytes} bytes.",
        slug="content-too-large",
        headers={"Connection": "close"},
    )


_INSUFFICIENT_STORAGE = "Insufficient Storage"
_DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


@contextlib.contextmanager
def disk_full_is_507() -> Iterator[None]:
    """A full disk (or the file system's quota) is the server's condition, not a
    fault of the upload: 507, and a line for the operator, never a 500."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in _DISK_FULL:
            raise
        log.error("attachment storage full: %s", exc.strerror)
        raise AppError(
            507,
            "The server has no room for the file now; nothing was stored.",
            slug="insufficient-storage",
            title=_INSUFFICIENT_STORAGE,
        ) from None


_USED_BYTES = sa.select(sa.func.coalesce(sa.func.sum(ATTACHMENTS.c.size), 0)).where(
    ATTACHMENTS.c.uploaded_by_agency_id == sa.bindparam("agency_id")
)
_LOCK_AGENCY = sa.select(AGENCIES.c.id).where(AGENCIES.c.id == sa.bindparam("agency_id")).with_for_update()


async def used_bytes(db: Statements, agency_id: uuid.UUID) -> int:
    """What an agency's uploads take: the sizes of the attachments it uploaded."""
    return int(await db.scalar(_USED_BYTES, {"agency_id": agency_id}))


async def check_quota(db: Statements, p: Principal, adding: int, quota: int | None, *, lock: bool) -> None:
    """507 when the caller's agency would go past its quota with `adding` more bytes.

    With `lock`, the agency's row is locked until commit (SQLite: the write
    transaction is already exclusive), so two uploads of one agency cannot
    both pass on the same sum.
    """
    if quota is None:
        return
    if lock:
        await db.all(_LOCK_AGENCY, {"agency_id": p.agency_id})
    used = await used_bytes(db, p.agency_id)
    if used + adding > quota:
        raise AppError(
            507,
            f"Your agency's attachments would exceed its storage quota of {quota} bytes "
            f"({used} bytes used); delete some or ask the operator for more.",
            slug="storage-quota-exceeded",
            title=_INSUFFICIENT_STORAGE,
            extra={"quota_bytes": quota, "used_bytes": used},
        )


async def receive_file(chunks: AsyncIterator[bytes], storage: Storage, max_bytes: int) -> Staged:
    """Stream the body's `chunks` to a staging file, hashing as it goes; never
    more than about one write chunk of it in memory. Whatever ends it early
    (too large, stalled, the client gone, a full disk) removes the staging file."""
    with disk_full_is_507():
        writer = await anyio.to_thread.run_sync(storage.staging.writer)
        pending = bytearray()
        try:
            async for chunk in chunks:
                if writer.size + len(pending) + len(chunk) > max_bytes:
                    raise too_large(max_bytes)
                pending += chunk
                if len(pending) >= _WRITE_CHUNK:
                    block, pending = bytes(pending), bytearray()
                    await anyio.to_thread.run_sync(writer.write, block)
            await anyio.to_thread.run_sync(writer.write, bytes(pending))
            return await anyio.to_thread.run_sync(writer.seal)
        except BaseException:
            with anyio.CancelScope(shield=True):  # removed even when the request is cancelled
                await anyio.to_thread.run_sync(writer.discard)
            raise


@dataclass
class Upload:
    """A received file on its way in: the unit of work its row commits in (commit_upload)."""

    tx: Tx
    staged: Staged
    meta: UploadMeta
    added: bool = False

    async def add(self, p: Principal, parent: Parent, quota: int | None) -> Row:
        """The attachment's row, within the agency's quota (checked again on the size received)."""
        await check_quota(self.tx, p, self.staged.size, quota, lock=True)
        attachment = await add_attachment(
            self.tx, p, parent, self.staged, filename=self.meta.filename, content_type=self.meta.content_type
        )
        self.added = True
        return attachment


@contextlib.asynccontextmanager
async def commit_upload(
    db: Database, storage: Storage, staged: Staged, meta: UploadMeta
) -> AsyncIterator[Upload]:
    """The unit of work of a received file: its row and journal commit when
    the block ends (Upload.add); only then does the file move into place. A
    block that adds no row (a replay of an earlier upload) keeps nothing, and
    one that fails, or a digest other than the one sent, removes the file."""
    try:
        if meta.expected_sha256 is not None and meta.expected_sha256 != staged.sha256:
            raise invalid(["header", "repr-digest"], "The file's sha256 is not the digest that was sent.")
        async with db.transaction() as tx:
            upload = Upload(tx, staged, meta)
            yield upload
    except BaseException:
        staged.path.unlink(missing_ok=True)
        raise
    if upload.added:
        await anyio.to_thread.run_sync(place, storage, staged, limiter=_lock_waiters())
    else:
        staged.path.unlink(missing_ok=True)


def place(storage: Storage, staged: Staged) -> None:
    """Move a committed upload into place. A failure leaves the sealed
    staging file, which the sweeper moves into place later."""
    try:
        with storage.lock():
            if storage.exists(staged.sha256):
                staged.path.unlink(missing_ok=True)
            else:
                storage.put(staged.sha256, staged.path)
    except OSError:
        log.exception(
            "attachment %s committed but not moved into place; `caseapi storage sweep` will", staged.sha256
        )


# --- the storage lock, and which database the files belong to ----------------------

# Threads that wait for the storage lock, per event loop: never those of
# the default pool, where SQLite's statements run (the holder's among them).
_LOCK_WAITERS: RunVar[anyio.CapacityLimiter] = RunVar("storage_lock_waiters")


def _lock_waiters() -> anyio.CapacityLimiter:
    try:
        return _LOCK_WAITERS.get()
    except LookupError:
        limiter = anyio.CapacityLimiter(8)
        _LOCK_WAITERS.set(limiter)
        return limiter


@contextlib.asynccontextmanager
async def storage_locked(storage: Storage) -> AsyncIterator[None]:
    """storage.lock(), held across the block's statements."""
    held = storage.lock()
    await anyio.to_thread.run_sync(held.__enter__, limiter=_lock_waiters())
    try:
        yield
    finally:
        held.__exit__(None, None, None)  # an unlock does not wait


@functools.cache
def _referenced_statement(count: int) -> sa.Select[Any]:
    return sa.select(ATTACHMENTS.c.sha256).where(one_of(ATTACHMENTS.c.sha256, "sha", count)).distinct()


async def _referenced(db: Statements, shas: Iterable[str]) -> set[str]:
    """Which of these files a row names."""
    found: set[str] = set()
    for chunk in _chunks(shas):
        rows = await db.all(_referenced_statement(len(chunk)), one_of_params("sha", chunk))
        found.update(row.sha256 for row in rows)
    return found


async def release(db: Database, storage: Storage, sha256: str) -> None:
    """After a deletion committed: remove the file unless another row still names it.
    Under the storage lock, so an upload of the same content cannot commit and
    move its file in between the check and the removal."""
    try:
        await claim_storage(db, storage)
    except StorageOfAnotherDatabase as exc:
        # Another database's rows may name the file: it stays.
        log.error("file %s kept: %s", sha256, exc)
        return
    async with storage_locked(storage):
        if not await _referenced(db, [sha256]):
            storage.delete(sha256)


_DATABASE_ID = sa.select(IDENTITY.c.database_id)


@functools.cache
def _mark_database(dialect_name: str) -> sa.Executable:
    insert = postgresql.insert if dialect_name == "postgresql" else sqlite.insert
    values = {
        "slot": 1,
        "database_id": sa.bindparam("new_id", type_=IDENTITY.c.database_id.type),
        "created_at": sa.bindparam("at", type_=IDENTITY.c.created_at.type),
    }
    return insert(IDENTITY).values(values).on_conflict_do_nothing()


async def _database_id(tx: Tx) -> str:
    """This database's id, made on first use (once, whoever comes first)."""
    known = await tx.scalar(_DATABASE_ID)
    if known is None:
        await tx.execute(_mark_database(tx.dialect_name), {"new_id": uuid.uuid4(), "at": utcnow()})
        known = await tx.scalar(_DATABASE_ID)
    return str(known)


async def claim_storage(db: Database, storage: Storage) -> None:
    """Before the first write or deletion of this process: the storage directory is
    this database's (marked now if it carries no mark yet), else StorageOfAnotherDatabase."""
    if storage.claimed_by is not None:
        return
    database_id = await db.run(_database_id)
    await anyio.to_thread.run_sync(storage.claim, database_id, limiter=_lock_waiters())


async def claim_for_upload(db: Database, storage: Storage) -> None:
    """claim_storage() for a request: a directory of another database is the
    operator's mistake, a 503 for the client and an error in the log."""
    try:
        with disk_full_is_507():
            await claim_storage(db, storage)
    except StorageOfAnotherDatabase as exc:
        log.error("upload refused: %s", exc)
        raise AppError(503, "The file storage is not available.", slug="storage-unavailable") from None


def check_storage(database_url: str, storage: Storage) -> None:
    """At start-up, as the app is made (app.main), which may be before any event
    loop runs: StorageOfAnotherDatabase when the directory carries another
    database's mark. A database that does not answer yet (or is not migrated)
    cannot say: the first upload or deletion checks again. One connection,
    closed at once, as migrations use."""
    owner = storage.owner()
    if owner is None:
        return
    engine = create_db_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            found = conn.execute(_DATABASE_ID).scalar_one_or_none()
    except sa_exc.DBAPIError:
        return
    finally:
        engine.dispose()
    database_id = str(found) if found is not None else None
    if database_id != owner:
        raise StorageOfAnotherDatabase(storage.location, owner, database_id)


# --- downloads ---------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """What a request for a file's content gets: 200 (all of it), 206 (bytes
    `start` to `end`, inclusive) or 304 (nothing: the caller's copy is current)."""

    status: int
    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1 if self.status != 304 else 0


_BYTE_RANGE = re.compile(r"bytes=(\d{0,19})-(\d{0,19})")
_ENTITY_TAG = re.compile(r'(?:W/)?"[\x21\x23-\x7e]*"|\*')


def _current(if_none_match: str, etag: str) -> bool:
    """RFC 9110 13.1.2, weak comparison: `*`, or any listed tag equal to ours."""
    return any(tag in ("*", etag, "W/" + etag) for tag in _ENTITY_TAG.findall(if_none_match))


@dataclass(frozen=True)
class Conditions:
    """The request headers that shape what of a file is sent."""

    byte_range: str | None = None
    if_none_match: str | None = None
    if_range: str | None = None


def plan_delivery(conditions: Conditions, attachment: Row) -> Delivery:
    """RFC 9110's order: If-None-Match first (304), then a single byte Range (206, or
    416 when none of it lies within the file), honoured only while If-Range still
    names the file. A Range this service does not serve (several ranges, another
    unit, a malformed one) is ignored: the whole file, as the RFC allows."""
    size, etag = attachment.size, f'"{attachment.sha256}"'
    whole = Delivery(200, 0, size - 1)
    if conditions.if_none_match is not None and _current(conditions.if_none_match, etag):
        return Delivery(304, 0, -1)
    found = _BYTE_RANGE.fullmatch((conditions.byte_range or "").strip())
    if found is None or (conditions.if_range is not None and conditions.if_range.strip() != etag):
        return whole
    first, last = found.groups()
    if not first:  # the last `last` bytes
        if not last:
            return whole
        if int(last) == 0 or size == 0:
            raise range_not_satisfiable(size)
        return Delivery(206, max(size - int(last), 0), size - 1)
    start = int(first)
    end = min(int(last), size - 1) if last else size - 1
    if last and int(last) < start:
        return whole  # not a valid range: ignored
    if start >= size:
        raise range_not_satisfiable(size)
    return Delivery(206, start, end)


def range_not_satisfiable(size: int) -> AppError:
    return AppError(
        416,
        f"The range lies outside the file, which has {size} bytes.",
        slug="range-not-satisfiable",
        title="Range Not Satisfiable",
        headers={"Content-Range": f"bytes */{size}"},
    )


async def open_content(
    tx: Tx, storage: Storage, p: Principal, attachment_id: uuid.UUID, conditions: Conditions, *, send: bool
) -> tuple[Row, Delivery, BinaryIO | None]:
    """The attachment, what to send of it and, when bytes go out (`send`, a GET,
    answered 200 or 206), its open file, the download audited in `tx`: a
    download that cannot be audited does not happen (the caller closes the
    file should the commit fail). HEAD and 304 disclose only what the metadata
    route does (size, type, sha256), so they are not audited."""
    attachment, parent = await readable_attachment(tx, p, attachment_id)
    delivery = plan_delivery(conditions, attachment)
    if not send or delivery.status == 304:
        return attachment, delivery, None
    _record(tx, p, attachment.id, parent, "attachment.downloaded", emit_event=False)
    try:
        source = await anyio.to_thread.run_sync(storage.open, attachment.sha256)
    except FileNotFoundError as exc:
        raise AppError(
            503, "The file is not available right now.", slug="file-unavailable", headers={"Retry-After": "5"}
        ) from exc
    return attachment, delivery, source


# Characters RFC 8187 lets stand in `filename*`; everything else is percent-encoded.
_ATTR_CHARS = "!#$&+-.^_`|~"
_ASCII_FALLBACK = re.compile(r"[^A-Za-z0-9!#$&+\-.^_`|~ ()\[\]{}@=,]")


def _hidden(ch: str) -> bool:
    """Control and format characters: line breaks, and the bidirectional overrides
    that make `report\u202efdp.exe` show as `reportexe.pdf`."""
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp")


def content_disposition(filename: str) -> str:
    """`attachment` with the stored name, safe for any name a client chose:
    no path (separators become `_`), no control or format characters, no quote that
    would end the parameter, and the real name in UTF-8 as `filename*`."""
    name = "".join("_" if _hidden(ch) else ch for ch in filename)
    name = re.sub(r"[/\\]", "_", name).lstrip(".") or "attachment"
    fallback = _ASCII_FALLBACK.sub("_", name)
    encoded = urllib.parse.quote(name, safe=_ATTR_CHARS, encoding="utf-8")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{encoded}"


@dataclass
class SweepReport:
    """What a sweep moved into place and removed or, without `apply`, would."""

    recovered: list[str] = field(default_factory=list)  # sha256 of committed uploads
    staging_removed: list[str] = field(default_factory=list)  # names of staging files
    files_removed: list[str] = field(default_factory=list)  # sha256 of files no row names


async def sweep(db: Database, storage: Storage, *, older_than: float, apply: bool) -> SweepReport:
    """Bring the files in line with the rows (only list how, without `apply`).

    Staging files untouched for `older_than` seconds: a sealed one whose
    sha256 a row names but whose file is missing (the process died after
    the commit) moves into place; every other is removed (an upload that
    died before its commit, or a duplicate). Stored files no row names are
    removed. `older_than` spares uploads in flight in other processes. The
    directory must be this database's (claim_storage), or nothing happens.
    """
    await claim_storage(db, storage)
    report = SweepReport()
    async with storage_locked(storage):
        for path, sha256 in storage.staging.stale(older_than):
            if (
                sha256 is not None
                and sha256 not in report.recovered
                and not storage.exists(sha256)
                and await _referenced(db, [sha256])
            ):
                report.recovered.append(sha256)
                if apply:
                    storage.put(sha256, path)
            else:
                report.staging_removed.append(path.name)
                if apply:
                    path.unlink(missing_ok=True)
        batch: list[str] = []
        for name in storage.names():
            batch.append(name)
            if len(batch) == _IN_CHUNK:
                report.files_removed += await _unreferenced(db, storage, batch, apply=apply)
                batch = []
        report.files_removed += await _unreferenced(db, storage, batch, apply=apply)
    return report


async def _unreferenced(db: Statements, storage: Storage, names: list[str], *, apply: bool) -> list[str]:
    orphans = sorted(set(names) - await _referenced(db, names))
    if apply:
        for name in orphans:
            storage.delete(name)
    return orphans
