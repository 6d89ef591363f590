"""Hot routes (app.core.binder): the lean binder answers every request exactly as
FastAPI's own handler does, takes the well-formed ones, and the JSON the hot
reads write from rows is the JSON the models write from ORM objects."""

import asyncio
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import APIRouter, FastAPI, Query, Response
from fastapi.testclient import TestClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.routing import Mount, Route

from app.cases.models import Case, CasePublic, origin_of
from app.cases.router import router as cases_router
from app.core import binder as hot
from app.core.gate import Gate
from app.core.http import dump_json, public, public_json
from app.core.pagination import Page
from app.core.records import Event
from app.core.uow import Statements
from app.events.models import EventPublic
from app.events.router import router as events_router
from app.evidence.models import SeizedItem, SeizedItemPublic
from app.evidence.router import router as evidence_router
from tests.conftest import Caller, transaction
from tests.test_reads import _with_reads
from tests.trust.world import World, build_world

HOT_ROUTERS = (cases_router, evidence_router, events_router)


def _hot_routes() -> list[hot.HotRoute]:
    return [r for router in HOT_ROUTERS for r in router.routes if isinstance(r, hot.HotRoute) and r.lean]


def test_the_polled_reads_are_hot() -> None:
    served = {(r.path, m) for r in _hot_routes() for m in r.methods}
    assert served == {
        ("/cases", "GET"),
        ("/cases/{case_id}", "GET"),
        ("/cases/{case_id}/seized-items", "GET"),
        ("/events", "GET"),
    }


def _answer(response: Any) -> tuple[int, Any, str | None]:
    body = response.json()
    if isinstance(body, dict):
        body.pop("request_id", None)
    return response.status_code, body, response.headers.get("etag")


def _requests(world: World, outsider: Caller, lead: Caller) -> list[tuple[str, dict[str, str]]]:
    cid = world.case_id
    unknown = {"Authorization": "Bearer cak_" + "0" * 43}
    return [
        # well-formed: the lean binder takes these
        (f"/api/v1/cases/{cid}", lead.headers),
        (f"/api/v1/cases/{cid.upper()}", lead.headers),
        (f"/api/v1/cases/{cid}", outsider.headers),  # hidden: 404
        (f"/api/v1/cases/{uuid.uuid4()}", lead.headers),  # missing: 404
        ("/api/v1/cases?limit=1&status=open", lead.headers),
        ("/api/v1/cases?q=case&handling_code=TLP:AMBER&participant=KZ-LEAD", lead.headers),
        ("/api/v1/cases?limit=200&unknown=1", lead.headers),
        (f"/api/v1/cases/{cid}/seized-items?category=computer", lead.headers),
        (f"/api/v1/cases/{cid}/seized-items", outsider.headers),
        ("/api/v1/events?limit=2&after=1", lead.headers),
        ("/api/v1/events?after=0", lead.headers),
        (f"/api/v1/cases/{cid}", {}),  # no key: 401
        (f"/api/v1/cases/{cid}", {"Authorization": "Basic abc"}),
        (f"/api/v1/cases/{cid}", unknown),
        # malformed or unusual: FastAPI's handler answers these
        (f"/api/v1/cases/{cid.replace('-', '')}", lead.headers),
        (f"/api/v1/cases/{{{cid}}}", lead.headers),
        ("/api/v1/cases/not-a-uuid", lead.headers),
        ("/api/v1/cases?limit=0", lead.headers),
        ("/api/v1/cases?limit=201", lead.headers),
        ("/api/v1/cases?limit=007", lead.headers),
        ("/api/v1/cases?limit=+5", lead.headers),
        ("/api/v1/cases?limit=5&limit=7", lead.headers),
        ("/api/v1/cases?limit=", lead.headers),
        ("/api/v1/cases?status=OPEN", lead.headers),
        ("/api/v1/cases?q=" + "x" * 201, lead.headers),
        ("/api/v1/cases?cursor=forged.cursor", lead.headers),
        ("/api/v1/events?after=-1", lead.headers),
        ("/api/v1/events?after=9007199254740993", lead.headers),
        ("/api/v1/events?after=1&cursor=x", lead.headers),
        (f"/api/v1/cases/{cid}/seized-items?category=boat", lead.headers),
        (f"/api/v1/cases/{uuid.uuid4()}/seized-items?limit=abc", {}),
    ]


def test_the_lean_binder_answers_exactly_as_fastapi(
    client: TestClient,
    lead: Caller,
    partner: Caller,
    outsider: Caller,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = build_world(client, lead, partner, handling_code="TLP:AMBER")
    requests = _requests(world, outsider, lead)
    lean = [_answer(client.get(url, headers=headers)) for url, headers in requests]
    for route in _hot_routes():  # as if they were not hot: FastAPI's own handler answers
        monkeypatch.setattr(route, "lean", None)
    full = [_answer(client.get(url, headers=headers)) for url, headers in requests]
    for (url, _), got, expected in zip(requests, lean, full, strict=True):
        assert got == expected, url
    statuses = {status for status, _, _ in full}
    assert {200, 400, 401, 404, 422} <= statuses  # the list above reaches every kind of answer


def _gate(application: FastAPI) -> Gate:
    layer: Any = application.middleware_stack
    while not isinstance(layer, Gate):
        layer = layer.app
    return layer


def test_the_gate_answers_hot_reads_as_fastapi_routes_them(
    client: TestClient,
    application: FastAPI,
    lead: Caller,
    partner: Caller,
    outsider: Caller,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The gate (app.core.gate) answers the hot GETs itself; FastAPI's routing answers
    them the same, through the lean binder and without it."""
    world = build_world(client, lead, partner, handling_code="TLP:AMBER")
    requests = _requests(world, outsider, lead)
    gate = _gate(application)
    taken: list[str] = []
    answer = gate._hot

    async def noted(route: hot.HotRoute, *args: Any) -> bool:
        answered = await answer(route, *args)
        taken.append(route.path)
        return answered

    monkeypatch.setattr(gate, "_hot", noted)
    by_gate = [_answer(client.get(url, headers=headers)) for url, headers in requests]
    assert len(taken) >= 12  # each well-formed one, and the malformed ids the binder left
    assert set(taken) == {r.path for r in _hot_routes()}
    monkeypatch.setattr(gate, "hot", None)
    by_router = [_answer(client.get(url, headers=headers)) for url, headers in requests]
    for route in _hot_routes():
        monkeypatch.setattr(route, "lean", None)
    full = [_answer(client.get(url, headers=headers)) for url, headers in requests]
    for (url, _), got, routed, expected in zip(requests, by_gate, by_router, full, strict=True):
        assert got == routed == expected, url


def test_a_hot_path_is_left_to_the_router_where_an_earlier_route_may_take_it() -> None:
    def hot_router(path: str) -> APIRouter:
        router = APIRouter(route_class=hot.HotRoute)

        @router.get(path)
        @hot.hot
        async def read(thing_id: uuid.UUID) -> Response:
            return Response(str(thing_id))

        return router

    async def other() -> Response:
        return Response("other")

    def served(*earlier: Any) -> list[str]:
        application = FastAPI(openapi_url=None, docs_url=None, redoc_url=None)
        for route in earlier:
            if isinstance(route, APIRouter):
                application.include_router(route, prefix="/v1")
            else:
                application.router.routes.append(route)
        application.include_router(hot_router("/things/{thing_id}"), prefix="/v1")
        application.include_router(hot_router("/things/{thing_id}/parts"), prefix="/v1")
        return [path.route.path for path in hot.HotPaths(application.router.routes).paths]

    both = ["/things/{thing_id}", "/things/{thing_id}/parts"]
    literal, param, posted = APIRouter(), APIRouter(), APIRouter()
    literal.get("/things/special")(other)
    param.get("/things/{name}")(other)
    posted.post("/things/{thing_id}")(other)
    assert served() == both
    assert served(literal, posted) == both  # no id is "special"; a POST never takes a GET
    assert served(param) == ["/things/{thing_id}/parts"]  # the earlier route takes every id
    assert served(Route("/v1/{rest:path}", other)) == []
    assert served(Mount("/v1", app=Starlette())) == []
    assert served(Mount("/static", app=Starlette())) == both
    uuid_literal = APIRouter()
    uuid_literal.get(f"/things/{uuid.UUID(int=0)}")(other)
    assert served(uuid_literal) == ["/things/{thing_id}/parts"]


def _bind(route: hot.HotRoute, application: FastAPI, url: str, headers: dict[str, str]) -> Any:
    """What the route's lean binder makes of a request (None: FastAPI's turn)."""
    path, _, query = url.partition("?")
    match = route.path_regex.match(path.removeprefix("/api/v1"))
    assert match is not None and route.lean is not None
    scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "path_params": match.groupdict(),
        "app": application,
    }
    return route.lean(Request(scope))


def test_well_formed_requests_take_the_lean_path(
    application: FastAPI, client: TestClient, lead: Caller
) -> None:
    routes = {r.path: r for r in _hot_routes()}
    case_id = str(uuid.uuid4())

    async def bound(url: str, path: str) -> Any:
        try:
            return await _bind(routes[path], application, url, lead.headers)
        finally:
            await application.state.database.close()  # this loop's connections

    taken = asyncio.run(bound(f"/api/v1/cases/{case_id}", "/cases/{case_id}"))
    assert taken is not None and taken["case_id"] == uuid.UUID(case_id)
    assert taken["p"].agency_id == lead.agency_id
    page = asyncio.run(bound("/api/v1/cases?limit=7&q=kyiv", "/cases"))
    assert (page["page"].limit, page["q"], page["status"]) == (7, "kyiv", None)
    for odd in ("/api/v1/cases?limit=07", "/api/v1/cases?q=a&q=b", "/api/v1/cases?status=nope"):
        assert asyncio.run(bound(odd, "/cases")) is None, odd


def test_unsupported_parameters_are_refused_at_startup() -> None:
    async def with_a_body(payload: dict[str, Any]) -> Any:
        return payload

    def not_a_coroutine(case_id: uuid.UUID) -> Any:
        return case_id

    with pytest.raises(TypeError, match="not bound lean"):
        hot.binder(with_a_body, set())
    with pytest.raises(TypeError, match="only coroutines"):
        hot.binder(not_a_coroutine, {"case_id"})

    async def old_style_default(limit: int = Query(50)) -> Any:
        return limit

    with pytest.raises(TypeError, match="in Annotated"):
        hot.binder(old_style_default, set())


def test_a_required_query_parameter_missing_is_fastapi_s_to_answer() -> None:
    async def needs(limit: int) -> Any:
        return limit

    bind = hot.binder(needs, set())
    request = Request({"type": "http", "method": "GET", "path": "/", "query_string": b"", "headers": []})
    assert asyncio.run(bind(request)) is None
    given = Request({"type": "http", "method": "GET", "path": "/", "query_string": b"limit=3", "headers": []})
    assert asyncio.run(bind(given)) == {"limit": 3}


# --- the JSON of rows, against the JSON of models -------------------------------


def _same_json(model: Any, row: Any, orm: Any, **computed: Any) -> None:
    from_row = json.loads(dump_json(public_json(model, row, **computed)))
    from_model = json.loads(public(model, orm, **computed).model_dump_json())
    assert from_row == from_model
    assert list(from_row) == list(from_model)  # the same order of fields, too


def test_rows_are_written_as_the_models_write_them(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    world = build_world(
        client,
        lead,
        partner,
        summary="Мошеннический колл-центр в Киеве \u2028 «call centre»",
        offence_types=["fraud", "телефонное мошенничество"],
        opened_at="2025-09-01T08:00:00.123456+03:00",
    )
    case_id = uuid.UUID(world.case_id)
    with transaction(engine, write=True) as session:
        # An imported case's origin, and an instant with microseconds.
        session.execute(
            sa.update(Case)
            .where(Case.id == case_id)
            .values(
                origin_bundle_sha256="a" * 64,
                origin_case_id=uuid.uuid4(),
                origin_exported_at=datetime(2025, 9, 30, 12, 0, 0, 5, tzinfo=UTC),
            )
        )
    statements: list[tuple[Any, sa.Select[Any], dict[str, Any]]] = [
        (CasePublic, sa.select(Case).where(Case.id == sa.bindparam("id")), {"id": case_id}),
        (
            SeizedItemPublic,
            sa.select(SeizedItem).where(SeizedItem.case_id == sa.bindparam("id")),
            {"id": case_id},
        ),
        (EventPublic, sa.select(Event).where(Event.case_id == sa.bindparam("id")), {"id": case_id}),
    ]

    async def read(reads: Statements) -> list[list[Any]]:
        return [await reads.all(stmt, params) for _, stmt, params in statements]

    rows = _with_reads(engine, read)
    with transaction(engine, write=False) as session:
        for (model, stmt, params), found in zip(statements, rows, strict=True):
            orm = session.execute(stmt, params).scalars().all()
            assert len(found) == len(orm) > 0
            for row, obj in zip(found, orm, strict=True):
                computed = {"access": "full", "origin": origin_of(obj)} if model is CasePublic else {}
                if model is CasePublic:
                    assert origin_of(row) is not None
                _same_json(model, row, obj, **computed)


def test_a_served_page_is_the_pages_model(client: TestClient, lead: Caller, partner: Caller) -> None:
    build_world(client, lead, partner, title="Кол-центр «Киев»")
    served = client.get("/api/v1/cases", headers=lead.headers)
    assert served.status_code == 200
    body = served.json()
    assert Page[CasePublic].model_validate(body).model_dump(mode="json") == body
