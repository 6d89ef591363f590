"""Attachments of cases and of request messages: access, streaming, journal, storage.

Who sees an attachment is who sees its parent: a case's attachment those
who read the case in full; a message's attachment the request's two
agencies. Adding or deleting one is a change of the parent (lead or
partner with `write` for a case; the message's author agency for a
message). Every download (200 or 206) writes an audit entry (no feed
event), like a disclosure of personal data.

Order of things for an upload: access (and the agency's storage quota,
for a declared size) is checked before a byte of the body is read; the
body is streamed to a staging file and hashed; the quota is checked again
on the size received, and the row and its journal commit; only then does
the file move into place (see app.attachments.storage). A deletion
commits first and removes the file after, when no row names its sha256
any more.
"""

import base64
import binascii
import errno
import functools
import hashlib
import logging
import re
import unicodedata
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import anyio.to_thread
import sqlalchemy as sa
from fastapi import Request, Response
from sqlalchemy import exc as sa_exc
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from starlette.requests import ClientDisconnect

from app import access
from app.agencies.models import Agency
from app.attachments.models import Attachment, AttachmentPublic, DatabaseIdentity, control_free, media_type
from app.attachments.storage import Staged, Storage, StorageOfAnotherDatabase
from app.auth.service import Principal
from app.cases.models import Case
from app.db import transaction, utcnow
from app.errors import AppError, conflict, forbidden, invalid, not_found
from app.http import api_path, created
from app.idempotency.service import IdempotencyKey, create_once_sync
from app.journal import record
from app.pagination import PageParams, paginate_sync
from app.requests import service as requests
from app.requests.models import InformationRequest, RequestStatus

log = logging.getLogger("caseapi.attachments")

CASE_RESOURCE = "attachment"
# Its events reach the request's two agencies only, like the request's own (app.events).
MESSAGE_RESOURCE = "message_attachment"

_WRITE_CHUNK = 1024 * 1024  # bytes gathered before one write to the staging file
_REPR_DIGEST_SHA256 = re.compile(r"(?:^|,)\s*sha-256\s*=\s*:([A-Za-z0-9+/=]*):")
DEFAULT_CONTENT_TYPE = "application/octet-stream"


@dataclass(frozen=True)
class Parent:
    """What an attachment hangs on: a case, or a message of a request."""

    case_id: uuid.UUID | None = None
    request: InformationRequest | None = None
    message_id: uuid.UUID | None = None

    @property
    def scope(self) -> str:
        return f"attachments:{self.case_id}" if self.case_id else f"message-attachments:{self.message_id}"


ParentLookup = Callable[[Session, Principal], Parent]


def case_for_reader(case_id: uuid.UUID) -> ParentLookup:
    def lookup(session: Session, p: Principal) -> Parent:
        access.readable_case_sync(session, p, case_id)
        return Parent(case_id=case_id)

    return lookup


def case_for_writer(case_id: uuid.UUID) -> ParentLookup:
    def lookup(session: Session, p: Principal) -> Parent:
        access.writable_case_sync(session, p, case_id)
        return Parent(case_id=case_id)

    return lookup


def message_for_reader(request_id: uuid.UUID, message_id: uuid.UUID) -> ParentLookup:
    def lookup(session: Session, p: Principal) -> Parent:
        req = requests.get_request(session, p, request_id)
        requests.get_message(session, request_id, message_id)
        return Parent(request=req, message_id=message_id)

    return lookup


def message_for_writer(request_id: uuid.UUID, message_id: uuid.UUID) -> ParentLookup:
    """Only the agency that wrote the message attaches files to it."""

    def lookup(session: Session, p: Principal) -> Parent:
        req = requests.get_request(session, p, request_id)
        message = requests.get_message(session, request_id, message_id)
        if message.from_agency_id != p.agency_id:
            raise forbidden("Only the agency that wrote the message attaches files to it.")
        if req.status == RequestStatus.withdrawn:
            raise conflict("The sender withdrew this request; it takes no more files.")
        return Parent(request=req, message_id=message_id)

    return lookup


# --- reading and changing rows ------------------------------------------------


def list_attachments(
    session: Session, parent: Parent, params: PageParams
) -> tuple[list[Attachment], str | None]:
    column = Attachment.case_id if parent.case_id else Attachment.message_id
    return paginate_sync(
        session,
        sa.select(Attachment).where(column == (parent.case_id or parent.message_id)),
        params,
        scope=parent.scope,
        keys=(Attachment.created_at, Attachment.id),
    )


def _parent_of(session: Session, p: Principal, attachment: Attachment) -> Parent:
    if attachment.case_id is not None:
        return case_for_reader(attachment.case_id)(session, p)
    assert attachment.request_id is not None and attachment.message_id is not None
    return Parent(
        request=requests.get_request(session, p, attachment.request_id), message_id=attachment.message_id
    )


def _seen(stmt: sa.Select[Any]) -> sa.Select[Any]:
    """Only the attachments whose case the caller sees in full, or whose request
    is between the caller's agency and another (bind `access.principal_params`)."""
    agency = sa.bindparam("agency_id")
    return (
        stmt.outerjoin(Case, Case.id == Attachment.case_id)
        .outerjoin(InformationRequest, InformationRequest.id == Attachment.request_id)
        .where(
            sa.or_(
                sa.and_(Attachment.case_id.is_not(None), access.sees_case_in_full()),
                sa.and_(
                    Attachment.request_id.is_not(None),
                    sa.or_(
                        InformationRequest.from_agency_id == agency, InformationRequest.to_agency_id == agency
                    ),
                ),
            )
        )
    )


@functools.cache
def _visible_statement(*, for_update: bool) -> sa.Select[Any]:
    """The attachment, only when the caller sees it: one statement, so that a
    hidden attachment answers as a missing one does, no row, at the same cost."""
    stmt = _seen(sa.select(Attachment)).where(Attachment.id == sa.bindparam("attachment_id"))
    return stmt.with_for_update(of=Attachment) if for_update else stmt  # type: ignore[arg-type]


@functools.cache
def _visible_files_statement() -> sa.Select[Any]:
    stmt = sa.select(Attachment.sha256, Attachment.size).where(
        Attachment.sha256.in_(sa.bindparam("shas", expanding=True))
    )
    return _seen(stmt).distinct()


_IN_CHUNK = 1000  # sha256 values per statement: far below any driver's limit on parameters


def visible_files(session: Session, p: Principal, shas: Iterable[str]) -> dict[str, int]:
    """The size of each of these files that the caller can already download
    (an attachment of a case it sees in full or of one of its requests).

    Knowing a file's sha256 is not having the file: a digest is quoted in
    reports, requests and custody records. Only what the caller can already
    read is offered again under its sha256.
    """
    wanted = sorted(set(shas))
    found: dict[str, int] = {}
    for start in range(0, len(wanted), _IN_CHUNK):
        params = access.principal_params(p) | {"shas": wanted[start : start + _IN_CHUNK]}
        found.update((sha, size) for sha, size in session.execute(_visible_files_statement(), params))
    return found


def _visible(session: Session, p: Principal, attachment_id: uuid.UUID, *, for_update: bool) -> Attachment:
    params = access.principal_params(p) | {"attachment_id": attachment_id}
    attachment = session.execute(_visible_statement(for_update=for_update), params).scalar_one_or_none()
    if attachment is None:
        raise not_found("attachment")
    return attachment


def readable_attachment(
    session: Session, p: Principal, attachment_id: uuid.UUID
) -> tuple[Attachment, Parent]:
    """An attachment whose parent the caller reads; 404 (the same as a missing one) otherwise."""
    attachment = _visible(session, p, attachment_id, for_update=False)
    return attachment, _parent_of(session, p, attachment)


def writable_attachment(
    session: Session, p: Principal, attachment_id: uuid.UUID
) -> tuple[Attachment, Parent]:
    """An attachment the caller may delete, locked until commit."""
    attachment = _visible(session, p, attachment_id, for_update=True)
    parent = _parent_of(session, p, attachment)
    if parent.case_id is not None:
        access.require_writer(access.case_access_sync(session, p, parent.case_id), p)
    elif attachment.uploaded_by_agency_id != p.agency_id:
        raise forbidden("Only the agency that attached the file deletes it.")
    return attachment, parent


def _record(
    session: Session,
    p: Principal,
    attachment: Attachment,
    parent: Parent,
    action: str,
    *,
    emit_event: bool = True,
) -> None:
    """Journal an attachment's change (or, emit_event=False, its disclosure) as its parent's."""
    if parent.request is not None:
        # No case_id: like the request's own records (app.requests.service).
        record(
            session,
            p.actor,
            action=action,
            resource_type=MESSAGE_RESOURCE,
            resource_id=attachment.id,
            case_id=None,
            emit_event=emit_event,
            request_parties=(parent.request.from_agency_id, parent.request.to_agency_id),
        )
        return
    record(
        session,
        p.actor,
        action=action,
        resource_type=CASE_RESOURCE,
        resource_id=attachment.id,
        case_id=parent.case_id,
        emit_event=emit_event,
    )


def add_attachment(
    session: Session, p: Principal, parent: Parent, staged: Staged, *, filename: str, content_type: str
) -> Attachment:
    attachment = Attachment(
        case_id=parent.case_id,
        request_id=parent.request.id if parent.request else None,
        message_id=parent.message_id,
        uploaded_by_agency_id=p.agency_id,
        filename=filename,
        content_type=content_type,
        size=staged.size,
        sha256=staged.sha256,
    )
    session.add(attachment)
    session.flush()
    _record(session, p, attachment, parent, "attachment.created")
    return attachment


def delete_attachment(session: Session, p: Principal, attachment: Attachment, parent: Parent) -> None:
    session.delete(attachment)
    session.flush()
    _record(session, p, attachment, parent, "attachment.deleted")


def to_public(attachment: Attachment) -> AttachmentPublic:
    return AttachmentPublic.model_validate(attachment)


# --- the HTTP edges: upload and download ---------------------------------------


@dataclass(frozen=True)
class UploadMeta:
    filename: str
    content_type: str
    expected_sha256: str | None
    idempotency_key: str | None


def upload_meta(request: Request, filename: str, sha256: str | None) -> UploadMeta:
    """Validate what comes with the body, before the body is read."""
    try:
        control_free(filename)
    except ValueError as exc:
        raise invalid(["query", "filename"], str(exc)) from None
    try:
        content_type = media_type(request.headers.get("content-type", DEFAULT_CONTENT_TYPE))
    except ValueError as exc:
        raise invalid(["header", "content-type"], str(exc)) from None
    expected = [sha256] if sha256 else []
    header = request.headers.get("repr-digest")
    if header is not None:
        expected.append(_sha256_of_repr_digest(header))
    if len(set(expected)) > 1:
        raise invalid(["header", "repr-digest"], "Repr-Digest and ?sha256= name different digests.")
    key = request.headers.get("idempotency-key")
    if key is not None and not 1 <= len(key) <= 200:
        raise invalid(["header", "idempotency-key"], "Idempotency-Key must be 1 to 200 characters.")
    return UploadMeta(filename, content_type, expected[0] if expected else None, key)


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


@contextmanager
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


def used_bytes(session: Session, agency_id: uuid.UUID) -> int:
    """What an agency's uploads take: the sizes of the attachments it uploaded."""
    stmt = sa.select(sa.func.coalesce(sa.func.sum(Attachment.size), 0)).where(
        Attachment.uploaded_by_agency_id == agency_id
    )
    return int(session.execute(stmt).scalar_one())


def check_quota(session: Session, p: Principal, adding: int, quota: int | None, *, lock: bool) -> None:
    """507 when the caller's agency would go past its quota with `adding` more bytes.

    With `lock`, the agency's row is locked until commit (SQLite: the write
    transaction is already exclusive), so two uploads of one agency cannot
    both pass on the same sum.
    """
    if quota is None:
        return
    if lock:
        session.execute(sa.select(Agency.id).where(Agency.id == p.agency_id).with_for_update())
    used = used_bytes(session, p.agency_id)
    if used + adding > quota:
        raise AppError(
            507,
            f"Your agency's attachments would exceed its storage quota of {quota} bytes "
            f"({used} bytes used); delete some or ask the operator for more.",
            slug="storage-quota-exceeded",
            title=_INSUFFICIENT_STORAGE,
            extra={"quota_bytes": quota, "used_bytes": used},
        )


def body_stalled(seconds: float) -> AppError:
    return AppError(
        408,
        f"No part of the request body arrived for {seconds:g} seconds.",
        slug="request-timeout",
        title="Request Timeout",
        headers={"Connection": "close"},
    )


def client_gone() -> AppError:
    """The client closed the connection mid-body: its doing, not the server's.
    The answer reaches no one; its status (nginx's 499) marks it in metrics."""
    return AppError(
        499, "The client closed the connection.", slug="client-closed-request", title="Client Closed Request"
    )


async def _body(request: Request, chunk_timeout: float) -> AsyncIterator[bytes]:
    """The request body's chunks, each awaited at most `chunk_timeout` seconds."""
    chunks = request.stream()
    while True:
        try:
            with anyio.fail_after(chunk_timeout):
                chunk = await anext(chunks, None)
        except TimeoutError:
            raise body_stalled(chunk_timeout) from None
        except ClientDisconnect:
            log.info("upload abandoned: the client closed the connection")
            raise client_gone() from None
        if chunk is None:
            return
        yield chunk


async def receive_file(request: Request, storage: Storage, max_bytes: int, chunk_timeout: float) -> Staged:
    """Stream the body to a staging file, hashing as it goes; never more than
    about one write chunk of it in memory. Whatever ends it early (too large,
    stalled, the client gone, a full disk) removes the staging file."""
    with disk_full_is_507():
        writer = await anyio.to_thread.run_sync(storage.staging.writer)
        pending = bytearray()
        try:
            async for chunk in _body(request, chunk_timeout):
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


def _fingerprint(request: Request, meta: UploadMeta, staged: Staged) -> str:
    # The same key with another file, name or type is another request.
    parts = (request.url.path, meta.filename, meta.content_type, staged.sha256)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


def commit_upload(
    request: Request,
    p: Principal,
    lookup: ParentLookup,
    staged: Staged,
    meta: UploadMeta,
) -> Response:
    """The row and its journal in one transaction; after the commit, the file moves into place."""
    storage: Storage = request.app.state.storage
    quota: int | None = request.app.state.settings.storage_quota_bytes_per_agency
    added: list[Attachment] = []
    idem = (
        IdempotencyKey(meta.idempotency_key, _fingerprint(request, meta, staged))
        if meta.idempotency_key
        else None
    )
    try:
        if meta.expected_sha256 is not None and meta.expected_sha256 != staged.sha256:
            raise invalid(["header", "repr-digest"], "The file's sha256 is not the digest that was sent.")
        with transaction(request.app.state.engine, write=True) as session:
            # Again, now that the upload is over: the caller's access may have changed meanwhile.
            parent = lookup(session, p)

            def respond(attachment: Attachment) -> Response:
                return created(
                    to_public(attachment),
                    location=api_path("attachments", attachment.id),
                    version=attachment.version,
                )

            def create() -> Response:
                check_quota(session, p, staged.size, quota, lock=True)
                attachment = add_attachment(
                    session, p, parent, staged, filename=meta.filename, content_type=meta.content_type
                )
                added.append(attachment)
                return respond(attachment)

            response = create_once_sync(
                session,
                p,
                idem,
                create,
                lambda attachment_id: respond(readable_attachment(session, p, attachment_id)[0]),
            )
    except BaseException:
        staged.path.unlink(missing_ok=True)
        raise
    if added:
        place(storage, staged)
    else:  # a replay of an earlier upload: nothing new to keep
        staged.path.unlink(missing_ok=True)
    return response


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


def _referenced(conn: sa.Connection, shas: Iterable[str]) -> set[str]:
    wanted = list(shas)
    if not wanted:
        return set()
    rows = conn.execute(sa.select(Attachment.sha256).where(Attachment.sha256.in_(wanted)).distinct())
    return set(rows.scalars())


def release(engine: sa.Engine, storage: Storage, sha256: str) -> None:
    """After a deletion committed: remove the file unless another row still names it.
    Under the storage lock, so an upload of the same content cannot commit and
    move its file in between the check and the removal."""
    try:
        claim_storage(engine, storage)
    except StorageOfAnotherDatabase as exc:
        # Another database's rows may name the file: it stays.
        log.error("file %s kept: %s", sha256, exc)
        return
    with storage.lock(), engine.connect() as conn:
        if not _referenced(conn, [sha256]):
            storage.delete(sha256)


# --- which database the files belong to ------------------------------------------


def _known_database_id(conn: sa.Connection) -> str | None:
    found = conn.execute(sa.select(DatabaseIdentity.__table__.c.database_id)).scalar_one_or_none()
    return str(found) if found is not None else None


def _database_id(conn: sa.Connection) -> str:
    """This database's id, made on first use (once, whoever comes first)."""
    known = _known_database_id(conn)
    if known is not None:
        return known
    insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
    row = {"slot": 1, "database_id": uuid.uuid4(), "created_at": utcnow()}
    conn.execute(insert(DatabaseIdentity.__table__).values(row).on_conflict_do_nothing())
    return str(conn.execute(sa.select(DatabaseIdentity.__table__.c.database_id)).scalar_one())


def claim_storage(engine: sa.Engine, storage: Storage) -> None:
    """Before the first write or deletion of this process: the storage directory is
    this database's (marked now if it carries no mark yet), else StorageOfAnotherDatabase."""
    if storage.claimed_by is not None:
        return
    with engine.begin() as conn:
        database_id = _database_id(conn)
    storage.claim(database_id)


def claim_for_upload(engine: sa.Engine, storage: Storage) -> None:
    """claim_storage() for a request: a directory of another database is the
    operator's mistake, a 503 for the client and an error in the log."""
    try:
        with disk_full_is_507():
            claim_storage(engine, storage)
    except StorageOfAnotherDatabase as exc:
        log.error("upload refused: %s", exc)
        raise AppError(503, "The file storage is not available.", slug="storage-unavailable") from None


def check_storage(engine: sa.Engine, storage: Storage) -> None:
    """At start-up: StorageOfAnotherDatabase when the directory carries another
    database's mark. A database that does not answer yet (or is not migrated)
    cannot say: the first upload or deletion checks again."""
    owner = storage.owner()
    if owner is None:
        return
    try:
        with engine.connect() as conn:
            database_id = _known_database_id(conn)
    except sa_exc.DBAPIError:
        return
    if database_id != owner:
        raise StorageOfAnotherDatabase(storage.root, owner, database_id)


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


def plan_delivery(conditions: Conditions, attachment: Attachment) -> Delivery:
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


def open_content(
    request: Request, p: Principal, attachment_id: uuid.UUID, conditions: Conditions
) -> tuple[Attachment, Delivery, BinaryIO | None]:
    """The attachment, what to send of it and, when bytes go out (a GET answered
    200 or 206), its open file, the download audited in the same transaction: a
    download that cannot be audited does not happen. HEAD and 304 disclose only
    what the metadata route does (size, type, sha256), so they are not audited."""
    storage: Storage = request.app.state.storage
    source: BinaryIO | None = None
    try:
        with transaction(request.app.state.engine, write=True) as session:
            attachment, parent = readable_attachment(session, p, attachment_id)
            delivery = plan_delivery(conditions, attachment)
            if request.method == "GET" and delivery.status != 304:
                try:
                    source = storage.open(attachment.sha256)
                except FileNotFoundError as exc:
                    raise AppError(
                        503,
                        "The file is not available right now.",
                        slug="file-unavailable",
                        headers={"Retry-After": "5"},
                    ) from exc
                _record(session, p, attachment, parent, "attachment.downloaded", emit_event=False)
    except BaseException:
        if source is not None:
            source.close()
        raise
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


def sweep(engine: sa.Engine, storage: Storage, *, older_than: float, apply: bool) -> SweepReport:
    """Bring the files in line with the rows (only list how, without `apply`).

    Staging files untouched for `older_than` seconds: a sealed one whose
    sha256 a row names but whose file is missing (the process died after
    the commit) moves into place; every other is removed (an upload that
    died before its commit, or a duplicate). Stored files no row names are
    removed. `older_than` spares uploads in flight in other processes. The
    directory must be this database's (claim_storage), or nothing happens.
    """
    claim_storage(engine, storage)
    report = SweepReport()
    with storage.lock(), engine.connect() as conn:
        for path, sha256 in storage.staging.stale(older_than):
            if (
                sha256 is not None
                and sha256 not in report.recovered
                and not storage.exists(sha256)
                and _referenced(conn, [sha256])
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
            if len(batch) == 500:
                report.files_removed += _unreferenced(conn, storage, batch, apply=apply)
                batch = []
        report.files_removed += _unreferenced(conn, storage, batch, apply=apply)
    return report


def _unreferenced(conn: sa.Connection, storage: Storage, names: list[str], *, apply: bool) -> list[str]:
    orphans = sorted(set(names) - _referenced(conn, names))
    if apply:
        for name in orphans:
            storage.delete(name)
    return orphans
