"""The access model of contract §3: handling codes, sub-agencies, roles, admin."""

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.auth.models import Scope
from tests.conftest import Caller, join, make_caller, new_case, walk
from tests.trust.world import World, build_world

API = "/api/v1"

# Everything under a case, by URL template over the world's ids.
UNDER = (
    "/cases/{case_id}/participants",
    "/cases/{case_id}/participants/{agency_id}",
    "/cases/{case_id}/locations",
    "/cases/{case_id}/seized-items",
    "/cases/{case_id}/detainees",
    "/cases/{case_id}/summary",
    "/cases/{case_id}/bundle",
    "/locations/{location_id}",
    "/seized-items/{item_id}",
    "/seized-items/{item_id}/custody",
    "/seized-items/{item_id}/custody/{event_id}",
    "/detainees/{detainee_id}",
)


@pytest.fixture
def sub_agency(engine: sa.Engine, partner: Caller) -> Caller:
    """An agency whose parent takes part in the case as a partner."""
    return make_caller(engine, "UA-PARTNER-CYBER", Scope.read, Scope.write, parent_id=partner.agency_id)


def _sees_case(client: TestClient, world: World, caller: Caller) -> str | None:
    """'full', 'summary' or None, and the same answer in the list as by id."""
    by_id = client.get(f"{API}/cases/{world.case_id}", headers=caller.headers)
    listed = [c for c in walk(client, f"{API}/cases", caller.headers) if c["id"] == world.case_id]
    if by_id.status_code == 404:
        assert listed == []
        return None
    assert by_id.status_code == 200, by_id.text
    assert [c["access"] for c in listed] == [by_id.json()["access"]]
    assert listed[0]["title"] == by_id.json()["title"] == world.case["title"]
    return by_id.json()["access"]


def _under(client: TestClient, world: World, caller: Caller) -> set[int]:
    return {client.get(API + url.format(**world.ids), headers=caller.headers).status_code for url in UNDER}


@pytest.mark.parametrize(
    ("code", "sub_level", "outsider_level"),
    [
        ("TLP:RED", None, None),
        ("TLP:AMBER+STRICT", None, None),
        ("TLP:AMBER", "full", None),
        ("TLP:GREEN", "summary", "summary"),
        ("TLP:CLEAR", "summary", "summary"),
    ],
)
def test_handling_codes(
    client: TestClient,
    lead: Caller,
    partner: Caller,
    sub_agency: Caller,
    outsider: Caller,
    code: str,
    sub_level: str | None,
    outsider_level: str | None,
) -> None:
    world = build_world(client, lead, partner, handling_code=code)
    assert _sees_case(client, world, lead) == "full"
    assert _sees_case(client, world, partner) == "full"
    assert _under(client, world, partner) == {200}
    for caller, level in ((sub_agency, sub_level), (outsider, outsider_level)):
        assert _sees_case(client, world, caller) == level, (caller.agency_code, code)
        expected = {200} if level == "full" else {404}
        assert _under(client, world, caller) == expected, (caller.agency_code, code)
    if sub_level == "full":
        # Seeing is not taking part: a sub-agency changes nothing.
        patch = client.patch(
            f"{API}/cases/{world.case_id}", json={"title": "x"}, headers=sub_agency.h(if_match='"1"')
        )
        assert patch.status_code == 403


def test_summary_access_shows_only_the_case_own_fields(
    client: TestClient, lead: Caller, partner: Caller, outsider: Caller
) -> None:
    world = build_world(client, lead, partner, handling_code="TLP:GREEN", summary="Call centre in Kyiv")
    seen = client.get(f"{API}/cases/{world.case_id}", headers=outsider.headers).json()
    full = client.get(f"{API}/cases/{world.case_id}", headers=lead.headers).json()
    assert seen == {**full, "access": "summary"}
    # The case's own events reach everyone; what is under it does not.
    events = walk(client, f"{API}/events", outsider.headers)
    assert {e["resource_type"] for e in events if e["case_id"] == world.case_id} == {"case"}
    # Summary access changes nothing.
    patch = client.patch(
        f"{API}/cases/{world.case_id}", json={"title": "x"}, headers=outsider.h(if_match='"1"')
    )
    assert patch.status_code == 404


def test_downgrading_the_code_hides_the_case_again(
    client: TestClient, lead: Caller, partner: Caller, sub_agency: Caller
) -> None:
    world = build_world(client, lead, partner, handling_code="TLP:AMBER")
    assert _sees_case(client, world, sub_agency) == "full"
    response = client.patch(
        f"{API}/cases/{world.case_id}",
        json={"handling_code": "TLP:AMBER+STRICT"},
        headers=lead.h(if_match='"1"'),
    )
    assert response.status_code == 200
    assert _sees_case(client, world, sub_agency) is None
    assert _under(client, world, sub_agency) == {404}


def test_only_the_lead_changes_participants_and_handling_code(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller
) -> None:
    third = make_caller(engine, "KG-THIRD", Scope.read, Scope.write)
    case = new_case(client, lead)
    join(client, lead, case["id"], partner)
    parts = f"{API}/cases/{case['id']}/participants"
    add = client.post(
        parts, json={"agency_id": str(third.agency_id), "role": "observer"}, headers=partner.headers
    )
    assert add.status_code == 403
    role = client.patch(
        f"{parts}/{partner.agency_id}", json={"role": "observer"}, headers=partner.h(if_match='"1"')
    )
    assert role.status_code == 403
    remove = client.delete(f"{parts}/{lead.agency_id}", headers=partner.h(if_match='"1"'))
    assert remove.status_code == 403
    code = client.patch(
        f"{API}/cases/{case['id']}", json={"handling_code": "TLP:RED"}, headers=partner.h(if_match='"1"')
    )
    assert code.status_code == 403
    # The lead may.
    code = client.patch(
        f"{API}/cases/{case['id']}", json={"handling_code": "TLP:RED"}, headers=lead.h(if_match='"1"')
    )
    assert code.status_code == 200 and code.json()["handling_code"] == "TLP:RED"
    add = client.post(
        parts, json={"agency_id": str(third.agency_id), "role": "observer"}, headers=lead.headers
    )
    assert add.status_code == 201


def test_the_lead_cannot_be_removed_or_demoted(client: TestClient, lead: Caller, partner: Caller) -> None:
    case = new_case(client, lead)
    join(client, lead, case["id"], partner)
    own = f"{API}/cases/{case['id']}/participants/{lead.agency_id}"
    assert client.delete(own, headers=lead.h(if_match='"1"')).status_code == 409
    assert client.patch(own, json={"role": "partner"}, headers=lead.h(if_match='"1"')).status_code == 409
    promote = client.patch(
        f"{API}/cases/{case['id']}/participants/{partner.agency_id}",
        json={"role": "lead"},
        headers=lead.h(if_match='"1"'),
    )
    assert promote.status_code == 422
    roles = {
        p["agency_code"]: p["role"]
        for p in walk(client, f"{API}/cases/{case['id']}/participants", lead.headers)
    }
    assert roles == {lead.agency_code: "lead", partner.agency_code: "partner"}


def test_observers_read_only(client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller) -> None:
    observer = make_caller(engine, "OSCE-OBS", *Scope)
    world = build_world(client, lead, partner)
    join_response = client.post(
        f"{API}/cases/{world.case_id}/participants",
        json={"agency_id": str(observer.agency_id), "role": "observer"},
        headers=lead.headers,
    )
    assert join_response.status_code == 201
    assert _under(client, world, observer) == {200}
    ids = world.ids
    attempts = [
        ("PATCH", f"/cases/{ids['case_id']}", {"title": "x"}),
        ("DELETE", f"/cases/{ids['case_id']}", None),
        ("POST", f"/cases/{ids['case_id']}/locations", {"label": "L"}),
        ("PATCH", f"/locations/{ids['location_id']}", {"label": "L"}),
        ("POST", f"/cases/{ids['case_id']}/seized-items", {"category": "cash", "description": "d"}),
        ("PATCH", f"/seized-items/{ids['item_id']}", {"description": "d"}),
        ("POST", f"/seized-items/{ids['item_id']}/custody", {"action": "examined"}),
        ("POST", f"/cases/{ids['case_id']}/detainees", {"label": "D"}),
        ("PATCH", f"/detainees/{ids['detainee_id']}", {"label": "D"}),
        ("DELETE", f"/detainees/{ids['detainee_id']}", None),
        (
            "POST",
            f"/cases/{ids['case_id']}/participants",
            {"agency_id": str(partner.agency_id), "role": "observer"},
        ),
    ]
    for method, url, body in attempts:
        kwargs = {"json": body} if body is not None else {}
        response = client.request(method, API + url, headers=observer.h(if_match='"1"'), **kwargs)
        assert response.status_code == 403, (method, url, response.text)


def test_admin_sees_no_case_its_agency_is_not_in(
    client: TestClient, lead: Caller, partner: Caller, admin: Caller
) -> None:
    world = build_world(client, lead, partner, handling_code="TLP:AMBER")
    assert _sees_case(client, world, admin) is None
    assert _under(client, world, admin) == {404}
    # ... nor any audit entry of it (the host reads the whole log: `caseapi audit list`).
    entries = walk(client, f"{API}/audit", admin.headers)
    assert entries and all(e["case_id"] != world.case_id for e in entries)
