"""A hostile peer, with a valid key, sending beyond its authority: content of a
case it is not the home of, agencies that belong to others, rows of another
case, writes for an agency it does not host or into a case that agency is
not in. Each is refused whole (401/403) and nothing is stored."""

import base64
import copy
import hashlib
import time
import uuid
from typing import Any

import httpx
import orjson
import pytest

from app import access
from app.core.db import create_db_engine
from app.federation import mirror, signatures
from app.federation.delivery import DELIVERIES_PATH
from app.federation.forward import FORWARD_PATH
from tests.federation.conftest import Instance, peered
from tests.federation.test_mirrors import API, Api, a_case, audited, eventually, shared_case, status_of


def post_signed(sender: Instance, url: str, document: dict[str, Any]) -> httpx.Response:
    body = orjson.dumps(document)
    headers = signatures.sign(sender.identity, "POST", url, body) | {"Content-Type": "application/json"}
    return httpx.post(url, content=body, headers=headers, timeout=30)


def deliver(sender: Instance, receiver: Instance, cases: list[dict[str, Any]]) -> httpx.Response:
    seq = time.time_ns() // 1000  # each delivery after the last, as a home's are
    document = {
        "instance_id": sender.instance_id,
        "to": receiver.instance_id,
        "from_seq": seq,
        "to_seq": seq,
        "cases": cases,
    }
    return post_signed(sender, receiver.url + DELIVERIES_PATH, document)


def rows_held(instance: Instance, case_id: str) -> dict[str, list[dict[str, Any]]]:
    """The rows `instance` holds under a case, in the form a delivery carries them."""
    engine = create_db_engine(instance.env["CASEAPI_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            rows = {
                table.name: [
                    row._asdict()
                    for row in conn.execute(
                        mirror._rows_of(table), {"case_id": uuid.UUID(case_id), "peer": "-"}
                    )
                ]
                for table in mirror.MIRRORED
            }
    finally:
        engine.dispose()
    return orjson.loads(orjson.dumps(rows, option=orjson.OPT_NON_STR_KEYS))  # type: ignore[no-any-return]


def agency_record(api: Api, code: str, home: str) -> dict[str, Any]:
    agency = next(a for a in api.ok("GET", "/agencies")["items"] if a["code"] == code)
    return {name: agency[name] for name in mirror.AGENCY_FIELDS} | {
        "home_instance": agency["home_instance"] or home
    }


def refused(response: httpx.Response, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    return str(response.json()["detail"])


@pytest.mark.fresh_instances
def test_a_peer_pushing_what_it_is_not_the_home_of_is_refused(kz_ua: tuple[Instance, Instance]) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    case = shared_case(kz, ua)
    location = kz.ok("POST", f"/cases/{case['id']}/locations", json={"label": "Kyiv"})
    eventually(lambda: status_of(ua, f"/locations/{location['id']}") == 200)
    before = kz.ok("GET", f"/cases/{case['id']}")
    held = rows_held(ua_i, case["id"])
    agencies = [agency_record(ua, "UA-LE", "ua.caseapi"), agency_record(ua, "KZ-MVD", "kz.caseapi")]

    # Kazakhstan's own case, "delivered" back to it with another title.
    tampered = copy.deepcopy(held)
    tampered["case"][0]["title"] = "Nothing happened"
    detail = refused(deliver(ua_i, kz_i, [{"id": case["id"], "agencies": agencies, "rows": tampered}]), 403)
    assert "does not live on ua.caseapi" in detail
    assert kz.ok("GET", f"/cases/{case['id']}") == before

    # A new case led by Kazakhstan's agency, which Ukraine's instance does not host.
    forged = copy.deepcopy(held)
    new_id = str(uuid.uuid4())
    for table_rows in forged.values():
        for row in table_rows:
            row["case_id" if "case_id" in row else "id"] = new_id
    forged = {name: rows if name in ("case", "participant") else [] for name, rows in forged.items()}
    detail = refused(deliver(ua_i, kz_i, [{"id": new_id, "agencies": agencies, "rows": forged}]), 403)
    assert "lead agency" in detail
    assert status_of(kz, f"/cases/{new_id}") == 404

    # A case Ukraine does lead, whose location is filed under Kazakhstan's case.
    own = copy.deepcopy(forged)
    own["case"][0]["lead_agency_id"] = ua.agency_id("UA-LE")
    own["case"][0]["reference"] = own["case"][0]["reference_key"] = "UA-OWN-1"
    stray = {**held["location"][0], "id": str(uuid.uuid4()), "case_id": case["id"]}
    outside = copy.deepcopy(own) | {"location": [stray]}
    detail = refused(deliver(ua_i, kz_i, [{"id": new_id, "agencies": agencies, "rows": outside}]), 403)
    assert "outside case" in detail
    assert [loc["id"] for loc in kz.ok("GET", f"/cases/{case['id']}/locations")["items"]] == [location["id"]]

    # An agency announced as Ukraine's that is Kazakhstan's.
    usurped = [agencies[0], {**agencies[1], "home_instance": "ua.caseapi"}]
    detail = refused(deliver(ua_i, kz_i, [{"id": new_id, "agencies": usurped, "rows": own}]), 403)
    assert "lives on kz.caseapi" in detail

    # The same case, within Ukraine's authority, is taken: the refusals above were about authority.
    taken = deliver(ua_i, kz_i, [{"id": new_id, "agencies": agencies, "rows": own}])
    assert taken.status_code == 200, taken.text
    receipt = signatures.open_receipt(taken.json()["receipt"], kz_i.identity.public_key)
    assert receipt["instance_id"] == "kz.caseapi" and receipt["applied"] is True
    mirrored = kz.ok("GET", f"/cases/{new_id}")
    assert mirrored["home_instance"] == "ua.caseapi" and mirrored["reference"] == "UA-OWN-1"

    # Its mirror naming a file Kazakhstan holds for a case of its own: the file is asked of the
    # sender, which does not have it, and nothing is stored.
    secret = b"Kazakhstan's own file"
    private = a_case(kz, reference="KZ-SECRET", handling_code="TLP:RED")
    kz.ok(
        "POST",
        f"/cases/{private['id']}/attachments",
        params={"filename": "secret.txt"},
        content=secret,
        headers={"Content-Type": "text/plain"},
    )
    borrowed = {
        "id": str(uuid.uuid4()),
        "case_id": new_id,
        "request_id": None,
        "message_id": None,
        "uploaded_by_agency_id": ua.agency_id("UA-LE"),
        "filename": "secret.txt",
        "content_type": "text/plain",
        "size": len(secret),
        "sha256": hashlib.sha256(secret).hexdigest(),
        "version": 1,
        "created_at": own["case"][0]["created_at"],
    }
    rows = copy.deepcopy(own) | {"attachment": [borrowed]}
    refused(deliver(ua_i, kz_i, [{"id": new_id, "agencies": agencies, "rows": rows}]), 502)
    assert status_of(kz, f"/attachments/{borrowed['id']}") == 404


@pytest.mark.fresh_instances
def test_unsigned_and_replayed_deliveries_are_refused(kz_ua: tuple[Instance, Instance]) -> None:
    kz_i, ua_i = kz_ua
    url = kz_i.url + DELIVERIES_PATH
    document = {"instance_id": "ua.caseapi", "to": "kz.caseapi", "from_seq": 5, "to_seq": 5, "cases": []}
    refused(httpx.post(url, json=document), 401)
    body = orjson.dumps(document)
    headers = signatures.sign(ua_i.identity, "POST", url, body) | {"Content-Type": "application/json"}
    assert httpx.post(url, content=body, headers=headers).status_code == 200
    assert "replayed" in refused(httpx.post(url, content=body, headers=headers), 401)
    # A delivery meant for another instance.
    refused(post_signed(ua_i, url, document | {"to": "other.caseapi"}), 403)


def forward(
    sender: Instance, home: Instance, agency_id: str, case_id: str, path: str, body: Any
) -> httpx.Response:
    envelope = {
        "case_id": case_id,
        "agency_id": agency_id,
        "client_id": str(uuid.uuid4()),
        "scopes": ["read", "write"],
        "method": "POST",
        "path": path,
        "query": "",
        "headers": {"content-type": "application/json"},
        "body": base64.b64encode(orjson.dumps(body)).decode(),
    }
    return post_signed(sender, home.url + FORWARD_PATH, envelope)


def test_a_peer_forwarding_beyond_its_authority_is_refused(kz_ua: tuple[Instance, Instance]) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    shared = shared_case(kz, ua)
    # A case Ukraine's agency does not take part in.
    private = a_case(kz, reference="KZ-PRIVATE", handling_code="TLP:RED")
    path = f"{API}/cases/{private['id']}/locations"

    # For an agency Ukraine's instance does not host (Kazakhstan's own).
    detail = refused(forward(ua_i, kz_i, kz.agency_id("KZ-MVD"), private["id"], path, {"label": "x"}), 403)
    assert "does not host" in detail
    # For its own agency, into a case that agency is not in.
    detail = refused(forward(ua_i, kz_i, ua.agency_id("UA-LE"), private["id"], path, {"label": "x"}), 403)
    assert "does not take part" in detail
    # Naming the shared case, but writing into the private one: the home's own rules hide it.
    hidden = forward(ua_i, kz_i, ua.agency_id("UA-LE"), shared["id"], path, {"label": "x"})
    assert hidden.status_code == 404, hidden.text
    # Not a write a mirror forwards.
    federation = f"{API}/federation/deliveries"
    refused(forward(ua_i, kz_i, ua.agency_id("UA-LE"), shared["id"], federation, {}), 403)
    assert kz.ok("GET", f"/cases/{private['id']}/locations")["items"] == []
    # Within its authority, the same write is made.
    made = forward(
        ua_i,
        kz_i,
        ua.agency_id("UA-LE"),
        shared["id"],
        f"{API}/cases/{shared['id']}/locations",
        {"label": "Kyiv"},
    )
    assert made.status_code == 201, made.text


def test_a_mirror_never_holds_a_red_case_its_agencies_are_not_in(kz_ua: tuple[Instance, Instance]) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    red = a_case(kz, reference="KZ-RED", handling_code="TLP:RED")
    shared_case(kz, ua)  # delivered after the red one: by then the red one was passed over
    assert status_of(ua, f"/cases/{red['id']}") == 404
    received = audited(ua_i, "federation.received")
    assert received and all(red["id"] not in str(entry["detail"]) for entry in received)


@pytest.mark.fresh_instances
def test_a_mirror_follows_a_handling_code_lowered_and_raised_again(kz_ua: tuple[Instance, Instance]) -> None:
    kz_i, ua_i = kz_ua
    kz = Api(kz_i, "KZ-MVD")
    # Ukraine's instance hosts a unit under Kazakhstan's ministry: it sees its cases only under AMBER.
    ua_i.command(
        "agency",
        "create",
        "--code",
        "UA-KZ-UNIT",
        "--name",
        "Liaison unit",
        "--kind",
        "police",
        "--parent",
        "KZ-MVD",
    )
    # Kazakhstan's operator, adding Ukraine's instance again, is told what it places where.
    assert (
        "UA-KZ-UNIT is held under KZ-MVD of this instance: under TLP:AMBER it sees that agency's cases, "
        "and ua.caseapi mirrors them"
    ) in peered(kz_i, ua_i)
    unit = Api(ua_i, "UA-KZ-UNIT")
    case = a_case(kz, reference="KZ-CODES", handling_code="TLP:RED")
    path = f"/cases/{case['id']}"

    def code(handling_code: str) -> None:
        version = kz.ok("GET", path)["version"]
        kz.ok("PATCH", path, json={"handling_code": handling_code}, headers={"If-Match": f'"{version}"'})

    code("TLP:AMBER")
    eventually(lambda: status_of(unit, path) == 200)
    code("TLP:RED")
    eventually(lambda: status_of(unit, path) == 404)
    assert eventually(lambda: kz.ok("GET", "/federation/peers")["items"][0]["pending"] == 0)


@pytest.mark.fresh_instances  # Ukraine's instance signs a delivery of its own making
def test_a_delivery_cannot_place_a_peers_agency_under_this_instances(
    kz_ua: tuple[Instance, Instance],
) -> None:
    """Under TLP:AMBER the sub-agencies of a participant see its cases in full:
    an agency a delivery announces under KZ-MVD would bring Kazakhstan's
    AMBER cases to its instance. Only `caseapi peer add`, run by this
    instance's operator, places a peer's agency under another instance's."""
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    # A case of Ukraine's with Kazakhstan's ministry in it: Kazakhstan's instance mirrors it.
    case = a_case(ua, reference="UA-2025-SEARCHES", handling_code="TLP:AMBER")
    ua.ok(
        "POST",
        f"/cases/{case['id']}/participants",
        json={"agency_id": ua.agency_id("KZ-MVD"), "role": "partner"},
    )
    eventually(lambda: status_of(kz, f"/cases/{case['id']}") == 200)
    kz_case = a_case(kz, reference="KZ-AMBER-ONLY", handling_code="TLP:AMBER")

    planted = agency_record(ua, "UA-LE", "ua.caseapi") | {
        "id": str(uuid.uuid4()),
        "code": "UA-KZ-PLANT",
        "name": "A unit under Kazakhstan's ministry",
        "parent_id": ua.agency_id("KZ-MVD"),
    }
    agencies = [agency_record(ua, "UA-LE", "ua.caseapi"), agency_record(ua, "KZ-MVD", "kz.caseapi"), planted]
    answer = deliver(
        ua_i, kz_i, [{"id": case["id"], "agencies": agencies, "rows": rows_held(ua_i, case["id"])}]
    )
    assert answer.status_code == 200, answer.text
    held = next(a for a in kz.ok("GET", "/agencies")["items"] if a["code"] == "UA-KZ-PLANT")
    assert (held["home_instance"], held["parent_id"]) == ("ua.caseapi", None)
    # So Kazakhstan's AMBER case stays home: Ukraine's instance does not qualify for it.
    engine = create_db_engine(kz_i.env["CASEAPI_DATABASE_URL"])
    try:
        with engine.connect() as conn:
            qualifies = conn.execute(
                access.PEER_HOLDS_CASE, {"peer": "ua.caseapi", "case_id": uuid.UUID(kz_case["id"])}
            )
            assert qualifies.first() is None
    finally:
        engine.dispose()
