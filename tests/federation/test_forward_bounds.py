"""A forwarded write is a write in a case, by a peer's agency that takes part in
it, never with `admin`: a peer cannot make the home's own records (a case, an
agency, a webhook, a bundle, a request outside any case) through /forward."""

import base64
import uuid
from typing import Any

import httpx
import orjson

from tests.federation.conftest import Instance
from tests.federation.test_hostile_peers import post_signed, refused
from tests.federation.test_mirrors import API, Api, a_case, shared_case

FORWARD = "/api/v1/federation/forward"


def forward(
    sender: Instance, home: Instance, agency_id: str, case_id: str, path: str, body: Any, scopes: list[str]
) -> httpx.Response:
    envelope = {
        "case_id": case_id,
        "agency_id": agency_id,
        "client_id": str(uuid.uuid4()),
        "scopes": scopes,
        "method": "POST",
        "path": path,
        "query": "",
        "headers": {"content-type": "application/json"},
        "body": base64.b64encode(orjson.dumps(body)).decode(),
    }
    return post_signed(sender, home.url + FORWARD, envelope)


def everything(api: Api, path: str) -> list[dict[str, Any]]:
    """Every item of a list, following its cursor."""
    items: list[dict[str, Any]] = []
    params = {"limit": 200}
    while True:
        page = api.ok("GET", path, params=params)
        items += page["items"]
        if not page["next_cursor"]:
            return items
        params = {"limit": 200, "cursor": page["next_cursor"]}


def test_a_peer_cannot_make_the_homes_own_records_through_a_forwarded_write(
    kz_ua: tuple[Instance, Instance],
) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    case = shared_case(kz, ua)
    ua_le, kz_mvd = ua.agency_id("UA-LE"), ua.agency_id("KZ-MVD")
    all_scopes = ["read", "write", "personal_data", "admin"]

    def sent(path: str, body: Any) -> httpx.Response:
        return forward(ua_i, kz_i, ua_le, case["id"], f"{API}{path}", body, all_scopes)

    # The pair is shared with other tests: what the home held before, page after page.
    agencies, cases, requests = (everything(kz, path) for path in ("/agencies", "/cases", "/requests"))
    assert case["id"] in [c["id"] for c in cases]
    # `admin` never travels: an agency under Ukraine's, made at Kazakhstan's home, is refused.
    assert "not a write in a case" in refused(
        sent("/agencies", {"code": "UA-LE-UNIT", "name": "Unit", "kind": "police"}), 403
    )
    refused(sent("/subscriptions", {"url": "https://hooks.example.org/caseapi"}), 403)
    # Nor a case of its own at the other's home, nor a request outside any case.
    refused(sent("/cases", {"reference": "UA-OWN", "title": "Made at the wrong home"}), 403)
    outside = {"to_agency_id": kz_mvd, "subject": "Outside", "body": "Outside any case."}
    refused(sent("/requests", outside), 403)
    assert everything(kz, "/agencies") == agencies
    assert everything(kz, "/cases") == cases
    assert everything(kz, "/requests") == requests

    # Nor a request in another case than the one its agency was found to take part in.
    other = a_case(kz, reference="KZ-NOT-UA")
    assert f"does not take part in case {other['id']}" in refused(
        sent("/requests", outside | {"case_id": other["id"]}), 403
    )
    assert everything(kz, "/requests") == requests

    # Within the case, the same agency's writes are made, without `admin`.
    made = sent("/requests", outside | {"case_id": case["id"]})
    assert made.status_code == 201, made.text
    located = sent(f"/cases/{case['id']}/locations", {"label": "Kyiv"})
    assert located.status_code == 201, located.text


def test_a_forwarded_write_or_search_with_scopes_that_are_not_names_is_malformed(
    kz_ua: tuple[Instance, Instance],
) -> None:
    kz_i, ua_i = kz_ua
    kz, ua = Api(kz_i, "KZ-MVD"), Api(ua_i, "UA-LE")
    case = shared_case(kz, ua)
    ua_le = ua.agency_id("UA-LE")
    before = everything(kz, f"/cases/{case['id']}/locations")
    for scopes in ([["write"]], [{"write": True}]):
        sent = forward(
            ua_i, kz_i, ua_le, case["id"], f"{API}/cases/{case['id']}/locations", {"label": "x"}, scopes
        )
        refused(sent, 422)
        search = {"agency_id": ua_le, "client_id": str(uuid.uuid4()), "scopes": scopes, "items": []}
        refused(post_signed(ua_i, kz_i.url + "/api/v1/federation/hits", search), 422)
    assert everything(kz, f"/cases/{case['id']}/locations") == before
