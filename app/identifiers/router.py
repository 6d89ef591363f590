import asyncio
import uuid

from fastapi import APIRouter, Request, Response

from app import access
from app.auth.deps import Reader, Writer
from app.core.deps import DatabaseDep, UnitDep
from app.core.http import StrictJSONRoute, api_path, check_if_match, created, deleted, listed, ok, public
from app.core.pagination import Page, PageDep
from app.core.uow import Row
from app.idempotency.http import IdempotencyDep, create_once
from app.identifiers import service
from app.identifiers.models import (
    HitResults,
    HitSearch,
    Identifier,
    IdentifierCreate,
    IdentifierPublic,
    PeerSearch,
)
from app.identifiers.normalize import IdentifierKind

router = APIRouter(tags=["identifiers"], route_class=StrictJSONRoute)


@router.get(
    "/cases/{case_id}/identifiers",
    response_model=Page[IdentifierPublic],
    operation_id="identifiers.list",
    summary="List a case's identifiers",
)
async def list_identifiers(
    reads: DatabaseDep, p: Reader, case_id: uuid.UUID, page: PageDep, kind: IdentifierKind | None = None
) -> Response:
    """Scope `read`; full access to the case. The phone numbers, accounts, cards, wallets, domains...
    recorded in it, filtered by `kind`. A case the caller may not see answers 404, exactly as one that does
    not exist.
    """
    items, cursor = await service.list_identifiers(reads, p, case_id, page, kind=kind)
    return listed([public(IdentifierPublic, x) for x in items], cursor)


@router.post(
    "/cases/{case_id}/identifiers",
    status_code=201,
    response_model=IdentifierPublic,
    operation_id="identifiers.create",
    summary="Record an identifier",
)
async def create_identifier(
    tx: UnitDep, p: Writer, case_id: uuid.UUID, body: IdentifierCreate, idem: IdempotencyDep
) -> Response:
    """Scope `write`; role lead or partner. The value is validated and normalised (`normalized`); an
    invalid value answers 422. A phone number written without country code is read in the country of the
    case's lead agency. Honours `Idempotency-Key`. A case the caller may not see answers 404, exactly as
    one that does not exist.
    """
    acc = await access.writable_case(tx, p, case_id)

    def respond(identifier: Row) -> Response:
        return created(
            public(IdentifierPublic, identifier),
            location=api_path("identifiers", identifier.id),
            version=identifier.version,
        )

    async def create() -> Response:
        return respond(await service.create_identifier(tx, p, acc.case, body))

    async def replay(identifier_id: uuid.UUID) -> Response:
        return respond(await access.readable_child(tx, p, Identifier, identifier_id))

    return await create_once(tx, p, idem, create, replay)


@router.get(
    "/identifiers/{identifier_id}",
    response_model=IdentifierPublic,
    operation_id="identifiers.get",
    summary="Read an identifier",
)
async def get_identifier(tx: UnitDep, p: Reader, identifier_id: uuid.UUID) -> Response:
    """Scope `read`; full access to its case. An identifier the caller may not see answers 404, exactly as
    one that does not exist.
    """
    identifier = await access.readable_child(tx, p, Identifier, identifier_id)
    return ok(public(IdentifierPublic, identifier), version=identifier.version)


@router.delete(
    "/identifiers/{identifier_id}",
    status_code=204,
    operation_id="identifiers.delete",
    summary="Remove an identifier",
)
async def delete_identifier(
    request: Request, tx: UnitDep, p: access.Editor, identifier_id: uuid.UUID
) -> Response:
    """Scope `write` and scope `read`; role lead or partner. Removes an identifier recorded by mistake;
    needs `If-Match`. An identifier the caller may not see answers 404, exactly as one that does not exist.
    """
    identifier, _ = await access.writable_child(tx, p, Identifier, identifier_id)
    check_if_match(request, identifier.version)
    await service.delete_identifier(tx, p, identifier)
    return deleted()


@router.post(
    "/hits",
    response_model=HitResults,
    operation_id="hits.search",
    tags=["hit/no-hit"],
    summary="Ask whether any case holds these identifiers",
)
async def search_hits(request: Request, db: DatabaseDep, p: Reader, body: HitSearch) -> Response:
    """Scope `read`. Does any case hold these identifiers (1 to 1 000)? Each item is answered in order.

    A match in a case the caller sees in full names the case and the
    identifier; in a TLP:GREEN or TLP:CLEAR case it takes no part in, only
    the case and its lead agency. A match in any other case is not shown
    (`hit` stays false for it). The lead agency of a case the caller does
    not see in full receives a `hit.received` event naming the searching
    agency, shortly after the search (once per searching agency and
    identifier within `CASEAPI_HIT_NOTICE_WINDOW_HOURS`). The search is
    audited with keyed hashes of the values, never the values.
    A phone number without country code is read in the caller's agency's country.
    Searches are limited in distinct items per API client and per agency
    (`CASEAPI_HIT_RATE_LIMIT`, `CASEAPI_HIT_AGENCY_RATE_LIMIT`): past it, 429 with `Retry-After`.
    With `"federated": true` every peer instance is asked too, signed, naming the caller's agency; each
    answers by its own rules (and tells its own cases' leads). Its matches carry `home_instance`, and
    `peers` names every peer and how it answered (`answered`, `unreachable`, `timeout`, `refused`).
    """
    state = request.app.state
    keys = await service.normalized_items(db, p, body.items)
    ask: PeerSearch | None = getattr(state, "ask_peers", None) if body.federated else None
    # The peers search while this instance does; no connection is held while they answer.
    asking = asyncio.ensure_future(ask(p, keys)) if ask is not None else None
    try:
        async with db.transaction() as tx:
            results = await service.search_hits(tx, p, keys, settings=state.settings, limits=state.hit_limits)
    except BaseException:
        if asking is not None:
            asking.cancel()
        raise
    if body.federated:
        remote, answers = await asking if asking is not None else ([[] for _ in keys], [])
        results = service.with_peers(results, remote, answers)
    return ok(results.model_dump(mode="json", exclude_unset=True))
