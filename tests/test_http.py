"""The HTTP conventions of contract §2, checked on representative routes."""

import threading
import uuid

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.auth.models import Scope
from tests.conftest import Caller, join, make_caller, new_case, run_unit, walk

PROBLEM = "application/problem+json"


def _problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert {"type", "title", "status", "detail"} <= set(body)
    assert body["status"] == status
    return body


def test_missing_unknown_and_revoked_keys_are_401(
    client: TestClient, engine: sa.Engine, lead: Caller
) -> None:
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic Zm9vOmJhcg=="}):
        response = client.get("/api/v1/cases", headers=headers)
        _problem(response, 401)
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/api/v1/cases", headers=lead.headers).status_code == 200
    from app.auth import service as auth

    run_unit(engine, lambda tx: auth.revoke_client(tx, lead.key))
    _problem(client.get("/api/v1/cases", headers=lead.headers), 401)


def test_missing_scope_is_403(client: TestClient, engine: sa.Engine) -> None:
    reader = make_caller(engine, "READER", Scope.read)
    _problem(client.post("/api/v1/cases", json={"reference": "R", "title": "T"}, headers=reader.headers), 403)
    writer_only = make_caller(engine, "WRITER", Scope.write)
    _problem(client.get("/api/v1/cases", headers=writer_only.headers), 403)
    body = {"code": "NEW", "name": "New", "kind": "police"}
    _problem(client.post("/api/v1/agencies", json=body, headers=reader.headers), 403)


def test_malformed_json_and_bad_fields(client: TestClient, lead: Caller) -> None:
    bad_json = client.post(
        "/api/v1/cases",
        content=b'{"reference": ',
        headers={**lead.headers, "Content-Type": "application/json"},
    )
    assert bad_json.status_code in (400, 422)
    assert bad_json.headers["content-type"] == PROBLEM
    for extra in (
        {"id": str(uuid.uuid4())},
        {"version": 3},
        {"lead_agency_id": str(uuid.uuid4())},
        {"created_at": "2025-01-01T00:00:00Z"},
        {"access": "full"},
        {"nonsense": 1},
    ):
        response = client.post(
            "/api/v1/cases", json={"reference": "R", "title": "T", **extra}, headers=lead.headers
        )
        body = _problem(response, 422)
        assert body["errors"] and all({"loc", "msg"} <= set(e) for e in body["errors"])
    naive = client.post(
        "/api/v1/cases",
        json={"reference": "R", "title": "T", "opened_at": "2025-01-01T00:00:00"},
        headers=lead.headers,
    )
    _problem(naive, 422)


def test_path_id_not_a_uuid(client: TestClient, lead: Caller) -> None:
    assert client.get("/api/v1/cases/not-a-uuid", headers=lead.headers).status_code in (404, 422)
    _problem(client.get(f"/api/v1/cases/{uuid.uuid4()}", headers=lead.headers), 404)


def test_body_over_one_mebibyte_is_413(client: TestClient, lead: Caller) -> None:
    big = b'{"reference": "R", "title": "' + b"x" * (1024 * 1024) + b'"}'
    response = client.post(
        "/api/v1/cases", content=big, headers={**lead.headers, "Content-Type": "application/json"}
    )
    _problem(response, 413)

    def chunks():  # type: ignore[no-untyped-def]
        yield b'{"reference": "R", "title": "'
        for _ in range(20):
            yield b"x" * 65536
        yield b'"}'

    streamed = client.post(
        "/api/v1/cases", content=chunks(), headers={**lead.headers, "Content-Type": "application/json"}
    )
    _problem(streamed, 413)
    assert client.get("/api/v1/cases", headers=lead.headers).json()["items"] == []


def test_405_names_every_allowed_method(client: TestClient, lead: Caller) -> None:
    response = client.put("/api/v1/cases", headers=lead.headers)
    _problem(response, 405)
    assert set(response.headers["allow"].split(", ")) == {"GET", "POST"}
    response = client.post(f"/api/v1/cases/{uuid.uuid4()}", headers=lead.headers)
    assert set(response.headers["allow"].split(", ")) == {"GET", "PATCH", "DELETE"}


def test_limit_bounds_and_garbled_cursor(client: TestClient, lead: Caller) -> None:
    for limit in (0, 201, -1):
        _problem(client.get("/api/v1/cases", params={"limit": limit}, headers=lead.headers), 422)
    for cursor in ("garbage", "eyJ4IjoxfQ.abc", "W10.0000", "a" * 600):
        response = client.get("/api/v1/cases", params={"cursor": cursor}, headers=lead.headers)
        assert response.status_code in (400, 422), cursor
        assert response.headers["content-type"] == PROBLEM
    # A cursor of one list is not valid for another.
    for _ in range(3):
        new_case(client, lead)
    page = client.get("/api/v1/cases", params={"limit": 1}, headers=lead.headers).json()
    other = client.get("/api/v1/agencies", params={"cursor": page["next_cursor"]}, headers=lead.headers)
    assert other.status_code == 400


def test_pagination_walks_everything_once_while_rows_are_added(client: TestClient, lead: Caller) -> None:
    first = {new_case(client, lead)["id"] for _ in range(7)}
    seen: list[str] = []
    cursor = None
    added: set[str] = set()
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = client.get("/api/v1/cases", params=params, headers=lead.headers).json()
        seen.extend(item["id"] for item in page["items"])
        added.add(new_case(client, lead)["id"])  # a row arrives between pages
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == len(set(seen)), "an item came twice"
    assert first <= set(seen), "an item that existed all along was skipped"
    assert set(seen) <= first | added


def test_idempotent_create_replays(client: TestClient, lead: Caller) -> None:
    body = {"reference": "IDEM-1", "title": "T"}
    headers = lead.h(idempotency_key="k-1")
    first = client.post("/api/v1/cases", json=body, headers=headers)
    again = client.post("/api/v1/cases", json=body, headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert again.headers["location"] == first.headers["location"]
    assert len(walk(client, "/api/v1/cases", lead.headers)) == 1
    other = client.post("/api/v1/cases", json={**body, "title": "other"}, headers=headers)
    _problem(other, 422)


def test_concurrent_writers_with_one_etag_exactly_one_wins(
    application: FastAPI, client: TestClient, lead: Caller
) -> None:
    case = new_case(client, lead)
    url = f"/api/v1/cases/{case['id']}"
    barrier = threading.Barrier(4)
    statuses: list[int] = []

    def write(n: int) -> None:
        with TestClient(application) as own:
            barrier.wait(timeout=10)
            response = own.patch(url, json={"title": f"writer {n}"}, headers=lead.h(if_match='"1"'))
            statuses.append(response.status_code)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert sorted(statuses) == [200, 412, 412, 412]
    final = client.get(url, headers=lead.headers)
    assert final.headers["etag"] == '"2"'


def test_delete_needs_if_match_and_case_with_contents_is_409(
    client: TestClient, lead: Caller, partner: Caller
) -> None:
    case = new_case(client, lead)
    url = f"/api/v1/cases/{case['id']}"
    client.post(f"{url}/locations", json={"label": "L1"}, headers=lead.headers)
    _problem(client.delete(url, headers=lead.headers), 428)
    _problem(client.delete(url, headers=lead.h(if_match='"1"')), 409)
    empty = new_case(client, lead)
    join(client, lead, empty["id"], partner)
    assert client.delete(f"/api/v1/cases/{empty['id']}", headers=lead.h(if_match='"1"')).status_code == 204
    _problem(client.get(f"/api/v1/cases/{empty['id']}", headers=lead.headers), 404)
    # The deletion is audited, the participants' removal with it.
    actions = [e["action"] for e in walk(client, f"/api/v1/audit?case_id={empty['id']}", lead.headers)]
    assert actions[-3:] == ["participant.deleted", "participant.deleted", "case.deleted"]


def test_health_and_docs_without_auth(client: TestClient) -> None:
    assert client.get("/health").status_code == 200
    assert client.get("/api/v1/health").status_code == 200
    assert client.get("/api/v1/health/ready").status_code == 200
    docs = client.get("/docs")
    assert docs.status_code == 200
    # Assets are served by the application itself, not a CDN.
    assert "cdn" not in docs.text.lower()
    assert client.get("/redoc").status_code == 200
    assert "cdn" not in client.get("/redoc").text.lower()
    assert client.get("/openapi.json").json()["info"]["title"] == "caseapi"
    assert client.get("/static-offline-docs/swagger-ui-bundle.js").status_code == 200
    assert client.get("/static-offline-docs/redoc.standalone.js").status_code == 200


def test_bundles_have_their_own_body_limit(client: TestClient, settings, lead: Caller) -> None:  # type: ignore[no-untyped-def]
    from app.core.config import Settings
    from app.main import create_app

    two_mib = b'{"bundle_version": 1, "pad": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    headers = {**lead.headers, "Content-Type": "application/json"}
    # Over the general limit, under the bundle limit: read and judged on its content.
    assert client.post("/api/v1/bundles", content=two_mib, headers=headers).status_code == 422
    assert client.post("/api/v1/cases", content=two_mib, headers=headers).status_code == 413
    strict = create_app(Settings(database_url=settings.database_url, max_bundle_bytes=1024 * 1024))
    with TestClient(strict) as strict_client:
        _problem(strict_client.post("/api/v1/bundles", content=two_mib, headers=headers), 413)
