import hashlib
import logging
import re
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from starlette.requests import ClientDisconnect

from app.access import Editor
from app.attachments import service
from app.attachments.models import AttachmentPublic
from app.attachments.storage import Staged, copy_chunks
from app.auth.deps import Reader, Writer
from app.auth.service import Principal
from app.core.deps import DatabaseDep, UnitDep
from app.core.errors import AppError
from app.core.http import api_path, check_if_match, created, deleted, listed, ok
from app.core.openapi import REQUEST_ID_HEADER
from app.core.pagination import Page, PageDep
from app.core.uow import Database, Row
from app.idempotency.http import create_once
from app.idempotency.service import Idempotency, IdempotencyKey, ttl

log = logging.getLogger("caseapi.attachments")

router = APIRouter(tags=["attachments"])

# Upload paths: their bodies may reach CASEAPI_MAX_ATTACHMENT_BYTES (app.core.limits).
ATTACHMENT_UPLOADS = (
    re.compile(r"/api/v1/cases/[^/]+/attachments"),
    re.compile(r"/api/v1/requests/[^/]+/messages/[^/]+/attachments"),
)
# Requests that move a file's bytes, for as long as the client's link takes (app.core.admission).
ATTACHMENT_TRANSFERS = (
    *(("POST", upload) for upload in ATTACHMENT_UPLOADS),
    ("GET", re.compile(r"/api/v1/attachments/[^/]+/content")),
)

_READ_CHUNK = 256 * 1024

Filename = Annotated[
    str, Query(min_length=1, max_length=255, description="The file's name, as the downloader will see it")
]
ClientSha256 = Annotated[
    str | None,
    Query(
        pattern=r"^[0-9a-f]{64}$",
        description="The file's sha256 (lower-case hex) as the client computed it: a mismatch is a 422",
    ),
]

UPLOAD_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "The file's bytes, sent as they are, with the file's own Content-Type (any media "
        "type: it is stored and served back as sent; `application/octet-stream` when none is sent).",
        "content": {
            "application/octet-stream": {
                "schema": {"type": "string", "format": "binary"},
                "example": "Extraction report: 24 mobile phones seized in Kyiv on 23 September 2025",
            }
        },
    },
    "parameters": [
        {
            "name": "Repr-Digest",
            "in": "header",
            "required": False,
            "schema": {"type": "string"},
            "description": "RFC 9530 `sha-256=:<base64>:`; a file with another digest is a 422",
        },
        {
            "name": "Idempotency-Key",
            "in": "header",
            "required": False,
            "schema": {"type": "string", "minLength": 1, "maxLength": 200},
            "description": "Repeat an upload safely: the same key and file return the first response",
        },
    ],
}

_BINARY = {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}
_STRING = {"schema": {"type": "string"}}
_CONTENT_ETAG = {"description": "The file's sha256, quoted", **_STRING}
_ACCEPT_RANGES = {"description": "Always `bytes`: a single byte range may be asked for", **_STRING}
CONTENT_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The file's bytes, with the type it was uploaded with",
        "content": _BINARY,
        "headers": {
            "ETag": _CONTENT_ETAG,
            "Accept-Ranges": _ACCEPT_RANGES,
            "Content-Disposition": {"description": "Always `attachment`", **_STRING},
        },
    },
    206: {
        "description": "The byte range asked for in `Range`",
        "content": _BINARY,
        "headers": {
            "Content-Range": {"description": "`bytes FIRST-LAST/SIZE`", **_STRING},
            "ETag": _CONTENT_ETAG,
            "Accept-Ranges": _ACCEPT_RANGES,
            "X-Request-ID": REQUEST_ID_HEADER,
        },
    },
    304: {
        "description": "`If-None-Match` names the file's ETag: the caller's copy is current (not audited)",
        "headers": {"ETag": _CONTENT_ETAG, "X-Request-ID": REQUEST_ID_HEADER},
    },
    416: {"description": "No byte of the range lies within the file; `Content-Range: bytes */SIZE`"},
}

RangeHeader = Annotated[
    str | None,
    Header(
        alias="Range",
        description="One byte range, `bytes=FIRST-LAST`, `bytes=FIRST-` or `bytes=-SUFFIX`: answered 206. "
        "Several ranges are not served: the whole file comes back",
    ),
]
IfNoneMatch = Annotated[
    str | None, Header(alias="If-None-Match", description="The ETag of a copy held: 304 while it is current")
]
IfRange = Annotated[
    str | None,
    Header(
        alias="If-Range", description="The ETag of a partial copy: the Range is served only while it matches"
    ),
]


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


def _upload_meta(request: Request, filename: str, sha256: str | None) -> service.UploadMeta:
    headers = request.headers
    return service.upload_meta(
        filename,
        sha256,
        content_type=headers.get("content-type"),
        repr_digest=headers.get("repr-digest"),
        idempotency_key=headers.get("idempotency-key"),
    )


def _fingerprint(request: Request, meta: service.UploadMeta, staged: Staged) -> str:
    # The same key with another file, name or type is another request.
    parts = (request.url.path, meta.filename, meta.content_type, staged.sha256)
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()


async def _upload(
    request: Request, db: Database, p: Principal, lookup: service.ParentLookup, meta: service.UploadMeta
) -> Response:
    settings = request.app.state.settings
    storage = request.app.state.storage
    quota: int | None = settings.storage_quota_bytes_per_agency
    # Refused before a byte of the body is read: who may not add here, and a file declared
    # past the agency's quota (one declared too large never got this far: app.core.limits
    # answered 413 on its Content-Length).
    declared = request.headers.get("content-length", "")
    await service.claim_for_upload(db, storage)
    await lookup(db, p)
    if declared.isdigit():
        await service.check_quota(db, p, int(declared), quota, lock=False)
    chunks = _body(request, settings.body_chunk_timeout_seconds)
    staged = await service.receive_file(chunks, storage, request.app.state.max_attachment_bytes)
    idem = Idempotency(
        IdempotencyKey(meta.idempotency_key, _fingerprint(request, meta, staged))
        if meta.idempotency_key
        else None,
        ttl(settings),
    )

    def respond(attachment: Row) -> Response:
        return created(
            service.to_public(attachment),
            location=api_path("attachments", attachment.id),
            version=attachment.version,
        )

    async with service.commit_upload(db, storage, staged, meta) as upload:
        # Again, now that the upload is over: the caller's access may have changed meanwhile.
        parent = await lookup(upload.tx, p)

        async def create() -> Response:
            return respond(await upload.add(p, parent, quota))

        async def replay(attachment_id: uuid.UUID) -> Response:
            return respond((await service.readable_attachment(upload.tx, p, attachment_id))[0])

        response = await create_once(upload.tx, p, idem, create, replay)
    return response


@router.get(
    "/cases/{case_id}/attachments",
    response_model=Page[AttachmentPublic],
    operation_id="attachments.list",
    summary="List a case's attachments",
)
async def list_case_attachments(tx: UnitDep, p: Reader, case_id: uuid.UUID, page: PageDep) -> Response:
    """Scope `read`; full access to the case. Metadata of the files attached to it, oldest first. A case
    the caller may not see answers 404, exactly as one that does not exist.
    """
    parent = await service.case_for_reader(case_id)(tx, p)
    rows, cursor = await service.list_attachments(tx, parent, page)
    return listed([service.to_public(a) for a in rows], cursor)


@router.post(
    "/cases/{case_id}/attachments",
    status_code=201,
    response_model=AttachmentPublic,
    operation_id="attachments.create",
    summary="Attach a file to a case",
    openapi_extra=UPLOAD_BODY,
)
async def create_case_attachment(
    request: Request,
    db: DatabaseDep,
    p: Writer,
    case_id: uuid.UUID,
    filename: Filename,
    sha256: ClientSha256 = None,
) -> Response:
    """Scope `write`; role lead or partner. The body is the file itself, streamed; `Repr-Digest:
    sha-256=:...:` or `?sha256=` is checked against what arrives (422 and nothing stored when it differs).
    Honours `Idempotency-Key`. A case the caller may not see answers 404, exactly as one that does not
    exist.
    """
    meta = _upload_meta(request, filename, sha256)
    return await _upload(request, db, p, service.case_for_writer(case_id), meta)


@router.get(
    "/requests/{request_id}/messages/{message_id}/attachments",
    response_model=Page[AttachmentPublic],
    operation_id="message_attachments.list",
    summary="List a message's attachments",
)
async def list_message_attachments(
    tx: UnitDep, p: Reader, request_id: uuid.UUID, message_id: uuid.UUID, page: PageDep
) -> Response:
    """Scope `read`; only the request's two agencies. Metadata of the files attached to a message. A
    request the caller may not see answers 404, exactly as one that does not exist.
    """
    parent = await service.message_for_reader(request_id, message_id)(tx, p)
    rows, cursor = await service.list_attachments(tx, parent, page)
    return listed([service.to_public(a) for a in rows], cursor)


@router.post(
    "/requests/{request_id}/messages/{message_id}/attachments",
    status_code=201,
    response_model=AttachmentPublic,
    operation_id="message_attachments.create",
    summary="Attach a file to a message",
    openapi_extra=UPLOAD_BODY,
)
async def create_message_attachment(
    request: Request,
    db: DatabaseDep,
    p: Writer,
    request_id: uuid.UUID,
    message_id: uuid.UUID,
    filename: Filename,
    sha256: ClientSha256 = None,
) -> Response:
    """Scope `write`; only the agency that wrote the message. The body is the file itself, streamed, with
    the same digest check as a case's. Honours `Idempotency-Key`. A request the caller may not see answers
    404, exactly as one that does not exist.
    """
    meta = _upload_meta(request, filename, sha256)
    return await _upload(request, db, p, service.message_for_writer(request_id, message_id), meta)


@router.get(
    "/attachments/{attachment_id}",
    response_model=AttachmentPublic,
    operation_id="attachments.get",
    summary="An attachment's metadata",
)
async def get_attachment(tx: UnitDep, p: Reader, attachment_id: uuid.UUID) -> Response:
    """Scope `read`; who sees its case in full, or the request's two agencies. Name, type, size and
    sha256 of the file; its bytes are at `/content`. An attachment the caller may not see answers 404,
    exactly as one that does not exist.
    """
    attachment, _ = await service.readable_attachment(tx, p, attachment_id)
    return ok(service.to_public(attachment), version=attachment.version)


@router.get(
    "/attachments/{attachment_id}/content",
    operation_id="attachments.content",
    summary="Download an attachment",
    response_class=StreamingResponse,
    responses=CONTENT_RESPONSE,
)
# HEAD: the same headers, no body; left out of the document, which describes it under GET.
@router.head(
    "/attachments/{attachment_id}/content", operation_id="attachments.content_head", include_in_schema=False
)
async def get_attachment_content(
    request: Request,
    db: DatabaseDep,
    p: Reader,
    attachment_id: uuid.UUID,
    byte_range: RangeHeader = None,
    if_none_match: IfNoneMatch = None,
    if_range: IfRange = None,
) -> Response:
    """Scope `read`; who may read the attachment's metadata. The file's bytes, streamed, always as a
    download (`Content-Disposition: attachment`); one byte `Range` (206), `If-None-Match` (304) and
    `HEAD` (the headers alone) are honoured. Every download (200 or 206) writes an audit entry. An
    attachment the caller may not see answers 404, exactly as one that does not exist.
    """
    conditions = service.Conditions(byte_range, if_none_match, if_range)
    storage = request.app.state.storage
    source = None
    try:
        # The download's audit entry commits before a byte goes out; the file
        # is closed should the commit fail.
        async with db.transaction() as tx:
            attachment, delivery, source = await service.open_content(
                tx, storage, p, attachment_id, conditions, send=request.method == "GET"
            )
    except BaseException:
        if source is not None:
            source.close()
        raise
    etag = f'"{attachment.sha256}"'
    if delivery.status == 304:
        return Response(status_code=304, headers={"ETag": etag, "Cache-Control": "private, no-store"})
    headers = {
        # As stored: given as media_type, Starlette would add a charset to text types.
        "Content-Type": attachment.content_type,
        "Content-Length": str(delivery.length),
        "Content-Disposition": service.content_disposition(attachment.filename),
        "ETag": etag,
        "Accept-Ranges": "bytes",
        "X-Content-Type-Options": "nosniff",
        # A browser that opens it anyway runs nothing in it.
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "Cache-Control": "private, no-store",
    }
    if delivery.status == 206:
        headers["Content-Range"] = f"bytes {delivery.start}-{delivery.end}/{attachment.size}"
    if source is None:  # HEAD
        return Response(status_code=delivery.status, headers=headers)
    chunks = copy_chunks(source, _READ_CHUNK, delivery.start, delivery.length)
    return StreamingResponse(chunks, status_code=delivery.status, headers=headers)


@router.delete(
    "/attachments/{attachment_id}",
    status_code=204,
    operation_id="attachments.delete",
    summary="Delete an attachment",
)
async def delete_attachment(
    request: Request, db: DatabaseDep, p: Editor, attachment_id: uuid.UUID
) -> Response:
    """Scope `write` and scope `read`; role lead or partner of its case, or the agency that attached it to a
    message.
    Needs the `If-Match` of the metadata. The file goes once no attachment names its content. An
    attachment the caller may not see answers 404, exactly as one that does not exist.
    """
    async with db.transaction() as tx:
        attachment, parent = await service.writable_attachment(tx, p, attachment_id)
        check_if_match(request, attachment.version)
        await service.delete_attachment(tx, p, attachment, parent)
    # Only once the deletion committed: the file goes when no row names it any more.
    await service.release(db, request.app.state.storage, attachment.sha256)
    return deleted()
