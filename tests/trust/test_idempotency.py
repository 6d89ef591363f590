"""Idempotency-Key on every creating POST of the app."""

import threading
from collections.abc import Callable
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from app.auth.models import Scope
from app.idempotency.service import PURGE_BATCH
from tests.conftest import Caller, make_caller, problem_of
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
            lambda n: {"code": f"{lead.agency_code}-NEW-{n}", "name": "New", "kind": "police"},
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
        f"{API}/cases/{{case_id}}/identifiers": (
            "identifier",
            lambda n: {"kind": "phone", "value": f"+7 701 000 {n // 100 % 100:02d} {n % 100:02d}"},
        ),
        f"{API}/subscriptions": (
            "webhook_subscription",
            lambda n: {"url": f"https://93.184.215.14/hooks/{n}"},  # a public address: no DNS
        ),
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
    # SQLite stores naive UTC (app.core.db.UTCDateTime).
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


PERSONAL = {"full_name": "Ivan Petrenko", "date_of_birth": "1990-01-02", "id_document": "P-1"}
PURPOSE = "Extradition file KZ-2025-17"


def _disclosures(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(
            sa.text("SELECT count(*) FROM audit_entry WHERE action = 'personal_data.disclosed'")
        ).scalar_one()


def test_a_replay_discloses_only_what_the_record_holds_now(
    client: TestClient, engine: sa.Engine, world: World, lead: Caller
) -> None:
    """The attack: replay a create to get back personal data that was erased since."""
    url = f"{API}/cases/{world.case_id}/detainees"
    body = {"label": "D-9", **PERSONAL}
    headers = lead.h(idempotency_key="d-9", x_purpose=PURPOSE)
    first = client.post(url, json=body, headers=headers)
    assert first.status_code == 201 and first.json()["full_name"] == PERSONAL["full_name"]
    detainee_url = first.headers["location"]

    # Each replay that shows personal data is a disclosure, audited like a read.
    before = _disclosures(engine)
    replay = client.post(url, json=body, headers=headers)
    assert replay.status_code == 201 and replay.json() == first.json()
    assert replay.headers["location"] == detainee_url and replay.headers["etag"] == first.headers["etag"]
    assert _disclosures(engine) == before + 1

    erased = client.patch(
        detainee_url, json=dict.fromkeys(PERSONAL), headers=lead.h(if_match='"1"', x_purpose=PURPOSE)
    )
    assert erased.status_code == 200
    replay = client.post(url, json=body, headers=headers)
    assert replay.status_code == 201
    assert {k: replay.json()[k] for k in PERSONAL} == dict.fromkeys(PERSONAL)
    assert replay.headers["etag"] == '"2"'
    assert "Ivan" not in replay.text

    assert client.delete(detainee_url, headers=lead.h(if_match='"2"')).status_code == 204
    gone = client.post(url, json=body, headers=headers)
    assert gone.status_code == 404, gone.text
    assert problem_of(gone) == problem_of(client.get(detainee_url, headers=lead.headers))
    assert count(engine, "detainee") == 1, "the replay of a deleted record must not create it again"


def test_a_replay_answers_as_the_read_path_does_for_the_caller_now(
    client: TestClient, engine: sa.Engine, world: World, lead: Caller, partner: Caller
) -> None:
    """A partner removed from the case cannot read back what it created there by replaying."""
    url = f"{API}/cases/{world.case_id}/locations"
    body = {"label": "Safe house", "address": "Kyiv, Khreshchatyk 1"}
    first = client.post(url, json=body, headers=partner.h(idempotency_key="loc-1"))
    assert first.status_code == 201
    parts = f"{API}/cases/{world.case_id}/participants/{partner.agency_id}"
    assert client.delete(parts, headers=lead.h(if_match='"1"')).status_code == 204
    replay = client.post(url, json=body, headers=partner.h(idempotency_key="loc-1"))
    assert replay.status_code == 404
    assert "Khreshchatyk" not in replay.text
    assert count(engine, "location") == 2  # the world's and the partner's: nothing created again


def test_no_response_body_is_kept(client: TestClient, engine: sa.Engine, world: World, lead: Caller) -> None:
    url = f"{API}/cases/{world.case_id}/detainees"
    response = client.post(
        url, json={"label": "D-7", **PERSONAL}, headers=lead.h(idempotency_key="d-7", x_purpose=PURPOSE)
    )
    assert response.status_code == 201
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT * FROM idempotency_record")).mappings().all()
    assert len(rows) == 1
    assert set(rows[0]) == {"client_id", "key", "fingerprint", "status_code", "location", "created_at"}
    assert rows[0]["location"] == response.headers["location"]
    assert all("Ivan" not in str(value) and "P-1" not in str(value) for value in rows[0].values())


def test_expired_records_are_purged_in_bounded_batches(
    client: TestClient, engine: sa.Engine, lead: Caller
) -> None:
    table = sa.table(
        "idempotency_record",
        sa.column("client_id", sa.Uuid()),
        sa.column("key", sa.String()),
        sa.column("fingerprint", sa.String()),
        sa.column("status_code", sa.Integer()),
        sa.column("location", sa.String()),
        sa.column("created_at", sa.DateTime()),
    )
    old = _hours_ago(engine, 25)
    expired = PURGE_BATCH + 20
    with engine.begin() as conn:
        conn.execute(
            table.insert(),
            [
                {
                    "client_id": lead.client_id,
                    "key": f"old-{n}",
                    "fingerprint": "0" * 64,
                    "status_code": 201,
                    "location": "/api/v1/cases/00000000-0000-0000-0000-000000000000",
                    "created_at": old,
                }
                for n in range(expired)
            ],
        )
    fresh = client.post(
        f"{API}/cases", json={"reference": "R-1", "title": "T"}, headers=lead.h(idempotency_key="new")
    )
    assert fresh.status_code == 201
    # One creating POST purges one batch; the fresh record stays.
    assert count(engine, "idempotency_record") == expired - PURGE_BATCH + 1
    # Any creating POST purges, with a key or without one.
    assert (
        client.post(f"{API}/cases", json={"reference": "R-2", "title": "T"}, headers=lead.headers).status_code
        == 201
    )
    assert count(engine, "idempotency_record") == 1
    replay = client.post(
        f"{API}/cases", json={"reference": "R-1", "title": "T"}, headers=lead.h(idempotency_key="new")
    )
    assert replay.status_code == 201 and replay.json() == fresh.json()
