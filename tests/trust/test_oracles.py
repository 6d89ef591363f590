"""Existence oracles: answers that would tell an agency of what it may not see."""

import unicodedata

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from app.auth.models import Scope
from tests.conftest import Caller, join, make_caller, new_case, walk
from tests.trust.world import build_world

API = "/api/v1"
FULL_WIDTH_REF_1 = "\uff32\uff25\uff26-1"  # REF-1 in full-width letters


@pytest.mark.parametrize("code", ["TLP:RED", "TLP:AMBER", "TLP:GREEN"])
def test_another_agencys_reference_is_free_for_me(
    client: TestClient, engine: sa.Engine, lead: Caller, code: str
) -> None:
    """A 409 here would confirm that another agency has a case with that reference."""
    theirs = new_case(client, lead, reference="KZ-2025-0917", handling_code=code)
    prober = make_caller(engine, "XX-PROBE", Scope.read, Scope.write)
    mine = client.post(
        f"{API}/cases", json={"reference": "KZ-2025-0917", "title": "T"}, headers=prober.headers
    )
    assert mine.status_code == 201, mine.text
    assert mine.json()["id"] != theirs["id"]
    # Its twins too: the normalised key is per lead agency as well.
    twin = client.post(f"{API}/cases", json={"reference": "kz-2025-0917", "title": "T"}, headers=lead.headers)
    assert twin.status_code == 409
    # Renaming into another agency's reference is just as silent.
    other = new_case(client, prober, reference="XX-1")
    renamed = client.patch(
        f"{API}/cases/{other['id']}", json={"reference": "KZ-2025-0917-B"}, headers=prober.h(if_match='"1"')
    )
    assert renamed.status_code == 200
    new_case(client, lead, reference="KZ-2025-0917-C")
    renamed = client.patch(
        f"{API}/cases/{other['id']}", json={"reference": "KZ-2025-0917-C"}, headers=prober.h(if_match='"2"')
    )
    assert renamed.status_code == 200, renamed.text


def test_bundle_import_follows_the_same_rule(client: TestClient, engine: sa.Engine, lead: Caller) -> None:
    case = new_case(client, lead, reference="KZ-SECRET-7", handling_code="TLP:RED")
    bundle = client.get(f"{API}/cases/{case['id']}/bundle", headers=lead.headers).json()
    prober = make_caller(engine, "XX-PROBE", Scope.read, Scope.write)
    imported = client.post(f"{API}/bundles", json=bundle, headers=prober.headers)
    assert imported.status_code == 201, imported.text
    again = client.post(f"{API}/bundles", json=bundle, headers=lead.headers)
    assert again.status_code == 409
    bundle["case"]["reference"] = "kz-secret-7"
    assert client.post(f"{API}/bundles", json=bundle, headers=prober.headers).status_code == 409


@pytest.mark.parametrize("twin", ["ref-1", "Ref-1", FULL_WIDTH_REF_1, "REF-1"])
def test_twins_cannot_sit_side_by_side_in_one_agency(client: TestClient, lead: Caller, twin: str) -> None:
    first = new_case(client, lead, reference="REF-1")
    created = client.post(f"{API}/cases", json={"reference": twin, "title": "T"}, headers=lead.headers)
    assert created.status_code == 409, created.text
    assert created.headers["content-type"] == "application/problem+json"
    other = new_case(client, lead, reference="REF-2")
    renamed = client.patch(
        f"{API}/cases/{other['id']}", json={"reference": twin}, headers=lead.h(if_match='"1"')
    )
    assert renamed.status_code == 409
    # A case keeps its own reference in another form (stored in NFKC: full-width letters are plain ones).
    recased = client.patch(
        f"{API}/cases/{first['id']}", json={"reference": twin}, headers=lead.h(if_match='"1"')
    )
    assert recased.status_code == 200 and recased.json()["reference"] == unicodedata.normalize("NFKC", twin)


def test_a_partner_cannot_probe_the_leads_references(
    client: TestClient, lead: Caller, partner: Caller
) -> None:
    """Whether a reference is free among the lead's cases tells of cases the partner
    may not see: only the lead renames."""
    new_case(client, lead, reference="KZ-HIDDEN", handling_code="TLP:RED")
    shared = new_case(client, lead, reference="KZ-SHARED")
    join(client, lead, shared["id"], partner)
    url = f"{API}/cases/{shared['id']}"
    for reference in ("KZ-HIDDEN", "KZ-FREE"):
        response = client.patch(url, json={"reference": reference}, headers=partner.h(if_match='"1"'))
        assert response.status_code == 403, response.text
    assert client.patch(url, json={"title": "New"}, headers=partner.h(if_match='"1"')).status_code == 200


@pytest.mark.parametrize("code", ["TLP:GREEN", "TLP:CLEAR"])
def test_the_participant_filter_does_not_rebuild_hidden_participants(
    client: TestClient, engine: sa.Engine, lead: Caller, partner: Caller, outsider: Caller, code: str
) -> None:
    world = build_world(client, lead, partner, handling_code=code)
    observer = make_caller(engine, "TJ-OBSERVER", Scope.read)
    join(client, lead, world.case_id, observer, role="observer")
    # The outsider sees the case in summary, so it lists it without a filter ...
    assert world.case_id in {c["id"] for c in walk(client, f"{API}/cases", outsider.headers)}
    # ... but no filter value tells it who takes part.
    for agency in (lead, partner, observer):
        found = walk(client, f"{API}/cases?participant={agency.agency_code}", outsider.headers)
        assert world.case_id not in {c["id"] for c in found}, agency.agency_code
    # Those who see the case in full still filter by participant.
    for reader in (lead, partner, observer):
        found = walk(client, f"{API}/cases?participant={partner.agency_code}", reader.headers)
        assert world.case_id in {c["id"] for c in found}
