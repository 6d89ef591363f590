import uuid

from fastapi import APIRouter, Request, Response

from app import access
from app.auth.deps import Reader, Writer
from app.db import SessionDep
from app.http import api_path, check_if_match, created, ok, public
from app.idempotency.service import IdempotencyDep, create_once
from app.identifiers import service
from app.identifiers.models import HitResults, HitSearch, Identifier, IdentifierCreate, IdentifierPublic
from app.identifiers.normalize import IdentifierKind
from app.pagination import Page, PageDep
from app.reads import ReadsDep

router = APIRouter(tags=["identifiers"])


@router.get(
    "/cases/{case_id}/identifiers", response_model=Page[IdentifierPublic], operation_id="identifiers.list"
)
async def list_identifiers(
    reads: ReadsDep, p: Reader, case_id: uuid.UUID, page: PageDep, kind: IdentifierKind | None = None
) -> Response:
    """The phone numbers, accounts, cards, wallets, domains... recorded in a case (full access only)."""
    await access.read_readable_case(reads, p, case_id)
    items, cursor = await service.list_identifiers(reads, case_id, page, kind=kind)
    return ok(Page(items=[public(IdentifierPublic, x) for x in items], next_cursor=cursor))


@router.post(
    "/cases/{case_id}/identifiers",
    status_code=201,
    response_model=IdentifierPublic,
    operation_id="identifiers.create",
)
def create_identifier(
    session: SessionDep, p: Writer, case_id: uuid.UUID, body: IdentifierCreate, idem: IdempotencyDep
) -> Response:
    """Record an identifier; it is validated and normalised (`normalized`), an invalid value is a 422.

    A phone number written without country code is read in the country of the case's lead agency.
    """
    acc = access.writable_case(session, p, case_id)

    def create() -> Response:
        identifier = service.create_identifier(session, p, acc.case, body)
        return created(
            public(IdentifierPublic, identifier),
            location=api_path("identifiers", identifier.id),
            version=identifier.version,
        )

    return create_once(session, p, idem, create)


@router.get("/identifiers/{identifier_id}", response_model=IdentifierPublic, operation_id="identifiers.get")
def get_identifier(session: SessionDep, p: Reader, identifier_id: uuid.UUID) -> Response:
    """One identifier of a case the caller sees in full."""
    identifier = access.readable_child(session, p, Identifier, identifier_id)
    return ok(public(IdentifierPublic, identifier), version=identifier.version)


# Declared for generated clients; checked by check_if_match(), which answers 428 when it is missing.
_IF_MATCH = {
    "name": "If-Match",
    "in": "header",
    "required": True,
    "schema": {"type": "string"},
    "description": "The ETag last read; a stale one answers 412",
}


@router.delete(
    "/identifiers/{identifier_id}",
    status_code=204,
    operation_id="identifiers.delete",
    openapi_extra={"parameters": [_IF_MATCH]},
)
def delete_identifier(request: Request, session: SessionDep, p: Writer, identifier_id: uuid.UUID) -> Response:
    """Remove an identifier recorded by mistake (lead or partner; `If-Match` required)."""
    identifier, _ = access.writable_child(session, p, Identifier, identifier_id)
    check_if_match(request, identifier.version)
    service.delete_identifier(session, p, identifier)
    return Response(status_code=204)


@router.post("/hits", response_model=HitResults, operation_id="hits.search", tags=["hit/no-hit"])
def search_hits(session: SessionDep, p: Reader, body: HitSearch) -> HitResults:
    """Does any case hold these identifiers? Each item is answered in order.

    A match in a case the caller sees in full names the case and the
    identifier; in a TLP:GREEN or TLP:CLEAR case it takes no part in, only
    the case and its lead agency. A match in any other case is not shown
    (`hit` stays false for it): that case's lead agency receives a
    `hit.received` event naming the searching agency instead. The search
    is audited with keyed hashes of the values, never the values.
    A phone number without country code is read in the caller's agency's country.
    """
    return service.search_hits(session, p, body.items)
