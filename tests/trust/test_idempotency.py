"""Idempotency-Key on every creating POST of the app."""

import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.auth.models import Scope
from tests.conftest import Caller, make_caller
from tests.trust.world import World, build_world

API = "/api/v1"


def count(engine: sa.Engine, table: str) -> int:
    with engine.connect() as conn:
        return conn.execute(sa.text(f'SELECT count(*) FROM "{table}"')).scalar_one()


def creating_posts(application: FastAPI) -> set[str]:
    doc = application.openapi()
    return {path for path, item in doc["paths"].items() if "201" in item.get("post", {}).get("responses", {})}


@pytest.fixture
def world(client: TestClient, lead: Caller, partner: Caller) -> World:
    return build_world(client, lead, partner)


def bodies(
    client: TestClient, world: World, lead: Caller, partner: Caller, engine: sa.Engine
) -> dict[str, Any]:
    """For each creating POST: (url, two different valid bodies, table that grows).

    Bodies are factories of a serial, so a second client can create its own.
    """
    third = make_caller(engine, "TJ-MVD", Scope.read)
    bundle = client.get(f"{API}/cases/{world.case_id}/bundle", headers=lead.headers).json()

    def bundle_body(n: int) -> dict[str, Any]:
        return {**bundle, "case": {**bundle["case"], "reference": f"IMPORTED-{n}"}}

    return {
        f"{API}/agencies": (
            "agency",
            lambda n: {"code": f"NEW-{n}", "name": "New", "kind": "police"},
        ),
        f"{API}/cases": ("case", lambda n: {"reference": f"R-{n}", "title": "T"}),
        f"{API}/cases/{{case_id}}/participants": (
            "participant",
            lambda n: {"agency_id": str(third.agency_id), "role": ["observer", "partner"][n % 2]},
        ),
        f"{API}/cases/{{case_id}}/locations": ("location", lambda n: {"label": f"L-{n}"}),
        f"{API}/cases/{{case_id}}/seized-items": (
            "seized_item",
            lambda n: {"category": "cash", "description": f"d-{n}"},
        ),
        f"{API}/seized-items/{{item_id}}/custody": (
            "custody_event",
            lambda n: {"action": "examined", "note": f"{n}"},
        ),
        f"{API}/cases/{{case_id}}/detainees": ("detainee", lambda n: {"label": f"D-{n}"}),
        f"{API}/requests": (
            "information_request",
            lambda n: {"to_agency_id": str(partner.agency_id), "subject": f"S-{n}", "body": "B"},
        ),
        f"{API}/requests/{{request_id}}/messages": ("request_message", lambda n: {"body": f"M-{n}"}),
        f"{API}/bundles": ("case", bundle_body),
        # Uploads: the JSON document is the file (see FILE_QUERY).
        f"{API}/cases/{{case_id}}/attachments": ("attachment", lambda n: {"page": n}),
        f"{API}/requests/{{request_id}}/messages/{{message_id}}/attachments": (
            "attachment",
            lambda n: {"page": n},
        ),
    }


# What an upload takes besides its body.
FILE_QUERY = "?filename=evidence.json"


def _url(template: str, world: World) -> str:
    return template.format(**world.ids) + (FILE_QUERY if template.endswith("/attachments") else "")


def test_every_creating_post_honours_the_key(
    client: TestClient,
    application: FastAPI,
    engine: sa.Engine,
    world: World,
    lead: Caller,
    partner: Caller,
    admin: Caller,
) -> None:
    table = bodies(client, world, lead, partner, engine)
    assert creating_posts(application) == set(table), "a new creating POST: add it to bodies()"
    lead_admin = make_caller(engine, lead.agency_code, *Scope)
    other_client = make_caller(engine, lead.agency_code, *Scope)
    for template, (tablename, body) in table.items():
        url = _url(template, world)
        key = f"key-{template}"
        before = count(engine, tablename)
        first = client.post(url, json=body(1), headers=lead_admin.h(idempotency_key=key))
        assert first.status_code == 201, (url, first.text)
        assert count(engine, tablename) == before + 1
        replay = client.post(url, json=body(1), headers=lead_admin.h(idempotency_key=key))
        assert replay.status_code == 201, (url, replay.text)
        assert replay.content == first.content
        assert replay.headers.get("location") == first.headers.get("location")
        assert replay.headers.get("etag") == first.headers.get("etag")
        assert count(engine, tablename) == before + 1, f"{url}: the replay created a row"
        other_body = client.post(url, json=body(2), headers=lead_admin.h(idempotency_key=key))
        assert other_body.status_code == 422, (url, other_body.text)
        assert other_body.headers["content-type"] == "application/problem+json"
        assert count(engine, tablename) == before + 1
        if tablename == "participant":
            continue  # the agency already takes part: a second client would get a 409, not a new row
        # Keys belong to a client: another client with the same key creates its own.
        mine = client.post(url, json=body(3), headers=other_client.h(idempotency_key=key))
        assert mine.status_code == 201, (url, mine.text)
        assert mine.json() != first.json()
        assert count(engine, tablename) == before + 2


def test_keys_expire_after_24_hours(client: TestClient, engine: sa.Engine, lead: Caller) -> None:
    body = {"reference": "R-EXP", "title": "T"}
    first = client.post(f"{API}/cases", json=body, headers=lead.h(idempotency_key="exp"))
    assert first.status_code == 201
    with engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE idempotency_record SET created_at = :t"),
            {"t": _hours_ago(engine, 23)},
        )
    replay = client.post(f"{API}/cases", json=body, headers=lead.h(idempotency_key="exp"))
    assert replay.status_code == 201 and replay.json() == first.json()
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE idempotency_record SET created_at = :t"), {"t": _hours_ago(engine, 25)})
    # Expired: the key is new again, so the request runs (and meets the taken reference).
    again = client.post(f"{API}/cases", json=body, headers=lead.h(idempotency_key="exp"))
    assert again.status_code == 409
    fresh = client.post(
        f"{API}/cases", json={"reference": "R-EXP2", "title": "T"}, headers=lead.h(idempotency_key="exp")
    )
    assert fresh.status_code == 201 and fresh.json()["id"] != first.json()["id"]


def _hours_ago(engine: sa.Engine, hours: int) -> Any:
    from datetime import UTC, datetime, timedelta

    value = datetime.now(UTC) - timedelta(hours=hours)
    # SQLite stores naive UTC (app.db.UTCDateTime).
    return value.replace(tzinfo=None) if engine.dialect.name == "sqlite" else value


def _race(n: int, fn: Callable[[], Any]) -> list[Any]:
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n

    def run(i: int) -> None:
        barrier.wait()
        results[i] = fn()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


@pytest.mark.parametrize("attempt", range(3))
def test_a_concurrent_duplicate_creates_one_row(
    client: TestClient, engine: sa.Engine, lead: Caller, attempt: int
) -> None:
    body = {"reference": f"R-RACE-{attempt}", "title": "T"}
    responses = _race(
        2, lambda: client.post(f"{API}/cases", json=body, headers=lead.h(idempotency_key="race"))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses in ([201, 201], [201, 409]), [r.text for r in responses]
    created = [r for r in responses if r.status_code == 201]
    assert len({r.content for r in created}) == 1, "two 201s must be the same response"
    for r in responses:
        if r.status_code == 409:
            assert r.headers["content-type"] == "application/problem+json"
    assert count(engine, "case") == 1
    assert count(engine, "idempotency_record") == 1
