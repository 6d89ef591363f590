"""Amendments: once a peer mirrors a case, a change to the records under it
travels as those records (or their removal), not as the case whole; a change
to the case or its participants, or a mirror the peer lost, sends it whole.
A hostile home's amendment is held to the same bounds as a snapshot."""

import copy
import uuid
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from app.core.db import create_db_engine
from app.federation import mirror
from tests.federation.conftest import Instance, peer
from tests.federation.test_hostile_peers import agency_record, deliver, refused, rows_held
from tests.federation.test_mirrors import Api, a_case, audited, eventually, shared_case, status_of


def delivered(instance: Instance, case_id: str, since: int) -> tuple[list[str], list[str]]:
    """How `case_id` went to the peer in the deliveries audited after the first `since`: whole, amended."""
    whole, amended = [], []
    for entry in audited(instance, "federation.delivered")[since:]:
        whole += [c for c in entry["detail"]["cases"] if c == case_id]
        amended += [c for c in entry["detail"]["amended"] if c == case_id]
    return whole, amended


def row_of(instance: Instance, table: sa.Table, row_id: str) -> dict[str, Any]:
    """A row as `instance` holds it, in the form a delivery carries it."""
    engine = create_db_engine(instance.env["CASEAPI_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.id == uuid.UUID(row_id))).one()
    finally:
        engine.dispose()
    return orjson.loads(orjson.dumps(row._asdict()))  # type: ignore[no-any-return]


def item_json(location_id: str | None = None, description: str = "Computers") -> dict[str, Any]:
    return {"category": "computer", "description": description, "quantity": 41, "location_id": location_id}


@pytest.mark.fresh_instances  # Ukraine's instance removes and adds Kazakhstan's again
def test_changes_reach_a_mirror_as_amendments_and_a_lost_mirror_whole(
    kz_ua: tuple[Instance, Instance],
) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    case = shared_case(kz, ua)
    since = len(audited(kz_i, "federation.delivered"))

    location = kz.ok("POST", f"/cases/{case['id']}/locations", json={"label": "Office in Kyiv"})
    kept = kz.ok("POST", f"/cases/{case['id']}/seized-items", json=item_json(location["id"]))
    dropped = kz.ok("POST", f"/cases/{case['id']}/seized-items", json=item_json(description="Phones"))
    eventually(lambda: status_of(ua, f"/seized-items/{dropped['id']}") == 200)
    # Changed, and deleted with its chain of custody (its seizure), at home.
    kept = kz.ok(
        "PATCH",
        f"/seized-items/{kept['id']}",
        json={"description": "41 computers"},
        headers={"If-Match": f'"{kept["version"]}"'},
    )
    deleted = kz("DELETE", f"/seized-items/{dropped['id']}", headers={"If-Match": f'"{dropped["version"]}"'})
    assert deleted.status_code == 204, deleted.text
    eventually(lambda: status_of(ua, f"/seized-items/{dropped['id']}") == 404)

    mirrored = ua.ok("GET", f"/seized-items/{kept['id']}")
    assert (mirrored["description"], mirrored["version"]) == ("41 computers", kept["version"])
    assert ua.ok("GET", f"/seized-items/{kept['id']}/custody") == kz.ok(
        "GET", f"/seized-items/{kept['id']}/custody"
    )
    assert ua.ok("GET", f"/locations/{location['id']}")["label"] == "Office in Kyiv"
    # The mirror's feed says each change as the home's did.
    events = {(e["type"], e["resource_id"]) for e in ua.ok("GET", "/events", params={"limit": 200})["items"]}
    assert {
        ("location.created", location["id"]),
        ("seized_item.updated", kept["id"]),
        ("seized_item.deleted", dropped["id"]),
    } <= events
    # None of it sent the case whole.
    whole, amended = delivered(kz_i, case["id"], since)
    assert whole == [] and amended

    # Ukraine's operator removes Kazakhstan's instance and adds it again: the mirror went
    # with it, and Kazakhstan's instance still thinks Ukraine's holds it. The next change is
    # refused as an amendment of nothing, and the case is sent whole.
    ua_i.cli("peer", "remove", "kz.caseapi")
    assert status_of(ua, f"/cases/{case['id']}") == 404
    peer(ua_i, kz_i)
    since = len(audited(kz_i, "federation.delivered"))
    kz.ok(
        "PATCH",
        f"/seized-items/{kept['id']}",
        json={"quantity": 40},
        headers={"If-Match": f'"{kept["version"]}"'},
    )
    eventually(lambda: status_of(ua, f"/cases/{case['id']}") == 200)
    assert ua.ok("GET", f"/locations/{location['id']}")["label"] == "Office in Kyiv"
    assert ua.ok("GET", f"/seized-items/{kept['id']}")["quantity"] == 40
    whole, _ = delivered(kz_i, case["id"], since)
    assert whole == [case["id"]]

    # Not a failure of the peer's.
    def caught_up() -> Any:
        [state] = [p for p in kz.ok("GET", "/federation/peers")["items"] if p["instance_id"] == "ua.caseapi"]
        return state if state["pending"] == 0 else None

    assert eventually(caught_up)["last_error"] is None


@pytest.mark.fresh_instances  # Ukraine's instance signs deliveries of its own making
def test_a_hostile_amendment_is_refused_whole(kz_ua: tuple[Instance, Instance]) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    # Ukraine's case, mirrored on Kazakhstan's instance, and a case of Kazakhstan's own.
    ua_case = ua.ok(
        "POST",
        "/cases",
        json={"reference": "UA-2025-CALL-CENTRE", "title": "Call centre", "handling_code": "TLP:AMBER"},
    )
    ua.ok(
        "POST",
        f"/cases/{ua_case['id']}/participants",
        json={"agency_id": ua.agency_id("KZ-MVD"), "role": "partner"},
    )
    ua_location = ua.ok("POST", f"/cases/{ua_case['id']}/locations", json={"label": "Kyiv"})
    eventually(lambda: status_of(kz, f"/locations/{ua_location['id']}") == 200)
    own = a_case(kz, reference="KZ-OWN", handling_code="TLP:RED")
    kz_location = kz.ok("POST", f"/cases/{own['id']}/locations", json={"label": "Almaty"})
    kz_item = kz.ok("POST", f"/cases/{own['id']}/seized-items", json=item_json(kz_location["id"]))
    held = rows_held(kz_i, own["id"])
    chain = kz.ok("GET", f"/seized-items/{kz_item['id']}/custody")
    agencies = [agency_record(ua, "UA-LE", "ua.caseapi")]

    def amendment(case_id: str, changes: dict[str, Any], removed: dict[str, Any] | None = None) -> Any:
        case = {"id": case_id, "agencies": agencies, "changes": changes, "removed": removed or {}}
        return deliver(ua_i, kz_i, [case])

    # Kazakhstan's own case, amended by Ukraine's instance.
    renamed = {**held["location"][0], "label": "Nowhere"}
    assert "does not live on ua.caseapi" in refused(amendment(own["id"], {"location": [renamed]}), 403)
    # A case Kazakhstan's instance holds no mirror of.
    answer = amendment(str(uuid.uuid4()), {"location": []})
    assert answer.status_code == 409 and answer.json()["type"] == "urn:caseapi:problem:mirror-not-held", (
        answer.text
    )
    # Kazakhstan's location, filed under Ukraine's case by its id.
    moved = {**renamed, "case_id": ua_case["id"]}
    assert "not its own" in refused(amendment(ua_case["id"], {"location": [moved]}), 403)
    # A new item of Ukraine's case at Kazakhstan's location.
    item = {**held["seized_item"][0], "id": str(uuid.uuid4()), "case_id": ua_case["id"]}
    assert "outside case" in refused(amendment(ua_case["id"], {"seized_item": [item]}), 403)
    # A seizure in the chain of Kazakhstan's item.
    seizure = {**held["custody_event"][0], "id": str(uuid.uuid4())}
    assert "outside case" in refused(amendment(ua_case["id"], {"custody_event": [seizure]}), 403)
    # A request of Ukraine's case, sent again under no case at all: a record the mirror's
    # withdrawal would never reach.
    sent = ua.ok(
        "POST",
        "/requests",
        json={
            "to_agency_id": ua.agency_id("KZ-MVD"),
            "case_id": ua_case["id"],
            "subject": "Numbers",
            "body": "?",
        },
    )
    eventually(lambda: status_of(kz, f"/requests/{sent['id']}") == 200)
    request = row_of(kz_i, mirror.REQUESTS, sent["id"])
    loose = request | {"id": str(uuid.uuid4()), "case_id": None}
    assert "outside case" in refused(amendment(ua_case["id"], {"information_request": [loose]}), 403)
    # The case itself, or its participants, change only with the case whole.
    case_row = rows_held(kz_i, ua_case["id"])["case"][0]
    assert "nothing else" in refused(amendment(ua_case["id"], {"case": [case_row]}), 422)
    assert "nothing else" in refused(amendment(ua_case["id"], {}, {"participant": []}), 422)
    assert kz.ok("GET", f"/locations/{kz_location['id']}")["label"] == "Almaty"
    assert status_of(kz, f"/seized-items/{item['id']}") == 404
    assert kz.ok("GET", f"/seized-items/{kz_item['id']}/custody") == chain
    assert status_of(kz, f"/requests/{loose['id']}") == 404

    # Removing Kazakhstan's location and item "from Ukraine's case" is refused, and removes nothing.
    removing = amendment(ua_case["id"], {}, {"location": [kz_location["id"]], "seized_item": [kz_item["id"]]})
    assert "not its own" in refused(removing, 403)
    assert kz.ok("GET", f"/locations/{kz_location['id']}")["label"] == "Almaty"
    assert kz.ok("GET", f"/seized-items/{kz_item['id']}")["id"] == kz_item["id"]
    # What is Ukraine's to amend is amended.
    ua_held = rows_held(kz_i, ua_case["id"])
    relabelled = copy.deepcopy(ua_held["location"][0]) | {"label": "Kyiv, Podil", "version": 2}
    assert amendment(ua_case["id"], {"location": [relabelled]}).status_code == 200
    assert kz.ok("GET", f"/locations/{ua_location['id']}")["label"] == "Kyiv, Podil"
    gone = amendment(ua_case["id"], {}, {"location": [ua_location["id"]]})
    assert gone.status_code == 200, gone.text
    assert status_of(kz, f"/locations/{ua_location['id']}") == 404
