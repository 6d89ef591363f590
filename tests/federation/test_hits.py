"""Federated hit/no-hit: a search asks every peer, signed, naming the
searching agency; each answers by its own rules for that agency, and every
peer is named in the answer with how it answered."""

import uuid
from collections.abc import Callable

import pytest

from tests.federation.conftest import Instance, peered
from tests.federation.test_hostile_peers import post_signed, refused
from tests.federation.test_mirrors import Api, a_case, eventually

KZ_PHONE, UA_PHONE, GREEN_PHONE = "+7 701 123 45 67", "+380 44 123 4567", "+7 701 765 43 21"


def search(api: Api, *phones: str, federated: bool = True) -> dict:
    items = [{"kind": "phone", "value": phone} for phone in phones]
    body = {"items": items, "federated": True} if federated else {"items": items}
    return api.ok("POST", "/hits", json=body)


@pytest.mark.fresh_instances
def test_a_federated_search_asks_every_peer_and_names_each(
    kz_ua: tuple[Instance, Instance], instances: Callable[[str], Instance]
) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    red = a_case(kz, reference="KZ-RED", handling_code="TLP:RED")
    kz.ok("POST", f"/cases/{red['id']}/identifiers", json={"kind": "phone", "value": KZ_PHONE})
    green = a_case(kz, reference="KZ-GREEN", handling_code="TLP:GREEN")
    kz.ok("POST", f"/cases/{green['id']}/identifiers", json={"kind": "phone", "value": GREEN_PHONE})
    own = ua.ok(
        "POST",
        "/cases",
        json={"reference": "UA-1", "title": "Kyiv call centre", "handling_code": "TLP:AMBER"},
    )
    ua.ok("POST", f"/cases/{own['id']}/identifiers", json={"kind": "phone", "value": UA_PHONE})

    # Not federated: only Ukraine's own case, and no word of peers.
    local = search(ua, UA_PHONE, KZ_PHONE, GREEN_PHONE, federated=False)
    assert "peers" not in local
    assert [item["hit"] for item in local["items"]] == [True, False, False]

    answer = search(ua, UA_PHONE, KZ_PHONE, GREEN_PHONE)
    assert answer["peers"] == [{"instance_id": "kz.caseapi", "status": "answered"}]
    mine, hidden, summary = answer["items"]
    assert mine["hit"] and [m["home_instance"] for m in mine["matches"]] == [None]
    # The RED case is Kazakhstan's to tell about: nothing of it in the answer...
    assert hidden == {"kind": "phone", "normalized": "+77011234567", "hit": False, "matches": []}
    # ...and a GREEN one names only the case and its lead, as Kazakhstan's rules say.
    [match] = summary["matches"]
    assert match["access"] == "summary" and match["identifier"] is None
    assert match["case"]["id"] == green["id"] and match["home_instance"] == "kz.caseapi"

    # Kazakhstan's lead learns that Ukraine's agency searched for its RED case's number.
    ua_le = kz.agency_id("UA-LE")

    def noticed() -> list[dict]:
        events = kz.ok("GET", "/events", params={"limit": 100})["items"]
        return [e for e in events if e["type"] == "hit.received" and e["case_id"] == red["id"]]

    [event] = eventually(noticed, timeout=30)
    assert event["from_agency_id"] == ua_le

    # A peer that is down is named, never left out.
    ghost = instances("ghost.caseapi")
    ghost.serve()
    peered(ua_i, ghost)
    ghost.stop()
    statuses = {p["instance_id"]: p["status"] for p in search(ua, KZ_PHONE)["peers"]}
    assert statuses == {"kz.caseapi": "answered", "ghost.caseapi": "unreachable"}


def test_a_peer_searching_for_an_agency_it_does_not_host_is_refused(kz_ua: tuple[Instance, Instance]) -> None:
    kz_i, ua_i = kz_ua
    kz = Api(kz_i, "KZ-MVD")
    document = {
        "agency_id": kz.agency_id("KZ-MVD"),
        "client_id": str(uuid.uuid4()),
        "scopes": ["read"],
        "items": [{"kind": "phone", "value": "+77011234567"}],
    }
    assert "does not host" in refused(post_signed(ua_i, kz_i.url + "/api/v1/federation/hits", document), 403)
