"""Attacks on the agency hierarchy: it decides who reads AMBER cases (contract §3/§4),
so no API key may move an agency in it, place a new one under another agency, or
rewrite another agency's record."""

import time

import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.agencies.models import Agency
from app.auth.models import Scope
from app.core.config import Settings
from app.main import create_app
from tests.conftest import Caller, make_caller
from tests.trust.world import World, build_world

API = "/api/v1"

# What an AMBER case's sub-agencies read in full, personal data included.
SECRETS = (
    "/cases/{case_id}/detainees",
    "/detainees/{detainee_id}",
    "/cases/{case_id}/bundle",
    "/cases/{case_id}/locations",
)


def _reads_nothing(client: TestClient, world: World, caller: Caller) -> None:
    headers = caller.h(x_purpose="curiosity")
    assert client.get(f"{API}/cases/{world.case_id}", headers=headers).status_code == 404
    for url in SECRETS:
        assert client.get(API + url.format(**world.ids), headers=headers).status_code == 404, url


def _agency(engine: sa.Engine, agency_id: object) -> dict[str, object]:
    t = Agency.__table__  # type: ignore[attr-defined]
    with engine.connect() as conn:
        row = conn.execute(
            sa.select(t.c.code, t.c.name, t.c.country, t.c.kind, t.c.parent_id, t.c.version).where(
                t.c.id == agency_id
            )
        ).one()
    return dict(row._mapping)


def test_an_admin_cannot_move_its_agency_under_a_participant(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    world = build_world(client, lead, partner, handling_code="TLP:AMBER")
    attacker = make_caller(engine, "EVIL-ADMIN", *Scope)
    url = f"{API}/agencies/{attacker.agency_id}"
    moved = client.patch(url, json={"parent_id": str(partner.agency_id)}, headers=attacker.h(if_match='"1"'))
    assert moved.status_code == 422, moved.text
    assert moved.headers["content-type"] == "application/problem+json"
    assert moved.json()["errors"][0]["loc"] == ["body", "parent_id"]
    # Nulling it, or sending it along with an allowed change, is refused the same way.
    for body in ({"parent_id": None}, {"name": "Renamed", "parent_id": str(lead.agency_id)}):
        assert client.patch(url, json=body, headers=attacker.h(if_match='"1"')).status_code == 422
    assert _agency(engine, attacker.agency_id)["parent_id"] is None
    _reads_nothing(client, world, attacker)


def test_an_admin_cannot_create_an_agency_under_another_agency(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    """A sub-agency of a participant would read the AMBER case as soon as the host gave it a key."""
    build_world(client, lead, partner, handling_code="TLP:AMBER")
    attacker = make_caller(engine, "EVIL-ADMIN", *Scope)
    body = {"code": "EVIL-UNDER-UA", "name": "Mole", "kind": "other", "parent_id": str(partner.agency_id)}
    refused = client.post(f"{API}/agencies", json=body, headers=attacker.h(idempotency_key="mole"))
    assert refused.status_code == 403, refused.text
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM agency WHERE code = 'EVIL-UNDER-UA'")).scalar() == 0
    # Under its own agency, or under an agency below it, is its own business.
    own = client.post(
        f"{API}/agencies",
        json={**body, "code": "EVIL-ADMIN-UNIT", "parent_id": str(attacker.agency_id)},
        headers=attacker.headers,
    )
    assert own.status_code == 201, own.text
    below = client.post(
        f"{API}/agencies",
        json={**body, "code": "EVIL-ADMIN-UNIT-DESK", "parent_id": own.json()["id"]},
        headers=attacker.headers,
    )
    assert below.status_code == 201, below.text


def test_an_admin_cannot_rewrite_another_agencys_record(
    client: TestClient, engine: sa.Engine, lead: Caller
) -> None:
    attacker = make_caller(engine, "EVIL-ADMIN", *Scope)
    before = _agency(engine, lead.agency_id)
    for change in ({"code": "KZ-FAKE"}, {"country": "RU"}, {"kind": "private_company"}, {"name": "Fake"}):
        response = client.patch(
            f"{API}/agencies/{lead.agency_id}", json=change, headers=attacker.h(if_match='"1"')
        )
        assert response.status_code == 403, (change, response.text)
    assert _agency(engine, lead.agency_id) == before
    # Its own record it may keep up to date.
    own = client.patch(
        f"{API}/agencies/{attacker.agency_id}", json={"name": "Honest"}, headers=attacker.h(if_match='"1"')
    )
    assert own.status_code == 200, own.text


def test_a_host_change_of_the_hierarchy_reaches_cached_keys_within_the_ttl(
    settings: Settings, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    """The key cache holds the caller's parent too: when the host moves a sub-agency
    away from a participant, its cached keys lose the AMBER case as a revoked key
    would (CASEAPI_AUTH_CACHE_SECONDS, at most one second), not later."""
    sub = make_caller(engine, "UA-PARTNER-CYBER", Scope.read, parent_id=partner.agency_id)
    cached = create_app(settings.model_copy(update={"auth_cache_seconds": 0.5}))
    with TestClient(cached) as client:
        world = build_world(client, lead, partner, handling_code="TLP:AMBER")
        url = f"{API}/cases/{world.case_id}/locations"
        assert client.get(url, headers=sub.headers).status_code == 200
        with engine.begin() as conn:
            t = Agency.__table__  # type: ignore[attr-defined]
            conn.execute(t.update().where(t.c.id == sub.agency_id).values(parent_id=None))
        moved = time.monotonic()
        while client.get(url, headers=sub.headers).status_code == 200:
            assert time.monotonic() - moved < 1.0, "a cached key kept its old parent"
            time.sleep(0.05)
        assert client.get(url, headers=sub.headers).status_code == 404
