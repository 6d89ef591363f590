import re
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from app.access import Editor
from app.attachments import service
from app.attachments.models import AttachmentPublic
from app.attachments.storage import copy_chunks
from app.auth.deps import Reader, Writer
from app.auth.service import Principal
from app.db import SessionDep, transaction
from app.http import check_if_match, with_etag
from app.openapi import REQUEST_ID_HEADER
from app.pagination import Page, PageDep

router = APIRouter(tags=["attachments"])

# Upload paths: their bodies may reach CASEAPI_MAX_ATTACHMENT_BYTES (app.limits).
ATTACHMENT_UPLOADS = (
    re.compile(r"/api/v1/cases/[^/]+/attachments"),
    re.compile(r"/api/v1/requests/[^/]+/messages/[^/]+/attachments"),
)
# Requests that move a file's bytes, for as long as the client's link takes (app.admission).
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


async def _upload(
    request: Request, p: Principal, lookup: service.ParentLookup, meta: service.UploadMeta
) -> Response:
    settings = request.app.state.settings
    # Refused before a byte of the body is read: who may not add here, and a file declared
    # past the agency's quota (one declared too large never got this far: app.limits
    # answered 413 on its Content-Length).
    await run_in_threadpool(_check, request, p, lookup)
    staged = await service.receive_file(
        request,
        request.app.state.storage,
        request.app.state.max_attachment_bytes,
        settings.body_chunk_timeout_seconds,
    )
    return await run_in_threadpool(service.commit_upload, request, p, lookup, staged, meta)


def _check(request: Request, p: Principal, lookup: service.ParentLookup) -> None:
    declared = request.headers.get("content-length", "")
    service.claim_for_upload(request.app.state.engine, request.app.state.storage)
    with transaction(request.app.state.engine, write=False) as session:
        lookup(session, p)
        if declared.isdigit():
            quota = request.app.state.settings.storage_quota_bytes_per_agency
            service.check_quota(session, p, int(declared), quota, lock=False)


@router.get(
    "/cases/{case_id}/attachments",
    response_model=Page[AttachmentPublic],
    operation_id="attachments.list",
    summary="List a case's attachments",
)
def list_case_attachments(
    session: SessionDep, p: Reader, case_id: uuid.UUID, page: PageDep
) -> Page[AttachmentPublic]:
    """Scope `read`; full access to the case. Metadata of the files attached to it, oldest first. A case
    the caller may not see answers 404, exactly as one that does not exist.
    """
    parent = service.case_for_reader(case_id)(session, p)
    items, cursor = service.list_attachments(session, parent, page)
    return Page(items=[service.to_public(a) for a in items], next_cursor=cursor)


@router.post(
    "/cases/{case_id}/attachments",
    status_code=201,
    response_model=AttachmentPublic,
    operation_id="attachments.create",
    summary="Attach a file to a case",
    openapi_extra=UPLOAD_BODY,
)
async def create_case_attachment(
    request: Request, p: Writer, case_id: uuid.UUID, filename: Filename, sha256: ClientSha256 = None
) -> Response:
    """Scope `write`; role lead or partner. The body is the file itself, streamed; `Repr-Digest:
    sha-256=:...:` or `?sha256=` is checked against what arrives (422 and nothing stored when it differs).
    Honours `Idempotency-Key`. A case the caller may not see answers 404, exactly as one that does not
    exist.
    """
    meta = service.upload_meta(request, filename, sha256)
    return await _upload(request, p, service.case_for_writer(case_id), meta)


@router.get(
    "/requests/{request_id}/messages/{message_id}/attachments",
    response_model=Page[AttachmentPublic],
    operation_id="message_attachments.list",
    summary="List a message's attachments",
)
def list_message_attachments(
    session: SessionDep, p: Reader, request_id: uuid.UUID, message_id: uuid.UUID, page: PageDep
) -> Page[AttachmentPublic]:
    """Scope `read`; only the request's two agencies. Metadata of the files attached to a message. A
    request the caller may not see answers 404, exactly as one that does not exist.
    """
    parent = service.message_for_reader(request_id, message_id)(session, p)
    items, cursor = service.list_attachments(session, parent, page)
    return Page(items=[service.to_public(a) for a in items], next_cursor=cursor)


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
    meta = service.upload_meta(request, filename, sha256)
    return await _upload(request, p, service.message_for_writer(request_id, message_id), meta)


@router.get(
    "/attachments/{attachment_id}",
    response_model=AttachmentPublic,
    operation_id="attachments.get",
    summary="An attachment's metadata",
)
def get_attachment(
    session: SessionDep, p: Reader, attachment_id: uuid.UUID, response: Response
) -> AttachmentPublic:
    """Scope `read`; who sees its case in full, or the request's two agencies. Name, type, size and
    sha256 of the file; its bytes are at `/content`. An attachment the caller may not see answers 404,
    exactly as one that does not exist.
    """
    attachment, _ = service.readable_attachment(session, p, attachment_id)
    with_etag(response, attachment.version)
    return service.to_public(attachment)


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
def get_attachment_content(
    request: Request,
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
    attachment, delivery, source = service.open_content(request, p, attachment_id, conditions)
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
def delete_attachment(request: Request, p: Editor, attachment_id: uuid.UUID) -> Response:
    """Scope `write` and scope `read`; role lead or partner of its case, or the agency that attached it to a
    message.
    Needs the `If-Match` of the metadata. The file goes once no attachment names its content. An
    attachment the caller may not see answers 404, exactly as one that does not exist.
    """
    engine = request.app.state.engine
    with transaction(engine, write=True) as session:
        attachment, parent = service.writable_attachment(session, p, attachment_id)
        check_if_match(request, attachment.version)
        service.delete_attachment(session, p, attachment, parent)
    service.release(engine, request.app.state.storage, attachment.sha256)
    return Response(status_code=204)
